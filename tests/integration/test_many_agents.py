"""Twenty real agents on one machine (issue 11, part 3; bench/many_agents.py runs a hundred).

Every agent is a `python3 -m launcher` process with its own `--local-addr 127.0.0.N`, c10d
with the store hosted by the first (`is_host=1`, the others `is_host=0`), and one no-torch
worker that idles until a stop file appears. The round forms at 20, a SIGKILLed agent is
re-formed around (19), a newcomer is taken in (20), and all exit 0 when the workers do.
Every wait is bounded; agents are killed by the `procs` fixture, workers by their agents'
guardians and by pid (from their stamps).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from launcher import events as ev
from tests.agent_node import Node
from tests.conftest import ROOT, Procs, clean_env, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AGENTS = 20
# The bench's worker: stamps `<time> <world> <group_rank> <restart> <pid>`, idles until STOP.
WORKER = ROOT / "bench" / "workloads" / "until_file.py"
FORM_TIMEOUT_S = 40.0  # 20 interpreters starting on 2 shared cores
REFORM_TIMEOUT_S = 20.0  # loss: 3 s heartbeat timeout, then one round


class Job:
    def __init__(self, procs: Procs, tmp_path: Path) -> None:
        self.procs, self.tmp = procs, tmp_path
        self.stamps, self.stop = tmp_path / "stamps.txt", tmp_path / "stop"
        with socket.socket() as sock:  # a free port: bind port 0
            sock.bind(("127.0.0.2", 0))
            port = sock.getsockname()[1]
        self.args = ["--nnodes", f"{AGENTS // 2}:{AGENTS}", "--nproc-per-node", "1"]
        self.args += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.2:{port}"]
        self.args += ["--rdzv-id", f"many-{uuid.uuid4().hex[:10]}"]
        self.nodes: dict[str, Node] = {}

    def start(self, index: int) -> Node:
        addr = f"127.0.0.{index + 2}"
        log, events = self.tmp / f"agent-{addr}.log", self.tmp / f"events-{addr}.jsonl"
        args = [*self.args, "--rdzv-conf", f"is_host={int(index == 0)}", "--local-addr", addr]
        args += ["--log-dir", str(self.tmp / f"logs-{addr}"), "--event-log", str(events)]
        args += [str(WORKER), str(self.stamps), str(self.stop)]
        with log.open("w") as handle:
            proc = self.procs.launcher(
                *args, env=clean_env(), stdout=handle, stderr=subprocess.STDOUT
            )
        self.nodes[addr] = node = Node(addr=addr, proc=proc, log=log, events=events)
        return node

    def running(self) -> list[Node]:
        return [node for node in self.nodes.values() if node.proc.poll() is None]

    def formed(self, world: int, after: float) -> bool:
        """Every running agent logged a round of `world` nodes after `after`, and they agree
        on one round number."""
        self._track_workers()
        nodes = self.running()
        rounds = set()
        for node in nodes:
            found = [
                e
                for e in node.named(ev.RDZV_ROUND_COMPLETE)
                if e.fields["group_world_size"] == world and e.wall_time >= after
            ]
            if not found:
                return False
            rounds.add(found[-1].fields["round"])
        return len(nodes) == world and len(rounds) == 1

    def _track_workers(self) -> None:
        if self.stamps.exists():
            for line in self.stamps.read_text().splitlines():
                if line.endswith(tuple("0123456789")) and len(parts := line.split()) == 5:
                    self.procs.extra_pids.add(int(parts[4]))

    def describe(self, nodes: Sequence[Node] | None = None) -> str:
        shown = list(nodes if nodes is not None else self.nodes.values())
        dead = [n for n in shown if n.proc.poll() is not None]
        return "\n".join(n.describe() for n in (dead or shown)[:4])


def test_twenty_agents_form_lose_one_and_take_a_newcomer(procs: Procs, tmp_path: Path) -> None:
    job = Job(procs, tmp_path)
    t0 = time.time()
    for index in range(AGENTS):
        job.start(index)
    assert wait_until(lambda: job.formed(AGENTS, t0), FORM_TIMEOUT_S, 0.2), job.describe()

    # Node loss: SIGKILL an agent (not the store's host); the 19 others re-form without it.
    victim = job.nodes[f"127.0.0.{AGENTS // 2 + 2}"]
    t_kill = time.time()
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=10)
    assert wait_until(lambda: job.formed(AGENTS - 1, t_kill), REFORM_TIMEOUT_S, 0.2), job.describe()
    reasons = {
        e.fields["reason"]
        for n in job.running()
        for e in n.named(ev.RDZV_ROUND_COMPLETE)
        if e.wall_time >= t_kill
    }
    assert reasons == {"node_lost"}, reasons

    # A newcomer at a new address: the job is back to 20, the newcomer among them.
    t_join = time.time()
    joiner = job.start(AGENTS)
    assert wait_until(lambda: job.formed(AGENTS, t_join), REFORM_TIMEOUT_S, 0.2), job.describe()
    assert joiner.named(ev.RDZV_ROUND_COMPLETE)[-1].fields["group_world_size"] == AGENTS

    # The workers of the last round end; every running agent exits 0.
    job.stop.touch()
    codes = {node.addr: node.wait(30.0) for node in job.running()}
    assert set(codes.values()) == {0} and len(codes) == AGENTS, (codes, job.describe())
