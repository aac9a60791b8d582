"""Restarts, budgets, the failure summary and both `record` decorators, end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from launcher import events as ev
from tests.conftest import ROOT, WORKLOADS, Procs, clean_env

pytestmark = pytest.mark.integration


def _events(log: Path) -> list[ev.Event]:
    return list(ev.read_events(log))


def test_restarts_until_success(procs: Procs, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    env = clean_env(FAIL_RANK="1", FAIL_TIMES="2", FAIL_CODE="3")
    result = procs.run_launcher(
        "--nproc-per-node",
        "3",
        "--max-restarts",
        "2",
        "--event-log",
        str(log),
        str(WORKLOADS / "flaky.py"),
        str(tmp_path),
        env=env,
    )
    assert result.code == 0, result
    starts = [line.split() for line in (tmp_path / "starts.txt").read_text().splitlines()]
    counts = sorted({int(s[0]) for s in starts})
    assert counts == [0, 1, 2]
    # the last attempt ran every worker (earlier ones may have been stopped before their
    # first line, since rank 1 fails at once)
    assert sorted(int(s[1]) for s in starts if s[0] == "2") == [0, 1, 2]
    restarts = [e for e in _events(log) if e.name == ev.GROUP_RESTART]
    assert [e.fields["restart_count"] for e in restarts] == [1, 2]
    assert all(e.fields["reason"] == "worker_failure" for e in restarts)
    exit_event = [e for e in _events(log) if e.name == ev.AGENT_EXIT][-1]
    assert exit_event.fields["outcome"] == "succeeded" and exit_event.fields["restarts"] == 2


def test_budget_exhausted_reports_root_cause(procs: Procs, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    env = clean_env(FAIL_RANK="2", FAIL_TIMES="99", FAIL_CODE="7", OK_SLEEP="60")
    result = procs.run_launcher(
        "--nproc-per-node",
        "3",
        "--max-restarts",
        "1",
        "--event-log",
        str(log),
        str(WORKLOADS / "flaky.py"),
        str(tmp_path),
        env=env,
    )
    assert result.code == 7, result  # the root cause's own exit code, not torchrun's 1
    summary = result.err[result.err.index("flaky.py FAILED") :]
    root = summary[summary.index("Root Cause") :]
    assert re.search(r"rank\s+: 2 \(local_rank: 2\)", root)
    assert re.search(r"exitcode\s+: 7 \(pid: \d+\) \n", root)
    assert "(SIGTERM)" in summary[: summary.index("Root Cause")]  # the stopped siblings
    starts = [line.split() for line in (tmp_path / "starts.txt").read_text().splitlines()]
    # two attempts; the failing rank ran in both (siblings may be stopped before line one)
    assert sorted(s[0] for s in starts if s[1] == "2") == ["0", "1"]
    assert {s[0] for s in starts} == {"0", "1"}
    names = [e.name for e in _events(log)]
    assert names.count(ev.GROUP_RESTART) == 1 and names.count(ev.GROUP_FAILED) == 2
    final = [e for e in _events(log) if e.name == ev.AGENT_EXIT][-1]
    assert final.fields["root_cause"]["rank"] == 2 and final.fields["exit_code"] == 7


@pytest.mark.parametrize("mode", ["raise-ours", "raise-torch"])
def test_record_decorators_put_traceback_in_summary(
    procs: Procs, tmp_path: Path, mode: str
) -> None:
    parent_error = tmp_path / "parent.json"
    result = procs.run_launcher(
        "--nproc-per-node",
        "2",
        "--log-dir",
        str(tmp_path / "logs"),
        str(WORKLOADS / "crash.py"),
        mode,
        env=clean_env(TORCHELASTIC_ERROR_FILE=str(parent_error)),
        cwd=str(ROOT),
    )
    assert result.code == 1, result
    root = result.err[result.err.index("Root Cause") :]
    assert "ValueError: boom from rank 1" in root
    assert "in fail\n" in root and "error.json" in root
    copied = json.loads(parent_error.read_text())
    assert copied["message"]["errorCode"] == 1
    assert copied["message"]["message"] == "ValueError: boom from rank 1"


def test_signal_death_is_named(procs: Procs, tmp_path: Path) -> None:
    result = procs.run_launcher(
        "--nproc-per-node", "2", str(WORKLOADS / "crash.py"), "signal:SIGSEGV"
    )
    assert result.code == 128 + 11, result
    root = result.err[result.err.index("Root Cause") :]
    assert re.search(r"exitcode\s+: -11 \(pid: (\d+)\)  \(SIGSEGV\)", root)
    assert re.search(r"Signal 11 \(SIGSEGV\) received by PID \d+", root)


def test_no_record_points_to_docs(procs: Procs) -> None:
    result = procs.run_launcher("--nproc-per-node", "2", str(WORKLOADS / "crash.py"), "exit:5")
    assert result.code == 5, result
    assert (
        "To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html" in result.err
    )
    assert "error_file: <N/A>" in result.err
