"""A real etcd that goes away under a running 2-node job (no root: loopback agents).

1. etcd is stopped for a few seconds and started again on the same data dir: both agents
   ride it out (store.lost then store.restored in their event logs), keep their workers
   and their round, and the job succeeds.
2. With store_outage_timeout=2 an outage that outlasts it makes both agents exit non-zero
   with the one-line error that names the store and the window.

read_timeout=1 makes each etcd operation fail after 1 s (the default 60 s would ride out
these outages inside the etcd client, never reaching the agent's window).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.topology.etcd import EtcdCluster, etcd_binary
from launcher import events as ev
from tests.agent_node import Node
from tests.conftest import WORKLOADS, Procs, clean_env, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.etcd]

FORM_TIMEOUT_S = 60.0  # 2 agents + 2 torch workers on 2 shared cores


@pytest.fixture
def etcd() -> Iterator[EtcdCluster]:
    """A fresh member per test: these tests stop it."""
    if etcd_binary() is None:
        pytest.skip("etcd binary not found (apt-get install etcd-server)")
    with EtcdCluster(1) as server:
        yield server


def start(procs: Procs, tmp_path: Path, etcd: EtcdCluster, conf: str, run_s: str) -> list[Node]:
    host, port = etcd.endpoints[0]
    run_id = f"outage-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out"
    out.mkdir()
    agents = []
    for addr in ("127.0.0.2", "127.0.0.3"):
        log, events = tmp_path / f"{addr}.log", tmp_path / f"{addr}.jsonl"
        argv = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "etcd"]
        argv += ["--rdzv-endpoint", f"{host}:{port}", "--rdzv-id", run_id, "--rdzv-conf", conf]
        argv += ["--local-addr", addr, "--event-log", str(events)]
        argv += ["--log-dir", str(tmp_path / f"logs-{addr}")]
        argv += [str(WORKLOADS / "elastic.py"), str(out)]
        with log.open("w") as handle:
            proc = procs.launcher(
                *argv,
                env=clean_env(RUN_S=run_s, STEP_S="0.2"),
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        agents.append(Node(addr=addr, proc=proc, log=log, events=events))
    started = wait_until(
        lambda: all(a.named(ev.WORKER_STARTED) for a in agents), FORM_TIMEOUT_S, interval_s=0.1
    )
    assert started, "\n".join(a.describe() for a in agents)
    for agent in agents:
        procs.extra_pids.update(int(e.fields["pid"]) for e in agent.named(ev.WORKER_STARTED))
    return agents


def finish(agents: list[Node], timeout_s: float) -> list[int | None]:
    deadline = time.monotonic() + timeout_s
    for agent in agents:
        try:
            agent.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{agent.addr} still running\n" + "\n".join(a.describe() for a in agents))
    return [a.proc.returncode for a in agents]


def test_a_short_etcd_outage_is_ridden_out_in_the_same_round(
    procs: Procs, tmp_path: Path, etcd: EtcdCluster
) -> None:
    agents = start(procs, tmp_path, etcd, "read_timeout=1,store_outage_timeout=30", run_s="14")
    etcd.kill_member(0)
    down_at = time.monotonic()
    assert wait_until(
        lambda: all(a.named(ev.RDZV_STORE_LOST) for a in agents), 15, interval_s=0.1
    ), "\n".join(a.describe() for a in agents)
    time.sleep(max(0.0, down_at + 4 - time.monotonic()))
    etcd.restart_member(0)

    codes = finish(agents, 90)
    text = "\n".join(a.describe() for a in agents)
    assert codes == [0, 0], text
    finished = (tmp_path / "out" / "finished.txt").read_text().split("\n")
    assert sorted(line for line in finished if line) == ["0 2", "1 2"], text
    for agent in agents:
        lost, restored = agent.named(ev.RDZV_STORE_LOST), agent.named(ev.RDZV_STORE_RESTORED)
        assert len(lost) >= 1 and len(restored) == len(lost), text
        assert lost[0].fields["window_s"] == 30.0 and lost[0].fields["error"], text
        assert lost[0].mono_time < restored[0].mono_time, text
        assert 2.0 < restored[0].fields["outage_s"] < 30.0, text
        # The workers kept running through it: one round, one start, nothing re-formed.
        assert len(agent.named(ev.RDZV_ROUND_COMPLETE)) == 1, text
        assert len(agent.named(ev.WORKER_STARTED)) == 1, text
        assert agent.named(ev.AGENT_EXIT)[-1].fields["outcome"] == "succeeded", text


def test_an_outage_past_store_outage_timeout_ends_the_job_with_one_line(
    procs: Procs, tmp_path: Path, etcd: EtcdCluster
) -> None:
    agents = start(procs, tmp_path, etcd, "read_timeout=1,store_outage_timeout=2", run_s="60")
    host, port = etcd.endpoints[0]
    etcd.kill_member(0)
    killed_at = time.monotonic()

    codes = finish(agents, 30)
    took = time.monotonic() - killed_at
    text = "\n".join(a.describe() for a in agents)
    assert codes == [1, 1], text
    assert took < 20, text  # 1 s per failing operation, a 2 s window: not 60 s, not a hang
    for agent in agents:
        errors = [
            line
            for line in agent.log.read_text(errors="replace").splitlines()
            if line.startswith("launcher: error:")
        ]
        assert len(errors) == 1, text
        assert "store unreachable for " in errors[0], text
        assert "(store_outage_timeout=2 s)" in errors[0] and f"{host}:{port}" in errors[0], text
        exit_fields = agent.named(ev.AGENT_EXIT)[-1].fields
        assert exit_fields["outcome"] == "error" and exit_fields["exit_code"] == 1, text
        assert "store unreachable for " in exit_fields["reason"], text
        assert agent.named(ev.RDZV_STORE_LOST) and not agent.named(ev.RDZV_STORE_RESTORED), text
