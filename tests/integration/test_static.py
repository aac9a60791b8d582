"""Multi-node `static` rendezvous (--node-rank, --master-addr, --master-port): fixed ranks,
and a worker failure on one node restarts every node's workers (torchrun restarts only
the failing node's, pytorch/pytorch#146371)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from launcher import events as ev
from tests.conftest import WORKLOADS, Procs, clean_env

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.2", 0))
        return int(sock.getsockname()[1])


def test_static_failure_on_one_node_restarts_every_node(procs: Procs, tmp_path: Path) -> None:
    port = _free_port()
    env = clean_env(FAIL_RANK="3", FAIL_TIMES="1", FAIL_CODE="5", OK_SLEEP="1")
    agents = []
    for node_rank in (0, 1):
        log = tmp_path / f"events-{node_rank}.jsonl"
        agents.append(
            procs.launcher(
                "--nnodes",
                "2",
                "--nproc-per-node",
                "2",
                "--node-rank",
                str(node_rank),
                "--master-addr",
                "127.0.0.2",
                "--master-port",
                str(port),
                "--local-addr",
                f"127.0.0.{2 + node_rank}",
                "--max-restarts",
                "1",
                "--rdzv-id",
                f"static-{os.environ.get('PYTEST_XDIST_WORKER', 'solo')}",
                "--event-log",
                str(log),
                str(WORKLOADS / "flaky.py"),
                str(tmp_path),
                env=env,
            )
        )
    for agent in agents:
        _, err = agent.communicate(timeout=120)
        assert agent.returncode == 0, err
    starts = [line.split() for line in (tmp_path / "starts.txt").read_text().splitlines()]
    # the second attempt ran every rank on both nodes, all with the same (job-wide) count
    assert sorted(int(s[1]) for s in starts if s[0] == "1") == [0, 1, 2, 3]
    assert {s[0] for s in starts} == {"0", "1"}
    for node_rank in (0, 1):
        events = list(ev.read_events(tmp_path / f"events-{node_rank}.jsonl"))
        rounds = [e for e in events if e.name == ev.RDZV_ROUND_COMPLETE]
        assert [r.fields["group_rank"] for r in rounds] == [node_rank, node_rank]  # fixed
        restarts = [e for e in events if e.name == ev.GROUP_RESTART]
        assert [(r.fields["reason"], r.fields["charged"]) for r in restarts] == [
            ("worker_failure", True)
        ]
