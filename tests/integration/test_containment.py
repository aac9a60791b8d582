"""No process escapes: a worker's descendant that left its process group and session (setsid
and a second fork, as daemons do) is stopped on restart, at the end of the job, on a signal
to the launcher and on SIGKILL of the launcher, with cgroups and with the subreaper."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from launcher import events as ev
from launcher.workers.cgroup import CgroupTree, CgroupUnavailable
from tests.conftest import WORKLOADS, Procs, clean_env, pid_alive, wait_for_file, wait_until

pytestmark = pytest.mark.integration

DETACHER = str(WORKLOADS / "detacher.py")


def _cgroups_usable() -> bool:
    try:
        tree = CgroupTree.create()
    except CgroupUnavailable:
        return False
    tree.remove()
    return True


MODES = [
    pytest.param(
        "cgroup",
        marks=pytest.mark.skipif(not _cgroups_usable(), reason="no writable cgroup v2 here"),
    ),
    "subreaper",
]


def _pid(path: Path, timeout_s: float = 30) -> int:
    assert wait_for_file(path, timeout_s), f"{path.name} never written"
    return int(path.read_text())


def _events(path: Path) -> list[ev.Event]:
    return list(ev.read_events(path))


def _launch(procs: Procs, tmp: Path, mode: str, then: str, *flags: str) -> subprocess.Popen[str]:
    out = tmp / "out"
    out.mkdir()
    return procs.launcher(
        "--containment",
        mode,
        "--event-log",
        str(tmp / "events.jsonl"),
        *flags,
        DETACHER,
        str(out),
        "--then",
        then,
        env=clean_env(),
    )


def _finish(proc: subprocess.Popen[str], timeout_s: float = 60) -> int:
    code = proc.wait(timeout_s)
    if proc.stderr is not None:
        proc.stderr.read()
    return code


@pytest.mark.parametrize("mode", MODES)
def test_detached_helpers_are_stopped_before_the_restart_and_after_success(
    procs: Procs, tmp_path: Path, mode: str
) -> None:
    proc = _launch(
        procs, tmp_path, mode, "fail-first", "--nproc-per-node", "2", "--max-restarts", "1"
    )
    out = tmp_path / "out"
    first = [_pid(out / f"detached-{rank}-0.txt") for rank in (0, 1)]
    second = [_pid(out / f"detached-{rank}-1.txt") for rank in (0, 1)]
    procs.extra_pids.update(first + second)
    assert _finish(proc) == 0
    assert not [p for p in first + second if pid_alive(p)]
    events = _events(tmp_path / "events.jsonl")
    names = [e.name for e in events]
    assert events[0].fields["containment"] == mode
    stopped = [e for e in events if e.name == ev.GROUP_DESCENDANTS_STOPPED]
    # The first group's helpers went before the second group started, the second's at the end
    # (a helper's short-lived middle process can be caught on its way out too).
    assert len(stopped) == 2
    assert set(first) <= set(stopped[0].fields["pids"])
    assert set(second) <= set(stopped[1].fields["pids"])
    assert names.index(ev.GROUP_DESCENDANTS_STOPPED) < names.index(ev.GROUP_RESTART)
    assert names.index(ev.GROUP_SUCCEEDED) < len(names) - 1 - names[::-1].index(
        ev.GROUP_DESCENDANTS_STOPPED
    )
    assert all(e.fields["mechanism"] == mode for e in stopped)


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_to_the_launcher_stops_detached_helpers(
    procs: Procs, tmp_path: Path, mode: str
) -> None:
    proc = _launch(procs, tmp_path, mode, "sleep", "--nproc-per-node", "2")
    out = tmp_path / "out"
    helpers = [_pid(out / f"detached-{rank}-0.txt") for rank in (0, 1)]
    procs.extra_pids.update(helpers)
    for rank in (0, 1):
        _pid(out / f"worker-{rank}-0.txt")
    proc.send_signal(signal.SIGTERM)
    assert _finish(proc) == 128 + signal.SIGTERM
    assert not [p for p in helpers if pid_alive(p)]


@pytest.mark.parametrize("mode", MODES)
def test_sigkill_of_the_launcher_takes_detached_helpers_through_the_guardian(
    procs: Procs, tmp_path: Path, mode: str
) -> None:
    proc = _launch(procs, tmp_path, mode, "sleep", "--nproc-per-node", "2")
    out = tmp_path / "out"
    helpers = [_pid(out / f"detached-{rank}-0.txt") for rank in (0, 1)]
    workers = [_pid(out / f"worker-{rank}-0.txt") for rank in (0, 1)]
    procs.extra_pids.update(helpers + workers)
    # This launcher's cgroup: the one that holds its workers (a cgroup another launcher left
    # behind under a pid since reused has the same name prefix, and holds nothing)
    own = [d for d in _launcher_cgroups(proc.pid) if _holds(d, workers)] if mode == "cgroup" else []
    proc.kill()
    proc.wait(10)
    # The promise is "within a second"; the bound here leaves room for a loaded CI machine.
    assert wait_until(lambda: not [p for p in helpers + workers if pid_alive(p)], 10)
    if mode == "cgroup":  # the guardian also removes the launcher's cgroup
        base = [e for e in _events(tmp_path / "events.jsonl") if e.name == ev.AGENT_STARTED]
        assert base and base[0].fields["containment"] == "cgroup"
        assert len(own) == 1
        assert wait_until(lambda: not own[0].exists(), 10)


def test_containment_cgroup_when_none_can_be_made_is_one_line_and_nothing_starts(
    procs: Procs, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user")
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    os.chmod(tmp_path, 0o777)
    proc = procs.popen(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "python3",
            "-m",
            "launcher",
            "--containment",
            "cgroup",
            DETACHER,
            str(out),
        ],
        env=clean_env(),
    )
    code = proc.wait(60)
    err = proc.stderr.read() if proc.stderr is not None else ""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("launcher: error:")]
    assert len(lines) == 1 and "--containment cgroup" in lines[0], err
    assert "Traceback" not in err
    assert not list(out.iterdir())  # no worker started


def _holds(cgroup: Path, pids: list[int]) -> bool:
    """Whether any of `pids` is in `cgroup` or a cgroup below it."""
    found: set[int] = set()
    for procs_file in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            found.update(int(line) for line in procs_file.read_text().split())
    return bool(found & set(pids))


def _launcher_cgroups(pid: int) -> list[Path]:
    try:
        from launcher.workers.cgroup import own_cgroup_dir

        parent = own_cgroup_dir()
    except CgroupUnavailable:
        return []
    return list(parent.glob(f"launcher-{pid}-*"))
