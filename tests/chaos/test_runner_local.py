"""The runner on the local topology: small real jobs (gloo, DDP) with faults, judged by files.

Each test builds a Scenario directly, runs it with `run_scenario` into tmp_path/run and reads
the run directory back with `load_history` (what the checkers see): history records, every
node's event log, the workload's step reports. Nothing here measures time; the run's own
teardown kills whatever is left, so a failing assertion leaves no process behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chaos.history import History, load_history
from chaos.runner import RunError, RunResult, run_scenario
from chaos.scenario.loader import load_scenario
from chaos.scenario.schema import Fault, Scenario, Topology, Trigger, Workload
from launcher import events as ev

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

STEPS = 15


def make_scenario(
    name: str,
    *,
    nodes: int = 2,
    spares: int = 0,
    min_nodes: int | None = None,
    steps: int = STEPS,
    step_s: float = 0.1,
    faults: tuple[Fault, ...] = (),
    launcher_args: tuple[str, ...] = (),
) -> Scenario:
    return Scenario(
        name=name,
        seed=7,
        timeout_s=75.0,
        topology=Topology(
            nodes=nodes,
            spares=spares,
            min_nodes=min_nodes,
            nproc_per_node=1,
            launcher_args=launcher_args,
        ),
        workload=Workload(steps=steps, step_s=step_s, checkpoint_every=5),
        faults=faults,
    )


def run(tmp_path: Path, scenario: Scenario) -> tuple[RunResult, History, list[str]]:
    lines: list[str] = []
    result = run_scenario(
        scenario,
        run_dir=tmp_path / "run",
        seed=None,
        backend=None,
        launcher=None,
        progress=lines.append,
    )
    return result, load_history(tmp_path / "run"), lines


def records(history: History, kind: str) -> list[dict[str, Any]]:
    return [r for r in history.records if r["kind"] == kind]


def named(history: History, node: int, name: str) -> list[ev.Event]:
    return [e for e in history.events.get(node, ()) if e.name == name]


def describe(history: History, lines: list[str]) -> str:
    """What to print when an assertion fails: progress, records, the tail of each stderr."""
    out = ["progress:", *lines, "records:", *map(str, history.records)]
    for node_dir in sorted((history.run_dir / "nodes").iterdir()):
        tail = (node_dir / "stderr.log").read_text(errors="replace").splitlines()[-12:]
        out += [f"--- node {node_dir.name} stderr:", *tail]
    return "\n".join(out)


def assert_clean_end(result: RunResult, history: History, info: str) -> None:
    [end] = records(history, "run.end")
    assert end["timed_out"] is False and end["error"] is None, info
    assert end["leftover_pids"] == [] and end["bound_ports"] == [], info
    assert result.leftover_pids == () and result.bound_ports == ()


def steps_of(history: History, **match: Any) -> list[dict[str, Any]]:
    return [s for s in history.steps if all(s.get(k) == v for k, v in match.items())]


def test_clean_run_writes_a_complete_run_dir(tmp_path: Path) -> None:
    result, history, lines = run(tmp_path, make_scenario("clean"))
    info = describe(history, lines)
    run_dir = tmp_path / "run"
    assert (run_dir / "seed").read_text().strip() == "7"
    loaded = load_scenario(run_dir / "scenario.yaml")  # what `chaos check` reads back
    assert loaded.name == "clean" and loaded.workload.steps == STEPS
    assert (run_dir / "workload" / "ckpt" / "ckpt.pt").exists()

    kinds = [r["kind"] for r in history.records]
    assert kinds[0] == "run.start" and kinds[-1] == "run.end", info
    assert sorted(r["node"] for r in records(history, "node.start")) == [0, 1]
    assert history.exit_codes == {0: 0, 1: 0}, info
    assert result.exit_codes == {0: 0, 1: 0} and not result.timed_out
    assert_clean_end(result, history, info)

    for node in (0, 1):
        events = history.events[node]
        assert events[0].name == ev.AGENT_STARTED and events[-1].name == ev.AGENT_EXIT, info
        assert events[-1].fields["outcome"] == "succeeded"
        assert {e.node_id for e in events} == {f"127.0.0.{2 + node}"}
    for rank in (0, 1):
        mine = steps_of(history, rank=rank)
        assert [s["step"] for s in mine] == list(range(1, STEPS + 1)), info
        assert {(s["world"], s["restart_count"], s["resumed_from"]) for s in mine} == {(2, 0, None)}
    # ranks follow node order here (node 0 hosts the store and joins first or ties)
    by_node = {s["node"]: s["node_addr"] for s in history.steps}
    assert by_node == {0: "127.0.0.2", 1: "127.0.0.3"}


def test_kill_worker_by_rank_restarts_the_job(tmp_path: Path) -> None:
    kill = Fault(
        kind="kill_worker",
        rank=1,
        signal="SIGKILL",
        trigger=Trigger(kind="after_step", step=5, rank=0),
    )
    scenario = make_scenario("kill-worker", faults=(kill,), launcher_args=("--max-restarts", "1"))
    result, history, lines = run(tmp_path, scenario)
    info = describe(history, lines)

    [fire] = records(history, "fault.fire")
    did = fire["did"]
    assert fire["fault"] == 0 and fire["fault_kind"] == "kill_worker", info
    assert did["rank"] == 1 and did["via"] == "signal" and did["signal"] == "SIGKILL", info
    assert did["signalled"] is True and did["resolved_from"] == "events"
    # the pid it killed was rank 1's worker of that round, on the node it named
    started = [
        e for e in named(history, did["node"], ev.WORKER_STARTED) if e.fields["pid"] == did["pid"]
    ]
    assert [(e.fields["rank"], e.fields["round"]) for e in started] == [(1, did["round"])], info
    [exited] = [
        e for e in named(history, did["node"], ev.WORKER_EXITED) if e.fields["pid"] == did["pid"]
    ]
    assert exited.fields["signal"] == "SIGKILL" and not exited.fields["stopped_by_agent"], info

    for node in (0, 1):
        [restart] = named(history, node, ev.GROUP_RESTART)
        assert restart.fields["reason"] == "worker_failure" and restart.fields["charged"], info
    again = steps_of(history, restart_count=1)
    assert {s["resumed_from"] for s in again} == {5}, info
    for rank in (0, 1):
        assert max(s["step"] for s in again if s["rank"] == rank) == STEPS, info
    assert history.exit_codes == {0: 0, 1: 0}, info
    assert_clean_end(result, history, info)


def test_crash_node_reforms_without_it(tmp_path: Path) -> None:
    crash = Fault(kind="crash_node", node=2, trigger=Trigger(kind="after_step", step=4, rank=0))
    scenario = make_scenario(
        "crash-node",
        nodes=3,
        min_nodes=2,
        faults=(crash,),
        launcher_args=("--max-restarts", "3"),
    )
    result, history, lines = run(tmp_path, scenario)
    info = describe(history, lines)

    [fire] = records(history, "fault.fire")
    did = fire["did"]
    assert did["node"] == 2 and did["signal"] == "SIGKILL", info
    workers = {e.fields["pid"] for e in named(history, 2, ev.WORKER_STARTED)}
    assert did["agent_pid"] in did["pids"] and workers <= set(did["pids"]), info
    assert history.exit_codes == {0: 0, 1: 0, 2: -9}, info
    assert not named(history, 2, ev.AGENT_EXIT)  # SIGKILLed: no last word

    assert {s["world"] for s in history.steps} == {3, 2}, info
    final = [s for s in history.steps if s["world"] == 2]
    assert {s["node"] for s in final} == {0, 1}
    for rank in (0, 1):
        assert max(s["step"] for s in final if s["rank"] == rank) == STEPS, info
    assert_clean_end(result, history, info)


def test_join_node_grows_the_world(tmp_path: Path) -> None:
    join = Fault(
        kind="join_node",
        node=2,
        trigger=Trigger(kind="on_event", event=ev.RDZV_ROUND_COMPLETE, occurrence=1),
    )
    scenario = make_scenario(
        "join-node",
        nodes=2,
        spares=1,
        steps=25,
        step_s=0.15,
        faults=(join,),
        launcher_args=("--rdzv-conf", "last_call_timeout=1"),
    )
    result, history, lines = run(tmp_path, scenario)
    info = describe(history, lines)

    [fire] = records(history, "fault.fire")
    assert fire["did"]["node"] == 2 and fire["did"]["started_node"] is True, info
    assert sorted(r["node"] for r in records(history, "node.start")) == [0, 1, 2]
    assert history.exit_codes == {0: 0, 1: 0, 2: 0}, info
    grown = [s for s in history.steps if s["world"] == 3]
    assert {s["rank"] for s in grown} == {0, 1, 2} and {s["node"] for s in grown} == {0, 1, 2}
    for rank in (0, 1, 2):
        assert max(s["step"] for s in grown if s["rank"] == rank) == 25, info
    [joined] = named(history, 2, ev.RDZV_ROUND_COMPLETE)
    assert joined.fields["reason"] == "scale_up" and joined.fields["world_size"] == 3, info
    assert_clean_end(result, history, info)


def test_partition_is_refused_before_anything_starts(tmp_path: Path) -> None:
    cut = Fault(kind="partition", groups=((0,), (1,)), trigger=Trigger(kind="at_s", at_s=1.0))
    with pytest.raises(RunError, match="netns or docker"):
        run_scenario(make_scenario("partition", faults=(cut,)), run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "history.jsonl").exists()


def test_hygiene_finds_helpers_that_left_their_session(tmp_path: Path) -> None:
    """torchrun stops process groups only: a helper in a new session, reparented to init, is
    in no agent tree, no event and no step report. The run's environment marker finds it."""
    import dataclasses

    from chaos.checkers.hygiene import HygieneChecker
    from chaos.topology import procs

    scenario = make_scenario("detached", nodes=1, steps=5)
    scenario = dataclasses.replace(
        scenario, workload=dataclasses.replace(scenario.workload, args=("--detached-helper",))
    )
    lines: list[str] = []
    result = run_scenario(
        scenario,
        run_dir=tmp_path / "run",
        seed=None,
        backend=None,
        launcher="torchrun",
        progress=lines.append,
    )
    history = load_history(tmp_path / "run")
    info = describe(history, lines)
    verdict = HygieneChecker().check(history, scenario)
    assert verdict.status == "fail", info
    left = verdict.measured["leftover_pids"]
    assert left and list(result.leftover_pids) == left, info
    assert not [pid for pid in left if procs.proc_start(pid) is not None]  # teardown took them
