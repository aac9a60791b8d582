"""The seeded schedule: pure, deterministic per seed, ordered, and every draw inside its bounds.

Scenarios are built from the dataclasses directly: the schedule must not depend on the loader."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chaos.scenario.schema import Fault, Scenario, Topology, Trigger
from chaos.schedule import PlannedFault, Schedule, make_schedule

TOPO = Topology(nodes=3, spares=2, nproc_per_node=4, min_nodes=1, max_nodes=5)


def at(s: float) -> Trigger:
    return Trigger(kind="at_s", at_s=s)


def window(low: float, high: float) -> Trigger:
    return Trigger(kind="random", window_s=(low, high))


def scenario(*faults: Fault, seed: int = 0) -> Scenario:
    return Scenario(name="s", seed=seed, topology=TOPO, faults=faults)


def test_order_time_based_by_fire_time_then_event_faults_in_file_order() -> None:
    s = scenario(
        Fault(kind="crash_node", node=0, trigger=Trigger(kind="on_event", event="agent.started")),
        Fault(kind="kill_agent", node=1, trigger=at(9.0)),
        Fault(kind="pause_node", node=2, duration_s=2.5, trigger=at(3.0)),
        Fault(kind="leave_node", node=1, trigger=Trigger(kind="after_step", step=4, rank=2)),
        Fault(kind="crash_node", node=2, trigger=at(3.0)),
    )
    plan = make_schedule(s)
    assert [p.index for p in plan.faults] == [2, 4, 1, 0, 3]
    assert [p.index for p in plan.timed()] == [2, 4, 1]
    assert [p.index for p in plan.triggered()] == [0, 3]
    assert [p.fire_at_s for p in plan.faults] == [3.0, 3.0, 9.0, None, None]
    assert plan.by_index(2).heal_at_s == 5.5 and plan.by_index(4).heal_at_s is None
    assert all(p.fault is s.faults[p.index] and not p.drawn for p in plan.faults)
    with pytest.raises(KeyError):
        plan.by_index(7)


def test_random_window_and_targets_are_drawn_within_bounds() -> None:
    s = scenario(
        Fault(kind="kill_worker", rank=None, random_fields=("rank",), trigger=window(1, 2)),
        Fault(kind="join_node", random_fields=("node",), trigger=at(1)),
        Fault(
            kind="kill_worker", random_fields=("node", "local_rank"), trigger=window(4, 4),
        ),
        Fault(kind="pause_node", node=0, duration_s=1.5, trigger=window(5, 9)),
    )  # fmt: skip
    for seed in range(50):
        plan = make_schedule(s, seed)
        rank_kill, join, node_kill, pause = (plan.by_index(i) for i in range(4))
        assert 1 <= (rank_kill.fire_at_s or 0) <= 2
        assert rank_kill.fault.rank is not None and 0 <= rank_kill.fault.rank < 3 * 4
        assert join.fault.node in (3, 4)  # spares follow the initial nodes
        assert node_kill.fire_at_s == 4.0 and node_kill.fault.node in (0, 1, 2)
        assert node_kill.fault.local_rank in range(4)
        assert pause.heal_at_s == round((pause.fire_at_s or 0) + 1.5, 3)
        assert all(p.fault.random_fields == () for p in plan.faults)
        assert rank_kill.drawn == {"at_s": rank_kill.fire_at_s, "rank": rank_kill.fault.rank}
        assert set(node_kill.drawn) == {"at_s", "node", "local_rank"}
    assert s.faults[0].rank is None and s.faults[0].random_fields == ("rank",)  # untouched


def test_seed_defaults_to_the_scenarios_and_can_be_overridden() -> None:
    s = scenario(Fault(kind="crash_node", node=0, trigger=window(0, 100)), seed=42)
    assert make_schedule(s) == make_schedule(s, 42)
    assert make_schedule(s).seed == 42 and make_schedule(s, 3).seed == 3
    assert make_schedule(replace(s, seed=3)) == make_schedule(s, 3)
    assert make_schedule(s, 0).faults != make_schedule(s, 42).faults
    with pytest.raises(ValueError, match="seed must be >= 0"):
        make_schedule(s, -42)  # random.Random(-42) would silently replay seed 42


def test_a_seeds_schedule_never_changes() -> None:
    # Old reports print `chaos run FILE --seed N`; that must keep replaying the same faults.
    s = Scenario(
        name="node-crash-random",
        topology=Topology(nodes=2, min_nodes=1, max_nodes=2),
        faults=(Fault(kind="crash_node", random_fields=("node",), trigger=window(3, 8)),),
    )
    planned = make_schedule(s, 11).faults[0]
    assert (planned.fire_at_s, planned.fault.node) == (5.262, 1)


def test_describe_is_human_text() -> None:
    s = scenario(
        Fault(kind="kill_worker", rank=5, trigger=at(2)),
        Fault(kind="kill_worker", node=1, local_rank=0, exit_code=3, trigger=at(1)),
        Fault(
            kind="partition", groups=((0,), (1, 2)), duration_s=4,
            trigger=Trigger(kind="on_event", event="rendezvous.round.complete", occurrence=2),
        ),
        Fault(kind="pause_node", random_fields=("node",), duration_s=1, trigger=window(3, 4)),
        Fault(kind="kill_etcd_member", member="leader", trigger=Trigger(kind="after_step", step=7)),
    )  # fmt: skip
    text = make_schedule(s, 9).describe()
    lines = text.splitlines()
    assert lines[0] == "schedule of s (seed 9): 5 faults"
    assert lines[1] == "  #1 at 1.000s: kill_worker node 1 local_rank 0 (exit code 3)"
    assert lines[2] == "  #0 at 2.000s: kill_worker rank 5 (SIGKILL)"
    assert lines[3].startswith("  #3 at 3.") and "(random in 3..4s): pause_node node " in lines[3]
    assert "for 1s [drawn: at_s=3." in lines[3]
    assert lines[4] == "  #2 on the 2nd rendezvous.round.complete: partition 0 | 1,2 for 4s"
    assert lines[5] == "  #4 after rank 0 reports step 7: kill_etcd_member member leader"
    assert make_schedule(Scenario(name="e")).describe() == "schedule of e (seed 0): 0 faults"


# --- properties --------------------------------------------------------------------------------

windows = st.tuples(st.floats(0, 500, allow_nan=False), st.floats(0, 500, allow_nan=False)).map(
    sorted
)
triggers = st.one_of(
    windows.map(lambda w: window(*w)),
    st.floats(0, 500, allow_nan=False).map(at),
    st.integers(1, 40).map(lambda n: Trigger(kind="after_step", step=n)),
)
faults = st.one_of(
    triggers.map(lambda t: Fault(kind="kill_worker", random_fields=("rank",), trigger=t)),
    triggers.map(lambda t: Fault(kind="crash_node", random_fields=("node",), trigger=t)),
    triggers.map(lambda t: Fault(kind="kill_agent", node=1, trigger=t)),
)
scenarios = st.lists(faults, max_size=8).map(lambda fs: scenario(*fs))
seeds = st.integers(0, 2**70)


@settings(max_examples=200, deadline=None)
@given(scenarios, seeds)
def test_same_seed_same_schedule(s: Scenario, seed: int) -> None:
    first = make_schedule(s, seed)
    assert make_schedule(s, seed) == first
    assert make_schedule(replace(s, seed=seed)) == first
    assert first.describe() == make_schedule(s, seed).describe()
    _check_invariants(s, first)


def _check_invariants(s: Scenario, plan: Schedule) -> None:
    assert sorted(p.index for p in plan.faults) == list(range(len(s.faults)))
    times = [p.fire_at_s for p in plan.timed()]
    assert times == sorted(times)  # type: ignore[type-var]
    assert plan.faults == (*plan.timed(), *plan.triggered())
    for p in plan.faults:
        _check_planned(s, p)


def _check_planned(s: Scenario, p: PlannedFault) -> None:
    fault = s.faults[p.index]
    assert p.trigger == fault.trigger
    if fault.trigger.window_s is not None:
        low, high = fault.trigger.window_s
        assert p.fire_at_s is not None and round(low, 3) <= p.fire_at_s <= round(high, 3)
    for name in fault.random_fields:
        assert getattr(p.fault, name) is not None and getattr(p.fault, name) == p.drawn[name]


@settings(max_examples=100, deadline=None)
@given(seeds, seeds, st.lists(windows.filter(lambda w: w[1] - w[0] > 1), min_size=3, max_size=6))
def test_different_seeds_differ_for_random_windows(
    a: int, b: int, spans: list[list[float]]
) -> None:
    assume(a != b)
    s = scenario(*(Fault(kind="crash_node", node=0, trigger=window(*w)) for w in spans))
    # Millisecond draws in three or more windows over a second wide: a collision of all of
    # them has a chance below 1e-9.
    assert make_schedule(s, a).faults != make_schedule(s, b).faults
