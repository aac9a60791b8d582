"""Hangs with real gloo workers: detected from launcher.progress beats or torch's file timer,
every rank's stack dumped before anything is stopped, the right rank blamed, a charged
restart with reason `hang`; side by side with torchrun for the file timer."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from launcher import events as ev
from launcher.progress.dumps import py_spy_binary
from tests.conftest import WORKLOADS, Procs, Result, clean_env
from tests.integration.test_multinode import ADDRS, Cluster

pytestmark = pytest.mark.integration

HANGER = str(WORKLOADS / "hanger.py")
needs_py_spy = pytest.mark.skipif(
    py_spy_binary() is None, reason="py-spy is not installed (pip install launcher[debug])"
)


def _events(path: Path) -> list[ev.Event]:
    return list(ev.read_events(path))


def _named(events: list[ev.Event], name: str) -> list[ev.Event]:
    return [e for e in events if e.name == name]


def _run(
    procs: Procs, tmp: Path, *flags: str, script: tuple[str, ...], env: dict[str, str]
) -> tuple[Result, list[ev.Event], Path]:
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    log = tmp / "events.jsonl"
    result = procs.run_launcher(
        "--event-log",
        str(log),
        "--log-dir",
        str(tmp / "logs"),
        *flags,
        HANGER,
        str(out),
        *script,
        env=env,
        timeout=120,
    )
    return result, _events(log), out


@needs_py_spy
def test_a_hung_rank_is_dumped_blamed_and_restarted(procs: Procs, tmp_path: Path) -> None:
    result, events, out = _run(
        procs,
        tmp_path,
        "--nproc-per-node",
        "3",
        "--max-restarts",
        "1",
        "--hang-timeout",
        "3",
        script=("--hang-rank", "1", "--hang-step", "5"),
        env=clean_env(),
    )
    assert result.code == 0, result
    assert sorted(p.name for p in out.glob("done-*")) == ["done-0-1", "done-1-1", "done-2-1"]
    [detected] = _named(events, ev.HANG_DETECTED)
    assert detected.fields["source"] == "progress" and detected.fields["timeout_s"] == 3
    # Armed by the first beat; the hang is declared at the timeout, not before.
    assert detected.fields["seconds_since_progress"] >= 3
    dumps = _named(events, ev.HANG_STACK_DUMPED)
    assert sorted(d.fields["rank"] for d in dumps) == [0, 1, 2]  # every rank, not just one
    assert all(d.fields["ok"] and d.fields["method"] == "py-spy" for d in dumps), dumps
    # Evidence first: every dump precedes the first worker exit of that attempt.
    names = [e.name for e in events]
    assert names.index(ev.HANG_STACK_DUMPED) > names.index(ev.HANG_DETECTED)
    last_dump = len(names) - 1 - names[::-1].index(ev.HANG_STACK_DUMPED)
    assert last_dump < names.index(ev.WORKER_EXITED)
    culprit_dump = next(d for d in dumps if d.fields["rank"] == 1)
    assert "chaos_hang" in Path(culprit_dump.fields["path"]).read_text()
    [blamed] = _named(events, ev.HANG_ATTRIBUTED)
    assert blamed.fields["culprits"] == [1], blamed.fields
    assert any("chaos_hang" in f for f in blamed.fields["frames"]["1"])
    incident = json.loads((Path(blamed.fields["incident_dir"]) / "incident.json").read_text())
    assert incident["blame"]["culprits"] == [1]
    [failed] = _named(events, ev.GROUP_FAILED)
    assert failed.fields["root_cause"]["rank"] == 1
    assert failed.fields["root_cause"]["message"].startswith("hang: ")
    [restart] = _named(events, ev.GROUP_RESTART)
    assert restart.fields["reason"] == "hang" and restart.fields["charged"] is True


def test_faulthandler_dumps_when_py_spy_is_not_used(procs: Procs, tmp_path: Path) -> None:
    """SIGABRT with PYTHONFAULTHANDLER=1 (which the launcher exports): each worker prints its
    threads' stacks to its stderr log; the budget is spent, so the summary names the culprit
    with its frames and the launcher exits with its signal."""
    result, events, _ = _run(
        procs,
        tmp_path,
        "--nproc-per-node",
        "2",
        "--hang-timeout",
        "2",
        "--hang-dump",
        "faulthandler",
        "--redirects",
        "2",
        script=("--hang-rank", "0", "--hang-step", "3", "--always"),
        env=clean_env(),
    )
    assert result.code == 128 + signal.SIGABRT, result
    dumps = _named(events, ev.HANG_STACK_DUMPED)
    assert sorted(d.fields["rank"] for d in dumps) == [0, 1]
    assert all(d.fields["method"] == "faulthandler" and d.fields["ok"] for d in dumps), dumps
    text = Path(next(d for d in dumps if d.fields["rank"] == 0).fields["path"]).read_text()
    assert "Fatal Python error: Aborted" in text and "chaos_hang" in text
    [blamed] = _named(events, ev.HANG_ATTRIBUTED)
    assert blamed.fields["culprits"] == [0] and blamed.fields["by"] == "stack"
    assert "tests/workloads/hanger.py FAILED" in result.err
    assert "traceback : hang: rank 0 outside any collective" in result.err
    assert "in chaos_hang" in result.err


def test_torch_file_timer_restarts_where_torchrun_kills_itself(
    procs: Procs, tmp_path: Path
) -> None:
    """The same script, the same env: torchrun's server SIGKILLs the worker, then torchrun
    (exit 137, no restart); ours treats the expiry as a hang and the job finishes."""
    env = clean_env(TORCHELASTIC_ENABLE_FILE_TIMER="1")
    script = ("--hang-rank", "1", "--hang-step", "3", "--how", "timer")
    theirs_out = tmp_path / "torchrun"
    theirs_out.mkdir()
    theirs = procs.run_torchrun(
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "1",
        HANGER,
        str(theirs_out),
        *script,
        env=env,
        timeout=120,
    )
    assert theirs.code in (137, -signal.SIGKILL), theirs  # it SIGKILLs itself
    assert not list(theirs_out.glob("done-*"))
    ours, events, out = _run(
        procs, tmp_path, "--nproc-per-node", "2", "--max-restarts", "1", script=script, env=env
    )
    assert ours.code == 0, ours
    assert sorted(p.name for p in out.glob("done-*")) == ["done-0-1", "done-1-1"]
    [detected] = _named(events, ev.HANG_DETECTED)
    assert detected.fields["source"] == "file_timer"
    assert detected.fields["scope_id"] == "chaos_step" and detected.fields["rank"] == 1
    [restart] = _named(events, ev.GROUP_RESTART)
    assert restart.fields["reason"] == "hang" and "chaos_step" in restart.fields["detail"]


def test_a_job_that_beats_raises_no_false_alarm(procs: Procs, tmp_path: Path) -> None:
    result, events, _ = _run(
        procs,
        tmp_path,
        "--nproc-per-node",
        "2",
        "--hang-timeout",
        "10",
        script=("--steps", "30"),
        env=clean_env(),
    )
    assert result.code == 0, result
    assert len(_named(events, ev.PROGRESS_ARMED)) == 2
    noisy = {ev.PROGRESS_STALLED, ev.HANG_DETECTED, ev.STRAGGLER_DETECTED}
    assert not [e for e in events if e.name in noisy]


def test_a_slow_rank_is_reported_as_a_straggler_and_nothing_else_is(
    procs: Procs, tmp_path: Path
) -> None:
    """Section times, not step intervals (the all_reduce equalises those): rank 2's compute
    takes 3x as long; it is reported after 3 one-second windows, and only it."""
    result, events, _ = _run(
        procs,
        tmp_path,
        "--nproc-per-node",
        "3",
        "--straggler-window",
        "1",
        script=("--steps", "90", "--step-s", "0.0", "--compute-s", "0.02", "--slow-rank", "2"),
        env=clean_env(),
    )
    assert result.code == 0, result
    slow = _named(events, ev.STRAGGLER_DETECTED)
    assert slow and {e.fields["rank"] for e in slow} == {2}, slow
    first = slow[0].fields
    assert first["section"] == "compute" and first["windows"] >= 3
    assert first["score"] < 0.75 and first["median_s"] > first["fastest_s"]
    stats = _named(events, ev.STRAGGLER_STATS)
    assert stats and stats[-1].fields["sections"][0]["slowest"][0][0] == 2


@pytest.mark.timeout(180)
def test_stragglers_are_scored_across_nodes_by_group_rank_0(procs: Procs, tmp_path: Path) -> None:
    """One rank per node: no node has a peer to compare with, so only a job-wide score can
    see rank 1 (the other node's only rank) as slow. Group rank 0 alone reports it, naming
    the node it ran on, from both nodes' windows."""
    c = Cluster(
        procs,
        tmp_path,
        nnodes="2",
        script=Path(HANGER),
        script_args=("--steps", "90", "--step-s", "0.0", "--compute-s", "0.02", "--slow-rank", "1"),
        flags=("--straggler-window", "1"),
    )
    agents = [c.start(addr) for addr in ADDRS[:2]]
    assert [a.wait(timeout=120) for a in agents] == [0, 0]
    [first, second] = c.events(ev.RDZV_ROUND_COMPLETE)[:2]
    scorer = first if first.fields["group_rank"] == 0 else second
    other = second if scorer is first else first
    slow = c.events(ev.STRAGGLER_DETECTED)
    assert slow and {(e.node_id, e.fields["rank"]) for e in slow} == {(scorer.node_id, 1)}
    assert {e.fields["node"] for e in slow} == {other.node_id}  # rank 1 ran there
    stats = c.events(ev.STRAGGLER_STATS)
    assert {e.node_id for e in stats} == {scorer.node_id}
    assert max(e.fields["nodes"] for e in stats) == 2
    assert stats[-1].fields["sections"][0]["ranks"] == 2


def test_equal_ranks_raise_no_straggler(procs: Procs, tmp_path: Path) -> None:
    result, events, _ = _run(
        procs,
        tmp_path,
        "--nproc-per-node",
        "3",
        "--straggler-window",
        "1",
        script=("--steps", "90", "--step-s", "0.0", "--compute-s", "0.02"),
        env=clean_env(),
    )
    assert result.code == 0, result
    assert _named(events, ev.STRAGGLER_STATS)  # scored, windows went by
    assert not _named(events, ev.STRAGGLER_DETECTED)


@needs_py_spy
def test_a_script_that_never_beats_still_gets_the_stuck_ranks_stack(
    procs: Procs, tmp_path: Path
) -> None:
    """An unchanged torchrun script: no beats, so no hang is declared; gloo times out on the
    ranks waiting for the stuck one. Their failure is a peer's timeout, so the ranks still
    running are dumped before the stop, the stuck one is blamed by its stack, and the
    restart is a hang's."""
    result, events, out = _run(
        procs,
        tmp_path,
        "--nproc-per-node",
        "3",
        "--max-restarts",
        "1",
        script=("--hang-rank", "1", "--hang-step", "3", "--no-beat", "--pg-timeout-s", "3"),
        env=clean_env(),
    )
    assert result.code == 0, result
    assert sorted(p.name for p in out.glob("done-*")) == ["done-0-1", "done-1-1", "done-2-1"]
    [detected] = _named(events, ev.HANG_DETECTED)
    assert detected.fields["source"] == "symptom"
    dumped = {d.fields["rank"] for d in _named(events, ev.HANG_STACK_DUMPED) if d.fields["ok"]}
    assert 1 in dumped  # the stuck rank was still running: its stack is the evidence
    [blamed] = _named(events, ev.HANG_ATTRIBUTED)
    assert blamed.fields["culprits"] == [1] and blamed.fields["by"] == "stack", blamed.fields
    [failed] = _named(events, ev.GROUP_FAILED)
    assert failed.fields["root_cause"]["rank"] == 1
    assert failed.fields["root_cause"]["kind"] == "hang"
    [restart] = _named(events, ev.GROUP_RESTART)
    assert restart.fields["reason"] == "hang"
