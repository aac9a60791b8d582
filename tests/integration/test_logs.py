"""Log directory layout, redirects, tee prefixes, rank filters, and that nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import events as ev
from tests.conftest import WORKLOADS, Procs, clean_env

pytestmark = pytest.mark.integration


def _talker(tmp_path: Path) -> Path:
    script = tmp_path / "talk.py"
    # rank 1 fails on attempt 0, but only after rank 0 has written its lines
    script.write_text(
        "import os, sys, time\n"
        "r = os.environ['LOCAL_RANK']; c = os.environ['TORCHELASTIC_RESTART_COUNT']\n"
        "sys.stdout.write('out-' + r + '-'); sys.stdout.flush(); print('attempt-' + c)\n"
        "print('err-' + r, file=sys.stderr)\n"
        f"mark = os.path.join({str(tmp_path)!r}, 'written-' + c)\n"
        "if r == '0': open(mark, 'w').close()\n"
        "deadline = time.monotonic() + 30\n"
        "while r == '1' and not os.path.exists(mark) and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "sys.exit(1 if (r == '1' and c == '0') else 0)\n"
    )
    return script


def test_layout_redirects_and_attempts_kept(procs: Procs, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    result = procs.run_launcher(
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "1",
        "--log-dir",
        str(logs),
        "--redirects",
        "3",
        str(_talker(tmp_path)),
    )
    assert result.code == 0, result
    assert "out-" not in result.out  # redirected, not on the console
    (run_dir,) = list(logs.iterdir())
    assert sorted(p.name for p in run_dir.iterdir()) == ["attempt_0", "attempt_1", "events.jsonl"]
    for attempt in (0, 1):
        for rank in (0, 1):
            out = (run_dir / f"attempt_{attempt}" / str(rank) / "stdout.log").read_text()
            assert out == f"out-{rank}-attempt-{attempt}\n"
            err = (run_dir / f"attempt_{attempt}" / str(rank) / "stderr.log").read_text()
            assert err == f"err-{rank}\n"
    names = [e.name for e in ev.read_events(run_dir / "events.jsonl")]
    assert names[0] == ev.AGENT_STARTED and names[-1] == ev.AGENT_EXIT


def test_tee_prefixes_whole_lines_and_keeps_files(procs: Procs, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    result = procs.run_launcher(
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "1",
        "--log-dir",
        str(logs),
        "--tee",
        "3",
        str(_talker(tmp_path)),
    )
    assert result.code == 0, result
    lines = result.out.splitlines()
    # a line written in two pieces still comes out as one line with one prefix
    assert "[default0]:out-0-attempt-0" in lines and "[default1]:out-1-attempt-1" in lines
    assert "[default1]:err-1" in result.err.splitlines()
    (run_dir,) = list(logs.iterdir())
    assert (run_dir / "attempt_1" / "0" / "stdout.log").read_text() == "out-0-attempt-1\n"


def test_prefix_template_and_ranks_filter(procs: Procs, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    env = clean_env(TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE="[${role_name}-${local_rank}:${rank}] ")
    result = procs.run_launcher(
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "1",
        "--log-dir",
        str(logs),
        "-t",
        "3",
        "--local-ranks-filter",
        "0",
        str(_talker(tmp_path)),
        env=env,
    )
    assert result.code == 0, result
    assert "[default-0:0] out-0-attempt-0" in result.out
    assert "out-1" not in result.out  # filtered from the console ...
    (run_dir,) = list(logs.iterdir())
    # ... but never lost
    assert (run_dir / "attempt_0" / "1" / "stdout.log").read_text() == "out-1-attempt-0\n"


def test_filter_without_tee_keeps_output_in_files(procs: Procs, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    result = procs.run_launcher(
        "--nproc-per-node",
        "2",
        "--log-dir",
        str(logs),
        "--local-ranks-filter",
        "1",
        str(WORKLOADS / "flaky.py"),
        str(tmp_path),
        env=clean_env(FAIL_TIMES="0"),
    )
    assert result.code == 0, result
    (run_dir,) = list(logs.iterdir())
    assert (run_dir / "attempt_0" / "0" / "stdout.log").exists()


def test_dev_null_log_dir_disables_files(procs: Procs, tmp_path: Path) -> None:
    probe_out = tmp_path / "probe"
    probe_out.mkdir()
    result = procs.run_launcher(
        "--nproc-per-node",
        "1",
        "--log-dir",
        "/dev/null",
        str(WORKLOADS / "probe.py"),
        str(probe_out),
    )
    assert result.code == 0, result
    import json

    env = json.loads((probe_out / "0.json").read_text())["env"]
    assert env["TORCHELASTIC_ERROR_FILE"] == ""
