"""Property-based: random fault schedules against small jobs, safety checked after every
step by the simulator's checker, liveness against the documented bound. A failure prints
the seed and the replay command; hypothesis shrinks the schedule."""

from __future__ import annotations

import dataclasses
import math

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from chaos.sim import Fault, SimConfig, SimResult, format_faults, parse_faults, simulate
from chaos.sim.faults import DRAWN_KINDS, KINDS, NODE_KINDS, WINDOW_KINDS

# Protocol issues this simulator found and the protocol still has (docs/simulator.md,
# "Findings"): tolerated here by their narrow codes so the property keeps guarding
# everything else; each has a probe below (xfail until the protocol is fixed: then the
# probe passes, and its code should leave this set).
KNOWN: frozenset[str] = frozenset()


@st.composite
def scenarios(draw: st.DrawFn) -> SimConfig:
    nodes = draw(st.integers(2, 7))
    max_nodes = draw(st.integers(1, nodes))
    min_nodes = draw(st.integers(1, max_nodes))
    faults = []
    # With a job secret the schedule may hold forgers (an intruder without the secret).
    secret = draw(st.booleans())
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(KINDS if secret else DRAWN_KINDS))
        at = draw(st.integers(15, 200)) / 10
        dur = draw(st.integers(5, 100)) / 10 if kind in WINDOW_KINDS else 0.0
        if kind in NODE_KINDS:
            picked = draw(st.sets(st.integers(0, nodes - 1), min_size=1, max_size=nodes))
            faults.append(Fault(kind=kind, at_s=at, duration_s=dur, nodes=tuple(sorted(picked))))
        else:
            value = {"spike": 20.0, "drop": 0.05, "delay": 0.5, "restart": 0.0, "forge": 0.0}[kind]
            faults.append(Fault(kind=kind, at_s=at, duration_s=dur, value=value))
    return SimConfig(
        nodes=nodes,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        seed=draw(st.integers(0, 2**32 - 1)),
        faults=tuple(faults),
        read_timeout_s=5.0,  # keeps hanging ops short: the horizon is fault end + bound
        last_call_timeout_s=draw(st.sampled_from((2.0, 30.0))),
        allow=KNOWN,
        secret=secret,
        store_wakes=draw(st.booleans()),  # etcd's watches, or c10d's polling alone
    )


def replay(cfg: SimConfig) -> str:
    return (
        f"chaos sim --nodes {cfg.nodes} --min {cfg.min_nodes} --max {cfg.max_nodes} "
        f"--seed {cfg.seed}{' --secret' if cfg.secret else ''}"
        f"{' --store-wakes' if cfg.store_wakes else ''} "
        f"--faults '{format_faults(cfg.faults)}' --read-timeout "
        f"{cfg.read_timeout_s} --last-call {cfg.last_call_timeout_s}"
        + (f" --allow {','.join(sorted(KNOWN))}" if KNOWN else "")
    )


def check(result: SimResult, cfg: SimConfig) -> None:
    how = f"seed {cfg.seed}; replay: {replay(cfg)}"
    note(how)
    assert result.safety == "ok", f"{result.safety}; {how}"
    live = result.liveness
    assert live.held or not live.required, f"liveness failed: {live}; {how}"


