"""No orphans, signal handling and clean shutdown, with real process trees."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from launcher import events as ev
from tests.conftest import WORKLOADS, Procs, pid_alive, wait_for_file, wait_until

pytestmark = pytest.mark.integration


def _pids(out: Path, ranks: int) -> list[int]:
    for rank in range(ranks):
        assert wait_for_file(out / f"pids-{rank}.txt", 30), f"worker {rank} never started"
    found: list[int] = []
    for rank in range(ranks):
        found += [int(p) for p in (out / f"pids-{rank}.txt").read_text().split()]
    return found


def test_sigkill_of_launcher_leaves_no_process(procs: Procs, tmp_path: Path) -> None:
    proc = procs.launcher("--nproc-per-node", "2", str(WORKLOADS / "sleeper.py"), str(tmp_path))
    pids = _pids(tmp_path, 2)  # two workers and one child each
    procs.extra_pids.update(pids)
    assert all(pid_alive(p) for p in pids)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout_s=1.0), [
        p for p in pids if pid_alive(p)
    ]


def test_sigkill_of_launcher_process_group_leaves_no_process(procs: Procs, tmp_path: Path) -> None:
    # A job manager that kills the launcher's whole process group must not orphan workers.
    proc = procs.launcher(
        "--nproc-per-node",
        "2",
        str(WORKLOADS / "sleeper.py"),
        str(tmp_path),
        start_new_session=True,
    )
    pids = _pids(tmp_path, 2)
    procs.extra_pids.update(pids)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout_s=1.0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT])
def test_signal_stops_workers_gracefully(procs: Procs, tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "events.jsonl"
    proc = procs.launcher(
        "--nproc-per-node",
        "2",
        "--event-log",
        str(log),
        str(WORKLOADS / "sleeper.py"),
        str(tmp_path),
    )
    pids = _pids(tmp_path, 2)
    procs.extra_pids.update(pids)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, err
    for rank in range(2):  # the same signal was forwarded and handled by each worker
        assert (tmp_path / f"got-{sig.name}-{rank}").exists()
    assert not any(pid_alive(p) for p in pids)
    names = [(e.name, e.fields.get("signal")) for e in ev.read_events(log)]
    assert (ev.AGENT_SIGNAL, sig.name) in names
    assert names[-1][0] == ev.AGENT_EXIT


def test_signal_grace_then_sigkill(procs: Procs, tmp_path: Path) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open(os.path.join({str(tmp_path)!r}, 'up-' + os.environ['RANK']), 'w').close()\n"
        "time.sleep(300)\n"
    )
    proc = procs.launcher("--nproc-per-node", "2", "--shutdown-timeout", "1", str(script))
    assert wait_for_file(tmp_path / "up-0", 30) and wait_for_file(tmp_path / "up-1", 30)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM


def test_worker_children_die_with_a_failed_worker(procs: Procs, tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, subprocess, sys\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        f"open(os.path.join({str(tmp_path)!r}, 'child-' + os.environ['RANK']), 'w')"
        ".write(str(child.pid))\n"
        "sys.exit(4)\n"
    )
    result = procs.run_launcher("--nproc-per-node", "1", str(script))
    assert result.code == 4
    child = int((tmp_path / "child-0").read_text())
    procs.extra_pids.add(child)
    assert wait_until(lambda: not pid_alive(child), timeout_s=1.0)
