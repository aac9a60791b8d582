"""kill_worker without event logs (torchrun): the rank is found in the live workers'
environment, so a fault can fire before any step report; a worker's children (which inherit
RANK) and an older generation being stopped are not the target."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.faults.resolve import resolve_worker
from chaos.topology import procs
from chaos.topology.view import JobView

pytestmark = pytest.mark.integration

# A "worker" that starts a child (as a DataLoader would) and waits; the child inherits RANK.
WORKER = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "print('up', flush=True); time.sleep(60)"
)


class _Topology:
    """The two things resolve_worker asks of a topology, over real processes."""

    def __init__(self, run_dir: Path, nodes: dict[int, list[subprocess.Popen[bytes]]]) -> None:
        self.view = JobView(run_dir)
        self._nodes = nodes

    def refresh(self) -> None:
        self.view.poll()

    def nodes(self) -> dict[int, object]:
        return dict.fromkeys(self._nodes)

    def node_pids(self, index: int) -> list[int]:
        return [pid for proc in self._nodes[index] for pid in procs.tree(proc.pid)]

    def host_pid(self, index: int, node_pid: int) -> int | None:
        return node_pid if node_pid in self.node_pids(index) else None


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs_started: list[subprocess.Popen[bytes]] = []
    yield procs_started
    for proc in procs_started:
        for pid in reversed(procs.tree(proc.pid)):
            os.kill(pid, 9)
        proc.wait(timeout=10)


def _worker(
    started: list[subprocess.Popen[bytes]], rank: int, local: int, restart: int
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RANK": str(rank),
        "LOCAL_RANK": str(local),
        "TORCHELASTIC_RESTART_COUNT": str(restart),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER], env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    started.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # child started
    return proc


def test_the_rank_is_found_in_the_environment_before_any_step_report(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    old = _worker(started, rank=3, local=1, restart=0)  # a generation being stopped
    new = _worker(started, rank=3, local=1, restart=1)
    other = _worker(started, rank=2, local=0, restart=1)
    topo = _Topology(tmp_path, {0: [other], 1: [old, new]})
    target = resolve_worker(topo, rank=3, node=None, local_rank=None)  # type: ignore[arg-type]
    assert not isinstance(target, str), target
    assert (target.host_pid, target.node, target.source) == (new.pid, 1, "environ")
    assert (target.rank, target.local_rank) == (3, 1)
    by_local = resolve_worker(topo, rank=None, node=0, local_rank=0)  # type: ignore[arg-type]
    assert not isinstance(by_local, str) and by_local.host_pid == other.pid
    missing = resolve_worker(topo, rank=7, node=None, local_rank=None)  # type: ignore[arg-type]
    assert isinstance(missing, str) and "rank 7" in missing