@settings(
    # at least 150; more under HYPOTHESIS_PROFILE=explore (tests/conftest.py)
    max_examples=max(150, settings.default.max_examples),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(scenarios())
def test_safe_and_live_under_random_faults(cfg: SimConfig) -> None:
    check(simulate(cfg), cfg)


def _broken(configs: list[SimConfig]) -> list[str]:
    """The replay commands of the configs whose runs are unsafe or not live."""
    bad = []
    for cfg in configs:
        result = simulate(cfg)
        if not result.ok:
            bad.append(f"{replay(cfg)}: {result.safety}, {result.liveness}")
    return bad


def _grid(nodes: int, faults: list[str], **kw: object) -> list[SimConfig]:
    base: dict[str, object] = {"nodes": nodes, "min_nodes": 2, "max_nodes": nodes, "seed": 1}
    base.update(kw)
    return [SimConfig(faults=parse_faults(f), **base) for f in faults]  # type: ignore[arg-type]


def test_fixed_a_node_declared_dead_while_the_round_forms_is_left_out() -> None:
    # Nodes 0 and 1 die together: 1's watcher is 0, so the new round waits for 1 (last
    # call). Node 3 is cut off meanwhile and declared dead; that very declaration lowers
    # the expected count and the round closes at once. Found here first, fixed in the
    # protocol: the closer reads its candidates' dead/ keys and leaves node 3 out; node 3
    # rejoins under a new id (a scale-up round).
    configs = _grid(5, [f"crash:0/1@5,partition:3@{t}+6" for t in (10, 12, 15)])
    assert _broken(configs) == []
    result = simulate(configs[1])
    assert [r.size for r in result.rounds] == [5, 2, 3]
    assert result.declared_dead == 1


def test_fixed_a_joiner_dying_between_slot_and_descriptor_never_shrinks_below_min() -> None:
    # The closer waits assign_timeout for the missing descriptor; with min 2 the one node
    # left cannot form the round, so it starts a new one instead.
    crashes = [f"crash:0@{0.01 + i * 0.0002:.4f}" for i in range(150)]
    assert _broken(_grid(3, crashes, max_nodes=2, start_spread_s=0.1)) == []


def test_a_slot_whose_joiner_never_described_itself_is_left_out_by_number() -> None:
    # min 1: node 0 dies between taking slot 0 and writing its descriptor. The round forms
    # with the other two; its close update says so (members 2, missing [0]), so newcomers
    # see room. The checker used to call every such round short (found by CI's random run).
    # (The window moves whenever a join's store operations do: the trace shows the close.)
    crashes = [f"crash:0@{0.0160 + i * 0.0002:.4f}" for i in range(10)]
    configs = _grid(3, crashes, min_nodes=1, start_spread_s=0.1)
    assert _broken(configs) == []
    result = simulate(dataclasses.replace(configs[3], trace=True))  # crash at 0.0166 s
    assert [(r.round, r.size) for r in result.rounds] == [(0, 2)]
    assert any('"missing": [0]' in repr(op) for *_, op, _reply in result.trace or [])


def _six_nodes(seed: int, faults: str) -> SimConfig:
    """The shape of the random runs that found the two bugs below (CI's draw and a soak)."""
    return SimConfig(
        nodes=6,
        min_nodes=1,
        max_nodes=5,
        seed=seed,
        faults=parse_faults(faults),
        read_timeout_s=5.0,
        last_call_timeout_s=2.0,
    )


def test_fixed_a_closer_does_not_publish_a_round_its_joiners_gave_up() -> None:
    # Found by CI's random run: a joiner's descriptor write was lost, so the closer of round
    # 1 waited assign_timeout for it; meanwhile that joiner rejoined under a new id and the
    # job moved to rounds 2 and 3. The closer then published round 1 short (3 of 4) at
    # t=19 s. It now checks the round key while it waits and before it publishes.
    cfg = _six_nodes(0, "drop:0.05@2.3+5.3,crash:0@1.5")
    assert _broken([cfg]) == []
    drops = [f"drop:0.05@2.3+5.3,crash:0@{1.0 + i * 0.1:.1f}" for i in range(40)]
    more = _grid(6, drops, min_nodes=1, max_nodes=5, read_timeout_s=5.0, last_call_timeout_s=2.0)
    assert _broken(more) == []


def test_fixed_a_crashed_agent_stays_dead_when_its_request_waited_out_a_store_restart() -> None:
    # Simulator bug found by a random run: a request held while the store restarted was
    # re-queued under the agent's current token, so a node crashed meanwhile got the reply
    # and ran on without its heartbeat thread; it was declared dead every 4 s forever.
    cfg = _six_nodes(2820957490, "crash:2-3@11.3,restart@14.7+5.5,restart@5.2+9.8")
    result = simulate(cfg)
    assert result.ok, (result.safety, result.liveness)
    assert result.declared_dead == 0
    assert [r.size for r in result.rounds] == [5, 4]


def test_fixed_spare_waits_forever_when_the_only_joiner_died_before_closing() -> None:
    # max 1: the joiner with slot 0 dies before its close; the other one holds slot 1
    # (>= max) and waits as a spare; wait_for_change skips rounds that are still forming.
    crashes = [f"crash:{n}@{0.01 + i * 0.0002:.4f}" for n in (0, 1) for i in range(150)]
    configs = _grid(2, crashes, min_nodes=1, max_nodes=1, start_spread_s=0.1)
    assert _broken(configs) == []


def test_fixed_spares_take_over_when_every_member_died() -> None:
    # Found here first, fixed in the protocol: the round's `alive` counter.
    assert _broken(_grid(2, ["crash:0@5", "crash:1@5"], min_nodes=1, max_nodes=1)) == []


def test_fixed_a_slot_taken_just_after_close_asks_for_a_scale_up() -> None:
    # Found here first, fixed in the protocol: such a joiner bumps instead of waiting.
    late = [f"crash:0@5,late:3@{8.8 + i * 0.001:.3f}" for i in range(300)]
    assert _broken(_grid(4, late, last_call_timeout_s=2.0)) == []


def test_the_fixed_windows_stay_fixed_when_the_store_wakes_joiners() -> None:
    # etcd's path: joiners sleep on a watch of their assignment (Sleep.until), so every
    # join above happens at other times; the windows those tests aim at must hold here too.
    grids = [
        _grid(5, [f"crash:0/1@5,partition:3@{t}+6" for t in (10, 12, 15)], store_wakes=True),
        _grid(
            3,
            [f"crash:0@{0.01 + i * 0.0004:.4f}" for i in range(75)],
            max_nodes=2,
            start_spread_s=0.1,
            store_wakes=True,
        ),
        _grid(
            6,
            [f"drop:0.05@2.3+5.3,crash:0@{1.0 + i * 0.2:.1f}" for i in range(20)],
            min_nodes=1,
            max_nodes=5,
            read_timeout_s=5.0,
            last_call_timeout_s=2.0,
            store_wakes=True,
        ),
        _grid(
            4,
            [f"crash:0@5,late:3@{8.8 + i * 0.003:.3f}" for i in range(100)],
            last_call_timeout_s=2.0,
            store_wakes=True,
        ),
    ]
    assert [bad for configs in grids for bad in _broken(configs)] == []


def test_a_store_that_wakes_joiners_reforms_sooner_with_fewer_reads() -> None:
    # 200 nodes lose one: woken by their assignments, the joiners neither poll for the
    # close nor learn of it up to a poll interval late.
    polled, woken = (
        simulate(_grid(200, ["crash:50@5"], min_nodes=100, store_wakes=w)[0]) for w in (False, True)
    )
    assert polled.ok and woken.ok
    assert [r.size for r in woken.rounds] == [r.size for r in polled.rounds] == [200, 199]
    took = [(r.rounds[1].completed_s or math.inf) - r.rounds[1].started_s for r in (polled, woken)]
    assert took[1] < took[0] / 2
    assert woken.rounds[1].ops_per_node < polled.rounds[1].ops_per_node * 0.75
