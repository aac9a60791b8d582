"""The simulator on small scenarios: one per fault kind, determinism, the checker, the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from chaos.cli import main as chaos_main
from chaos.sim import SafetyViolation, SimConfig, parse_faults, reform_bound_s, simulate
from chaos.sim.engine import Simulation
from chaos.sim.sweep import scaled, scaling_svg, sweep
from launcher.rendezvous.state import Assignment, NodeInfo

KNOWN = frozenset({"short_round", "orphaned_round"})


def cfg(nodes: int = 4, faults: str = "", **kw: object) -> SimConfig:
    base: dict[str, object] = {"nodes": nodes, "min_nodes": 2, "max_nodes": nodes, "seed": 1}
    base.update(kw)
    return SimConfig(faults=parse_faults(faults), **base)  # type: ignore[arg-type]


def test_one_round_forms_in_address_order_and_the_run_settles() -> None:
    result = simulate(cfg(6))
    assert result.ok and result.liveness.held
    (first,) = result.rounds
    assert first.reason == "initial" and first.size == 6
    assert list(first.addrs) == sorted(first.addrs)
    assert first.base_ranks == tuple(range(6))
    assert first.completed_s is not None and first.completed_s < 1.5  # max joined: no last call
    assert result.virtual_s < first.completed_s + 6  # stopped once settled


def test_same_seed_same_run_event_for_event() -> None:
    config = cfg(
        8,
        "crash:~1@4,pause:~1@5+4,drop:0.02@6+1,leave:~1@9",
        trace=True,
        read_timeout_s=3.0,
        allow=KNOWN,
    )
    one, two = simulate(config), simulate(config)
    assert one.trace and one.trace == two.trace
    assert one.rounds == two.rounds and one.faults == two.faults
    assert simulate(replace(config, seed=2)).trace != one.trace


def test_crash_is_found_and_the_round_reforms_within_the_bound() -> None:
    result = simulate(cfg(5, "crash:2@5"))
    assert result.ok
    lost = result.rounds[-1]
    assert lost.reason == "node_lost" and lost.size == 4
    assert "10.0.0.2" not in lost.addrs and list(lost.addrs) == sorted(lost.addrs)
    assert lost.completed_s is not None
    assert lost.completed_s - 5.0 <= reform_bound_s(cfg(5))


def test_leave_reforms_at_once_and_failure_is_charged() -> None:
    left = simulate(cfg(4, "leave:0@3"))
    assert left.rounds[-1].reason == "node_left" and left.rounds[-1].size == 3
    assert left.rounds[-1].completed_s is not None and left.rounds[-1].completed_s < 3.5
    assert left.exits == {"left": 1}
    failed = simulate(cfg(4, "fail:1@3"))
    assert [r.reason for r in failed.rounds] == ["initial", "worker_failure"]
    assert failed.rounds[-1].size == 4 and failed.ok


def test_short_pause_and_store_outage_change_nothing() -> None:
    for faults in ("pause:1@3+1.5", "restart@3+2", "spike:50@3+1", "delay:0.3@3+2"):
        result = simulate(cfg(4, faults))
        assert result.ok and len(result.rounds) == 1, (faults, result.rounds)


def test_a_long_pause_gets_the_node_declared_dead_and_it_comes_back_new() -> None:
    result = simulate(cfg(4, "pause:3@3+6", allow=KNOWN))
    assert result.ok and result.declared_dead == 1
    final = result.rounds[-1]
    assert final.size == 4 and final.completed_s is not None
    assert any(m.startswith("n3-") and m != "n3-1" for m in final.members)


def test_a_partitioned_agent_rides_it_out_and_comes_back_new() -> None:
    # Cut off for 20 s, within the default 30 s store_outage_timeout: its ops fail after
    # the read timeout and are retried; its watcher declared it dead meanwhile, so it
    # rejoins under a new id and a scale-up round takes it back.
    cut = simulate(cfg(5, "partition:4@3+20", read_timeout_s=5.0, allow=KNOWN))
    assert cut.ok and cut.exits == {} and cut.declared_dead == 1
    final = cut.rounds[-1]
    assert final.size == 5 and final.reason == "scale_up" and cut.liveness.held
    assert any(m.startswith("n4-") and m != "n4-1" for m in final.members)
    lost = simulate(cfg(5, "drop:0.3@3+0.5", read_timeout_s=2.0, allow=KNOWN))
    assert lost.ok and lost.exits == {}


def test_an_outage_past_the_window_kills_only_those_agents() -> None:
    cut = simulate(
        cfg(5, "partition:4@3+20", read_timeout_s=5.0, store_outage_timeout_s=5.0, allow=KNOWN)
    )
    assert cut.ok and cut.exits == {"store_error": 1}
    assert cut.rounds[-1].size == 4 and cut.liveness.held
    at_once = simulate(
        cfg(5, "drop:0.3@3+0.5", read_timeout_s=2.0, store_outage_timeout_s=0.0, allow=KNOWN)
    )
    assert at_once.ok and set(at_once.exits) <= {"store_error"}


def test_late_joiner_scales_the_job_up() -> None:
    result = simulate(cfg(4, "late:3@5", last_call_timeout_s=2.0))
    assert [r.reason for r in result.rounds] == ["initial", "scale_up"]
    assert [r.size for r in result.rounds] == [3, 4] and result.ok


def test_a_wiped_store_is_caught_moving_rounds_backwards() -> None:
    result = simulate(cfg(3, "restart:wipe@3+1"))
    assert result.safety.startswith("[round_regressed]") and not result.ok


def _assignment(rnd: int, rank: int, **kw: object) -> Assignment:
    base: dict[str, object] = dict(
        round=rnd,
        group_rank=rank,
        group_world_size=2,
        base_rank=rank,
        world_size=2,
        master_addr="10.0.0.0",
        master_port=20000,
        restart_count=0,
        reason="initial",
        charged=False,
    )
    base.update(kw)
    return Assignment(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("second", "code"),
    [
        (dict(group_rank=0, base_rank=0), "duplicate_rank"),
        (dict(master_addr="10.9.9.9"), "disagreement"),
        (dict(restart_count=1), "disagreement"),
    ],
)
def test_checker_catches_broken_rounds(second: dict[str, object], code: str) -> None:
    sim = Simulation(cfg(2))
    sim.checker.on_round_key(-1, 0, "0:n0-1")
    sim.checker.on_close(0, '{"size": 2, "closer": "n0-1"}')
    nodes = [
        NodeInfo(node_id=f"n{i}-1", addr=f"10.0.0.{i}", master_port=20000 + i, nproc=1)
        for i in range(2)
    ]
    sim.checker.on_assignment(sim.agents[0], nodes[0], _assignment(0, 0))
    with pytest.raises(SafetyViolation) as err:
        sim.checker.on_assignment(sim.agents[1], nodes[1], _assignment(0, 1, **second))
    assert err.value.code == code


def test_checker_catches_a_dead_member() -> None:
    sim = Simulation(cfg(2))
    sim.checker.on_round_key(-1, 0, "0:n0-1")
    sim.checker.on_dead("n1-1", "lost")
    sim.now = 1.0
    sim.checker.on_close(0, '{"size": 2, "closer": "n0-1"}')
    node = NodeInfo(node_id="n1-1", addr="10.0.0.1", master_port=1, nproc=1)
    with pytest.raises(SafetyViolation, match="dead_member"):
        sim.checker.on_assignment(sim.agents[1], node, _assignment(0, 1))


def test_checker_hears_exclusions_and_catches_a_live_one_left_out() -> None:
    sim = Simulation(cfg(3))
    sim.checker.on_round_key(-1, 0, "0:n0-1")
    sim.checker.on_dead("n1-1", "lost")
    sim.checker.on_close(0, '{"size": 3, "closer": "n0-1"}')
    sim.checker.on_close(0, '{"size": 3, "closer": "n0-1", "members": 2, "excluded": ["n1-1"]}')
    record = sim.checker.rounds[0]
    assert (record.slots, record.size, record.excluded) == (3, 2, ("n1-1",))
    with pytest.raises(SafetyViolation, match="bad_exclusion"):
        sim.checker.on_close(0, '{"size": 3, "closer": "n0-1", "members": 2, "excluded": ["n2-1"]}')


def test_ops_per_node_per_round_stay_flat_with_n() -> None:
    small, big = (simulate(cfg(n, "crash:~1@3", min_nodes=n * 8 // 10)) for n in (10, 200))
    for a, b in zip(small.rounds, big.rounds, strict=True):
        assert b.ops_per_node < 1.5 * a.ops_per_node + 5, (a, b)


def test_sweep_scales_the_scenario_and_draws_it() -> None:
    base = cfg(100, "crash:50@3", min_nodes=80)
    assert scaled(base, 10).faults[0].nodes == (5,) and scaled(base, 10).min_nodes == 8
    points = sweep(base, [10, 30])
    assert [p.nodes for p in points] == [10, 30]
    assert all(p.result.ok and p.reform_s is not None for p in points)
    svg = scaling_svg(points, "t")
    assert svg.startswith("<svg") and svg.count("<polyline") >= 4


def test_cli_prints_writes_json_and_fails_with_a_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    assert (
        chaos_main(
            [
                "sim",
                "--nodes",
                "5",
                "--min",
                "3",
                "--seed",
                "7",
                "--faults",
                "crash:1@4",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "node_lost" in printed and "liveness: held" in printed
    data = json.loads(out.read_text())
    assert data["run"]["rounds"][-1]["size"] == 4 and "chaos sim --nodes 5" in data["replay"]
    assert (
        chaos_main(["sim", "--nodes", "3", "--faults", "restart:wipe@3+1", "--json", str(out)]) == 1
    )
    assert "replay: chaos sim --nodes 3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        chaos_main(["sim", "--nodes", "3", "--faults", "crash:9@1"])
    assert exit_.value.code == 2
    assert "no node 9" in capsys.readouterr().err
