"""Several real agents on loopback (one --local-addr each) forming c10d jobs of real gloo workers.

The agent at the endpoint's address (127.0.0.2) hosts the TCPStore, named with
`--rdzv-conf is_host=1` (the others get is_host=0): by torchrun's default rule every agent on
loopback could host, and whichever binds first would. Workers run tests/workloads/mesh.py:
they record their environment in starts.jsonl, all_reduce across nodes until the test
creates the stop file (or STEPS ran), and record the result in finished.jsonl. Nothing here
sleeps to synchronise: every wait polls the files or the shared event log, with a timeout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher import events as ev
from tests.conftest import WORKLOADS, Procs, clean_env, pid_alive, wait_until

pytestmark = pytest.mark.integration

HOST_ADDR = "127.0.0.2"  # hosts the rendezvous store (the endpoint's address)
ADDRS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
MESH = WORKLOADS / "mesh.py"
Record = dict[str, Any]


def free_port() -> int:
    """A port free on every local address (TCPStore's server listens on all of them)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
        return int(sock.getsockname()[1])


def unique_run_id(name: str) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{name}-{worker}-{uuid.uuid4().hex[:8]}"


def read_jsonl(path: Path) -> list[Record]:
    """Whole lines only: a line still being written is skipped."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def connected_to(pid: int, port: int) -> bool:
    """Whether process `pid` holds an established TCP connection to `port`."""
    inodes: set[str] = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    except OSError:
        return False
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "01" and int(cols[2].rsplit(":", 1)[1], 16) == port and cols[9] in inodes:
                return True
    return False


class Cluster:
    """One c10d job: agents started on demand, one shared event log, one output dir."""

    def __init__(
        self,
        procs: Procs,
        tmp_path: Path,
        *,
        nnodes: str,
        nproc: int = 1,
        max_restarts: int = 0,
        rdzv_conf: str = "last_call_timeout=1",
        script: Path = MESH,
        script_args: tuple[str, ...] = (),
        flags: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.procs = procs
        self.dir = tmp_path
        self.out = tmp_path / "out"
        self.out.mkdir()
        self.event_log = tmp_path / "events.jsonl"
        self.port = free_port()
        self.run_id = unique_run_id(tmp_path.name[:24])
        self.nnodes, self.nproc, self.max_restarts = nnodes, nproc, max_restarts
        self.rdzv_conf = rdzv_conf
        self.script, self.script_args, self.flags = script, script_args, flags
        self.env = clean_env(STEP_S="0.1", **env)
        self.agents: dict[str, subprocess.Popen[str]] = {}

    @property
    def endpoint(self) -> str:
        return f"{HOST_ADDR}:{self.port}"

    def start(self, addr: str) -> subprocess.Popen[str]:
        args = [
            "--nnodes",
            self.nnodes,
            "--nproc-per-node",
            str(self.nproc),
            "--max-restarts",
            str(self.max_restarts),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            self.endpoint,
            "--rdzv-id",
            self.run_id,
            "--rdzv-conf",
            f"{self.rdzv_conf},is_host={int(addr == HOST_ADDR)}",
            "--local-addr",
            addr,
            "--log-dir",
            str(self.dir / f"logs-{addr}"),
            "--event-log",
            str(self.event_log),
            *self.flags,
            str(self.script),
            str(self.out),
            *self.script_args,
        ]
        with (
            (self.dir / f"agent-{addr}.out").open("w") as out,
            (self.dir / f"agent-{addr}.err").open("w") as err,
        ):
            proc = self.procs.launcher(*args, env=self.env, stdout=out, stderr=err)
        self.agents[addr] = proc
        return proc

    # -- what happened ---------------------------------------------------------------------
    def events(self, name: str | None = None, node: str | None = None) -> list[ev.Event]:
        if not self.event_log.exists():
            return []
        return [
            e
            for e in ev.read_events(self.event_log)
            if (name is None or e.name == name) and (node is None or e.node_id == node)
        ]

    def starts(self) -> list[Record]:
        """Worker start records, each with the node that started it and its round."""
        started = {e.fields["pid"]: e for e in self.events(ev.WORKER_STARTED)}
        self.procs.extra_pids.update(started)
        records = []
        for rec in read_jsonl(self.out / "starts.jsonl"):
            event = started.get(rec["pid"])
            if event is not None:
                records.append({**rec, "node": event.node_id, "round": event.fields["round"]})
        return records

    def finished(self) -> list[Record]:
        return read_jsonl(self.out / "finished.jsonl")

    def round_with_world(self, world: int) -> list[Record]:
        """The start records of a round whose `world` workers all started (else [])."""
        by_round: dict[int, list[Record]] = {}
        for rec in self.starts():
            if rec["world_size"] == world:
                by_round.setdefault(rec["round"], []).append(rec)
        full = [recs for recs in by_round.values() if len(recs) == world]
        return full[-1] if full else []

    def wait_world(self, world: int, timeout_s: float) -> list[Record]:
        assert wait_until(lambda: self.round_with_world(world), timeout_s, 0.05), (
            f"no round with {world} workers started within {timeout_s}s\n{self.report()}"
        )
        return self.round_with_world(world)

    def stop_workers(self) -> None:
        (self.out / "stop").touch()

    def wait_exit(self, timeout_s: float = 60) -> dict[str, int]:
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int] = {}
        for addr, proc in self.agents.items():
            try:
                codes[addr] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"agent {addr} still running after {timeout_s}s\n{self.report()}")
        self.starts()  # tracks every worker pid for the teardown
        return codes

    def stderr(self, addr: str) -> str:
        return (self.dir / f"agent-{addr}.err").read_text()

    def report(self) -> str:
        lines = [f"run {self.run_id} endpoint {self.endpoint}"]
        for e in self.events():
            if e.name in (ev.WORKER_STARTED, ev.WORKER_EXITED):
                brief = {k: e.fields[k] for k in ("rank", "pid") if k in e.fields}
                if "exit_code" in e.fields:
                    brief["exit_code"] = e.fields["exit_code"]
            else:
                brief = dict(e.fields)
            lines.append(f"{e.wall_time:.2f} {e.node_id} {e.name} {brief}")
        for addr in self.agents:
            tail = self.stderr(addr).splitlines()[-15:]
            lines.append(f"--- stderr of {addr}:\n" + "\n".join(tail))
        return "\n".join(lines)

    def rounds(self, node: str) -> list[ev.Event]:
        return self.events(ev.RDZV_ROUND_COMPLETE, node)


@pytest.fixture
def cluster(procs: Procs, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(**kw: Any) -> Cluster:
        made.append(Cluster(procs, tmp_path, **kw))
        return made[-1]

    try:
        yield make
    finally:
        for c in made:  # track late workers so the procs fixture kills them too
            c.starts()


def assert_consistent_round(c: Cluster, records: list[Record], *, nodes: list[str]) -> None:
    """Ranks 0..W-1 unique and contiguous per node, GROUP_RANK in `nodes` order, MASTER_ADDR
    the group-rank-0 node's, one MASTER_PORT."""
    world = len(nodes) * c.nproc
    assert sorted(r["rank"] for r in records) == list(range(world)), c.report()
    for group_rank, node in enumerate(nodes):
        mine = sorted((r for r in records if r["node"] == node), key=lambda r: r["rank"])
        base = group_rank * c.nproc
        assert [r["rank"] for r in mine] == list(range(base, base + c.nproc)), c.report()
        assert [r["local_rank"] for r in mine] == list(range(c.nproc))
        assert {r["group_rank"] for r in mine} == {group_rank}, c.report()
    assert {r["world_size"] for r in records} == {world}
    assert {r["group_world_size"] for r in records} == {len(nodes)}
    assert {r["local_world_size"] for r in records} == {c.nproc}
    assert {r["master_addr"] for r in records} == {nodes[0]}, c.report()
    assert len({r["master_port"] for r in records}) == 1
    assert {r["run_id"] for r in records} == {c.run_id}


# -- fixed size --------------------------------------------------------------------------


@pytest.mark.parametrize("nnodes", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_fixed_size_job(cluster: Callable[..., Cluster], nnodes: int) -> None:
    c = cluster(nnodes=str(nnodes), nproc=2, STEPS="5")
    nodes = list(ADDRS[:nnodes])
    for addr in reversed(nodes):  # start order must not matter: group ranks follow addresses
        c.start(addr)
    codes = c.wait_exit(90)
    assert codes == dict.fromkeys(nodes, 0), c.report()
    records = c.starts()
    assert len(records) == nnodes * 2 and {r["restart_count"] for r in records} == {0}
    assert_consistent_round(c, records, nodes=nodes)
    world = nnodes * 2
    done = c.finished()
    assert len(done) == world
    assert all(d["sum"] == [world, world * (world - 1) // 2] for d in done), done
    for group_rank, node in enumerate(nodes):
        [rnd] = c.rounds(node)
        assert rnd.fields["group_rank"] == group_rank and rnd.fields["world_size"] == world
        assert rnd.fields["reason"] == "initial" and rnd.fields["master_addr"] == HOST_ADDR
        [end] = c.events(ev.AGENT_EXIT, node)
        assert end.fields["outcome"] == "succeeded" and end.fields["exit_code"] == 0


# -- elastic -----------------------------------------------------------------------------


def test_elastic_one_to_three_runs_with_two(cluster: Callable[..., Cluster]) -> None:
    c = cluster(nnodes="1:3")
    nodes = list(ADDRS[:2])
    for addr in nodes:
        c.start(addr)
    records = c.wait_world(2, 45)
    c.stop_workers()
    assert c.wait_exit(60) == dict.fromkeys(nodes, 0), c.report()
    # The first round may close with one node if the other was slow to start (last call
    # is 1 s); the other then joins by scale-up, after the node already running.
    alone = [r["node"] for r in c.starts() if r["world_size"] == 1]
    order = alone + [n for n in nodes if n not in alone]
    assert_consistent_round(c, records, nodes=order)
    assert {r["restart_count"] for r in records} == {0}
    done = [d for d in c.finished() if d["world_size"] == 2]
    assert sorted(d["rank"] for d in done) == [0, 1] and all(d["sum"] == [2, 1] for d in done)
    for restart in c.events(ev.GROUP_RESTART):
        assert restart.fields["reason"] == "scale_up" and not restart.fields["charged"]


@pytest.mark.slow
def test_scale_up_reforms_with_the_newcomer(cluster: Callable[..., Cluster]) -> None:
    c = cluster(nnodes="2:3", max_restarts=0)  # a charged re-formation would end the job
    first, newcomer = list(ADDRS[:2]), ADDRS[2]
    for addr in first:
        c.start(addr)
    before = c.wait_world(2, 45)
    assert_consistent_round(c, before, nodes=first)
    assert wait_until(lambda: len(c.events(ev.WORKER_STARTED)) == 2, 5)
    c.start(newcomer)
    after = c.wait_world(3, 45)
    c.stop_workers()
    assert c.wait_exit(60) == dict.fromkeys([*first, newcomer], 0), c.report()

    assert_consistent_round(c, after, nodes=[*first, newcomer])  # old nodes keep 0 and 1
    assert {r["restart_count"] for r in before + after} == {0}
    for node in first:
        initial, grown = c.rounds(node)
        assert initial.fields["world_size"] == 2 and initial.fields["reason"] == "initial"
        assert grown.fields["world_size"] == 3 and grown.fields["reason"] == "scale_up"
        assert grown.fields["restart_count"] == 0
        # the old workers were stopped by their agent, not failed
        old = [e for e in c.events(ev.WORKER_EXITED, node) if e.fields["round"] == 0]
        assert [e.fields["stopped_by_agent"] for e in old] == [True], c.report()
    [joined] = c.rounds(newcomer)
    assert joined.fields["group_rank"] == 2 and joined.fields["reason"] == "scale_up"
    restarts = c.events(ev.GROUP_RESTART)
    assert {e.node_id for e in restarts} >= set(first)
    for restart in restarts:
        assert restart.fields["reason"] == "scale_up", c.report()
        assert restart.fields["charged"] is False and restart.fields["restart_count"] == 0
    done = [d for d in c.finished() if d["world_size"] == 3]
    assert sorted(d["rank"] for d in done) == [0, 1, 2] and all(d["sum"] == [3, 3] for d in done)


@pytest.mark.slow
def test_scale_down_after_sigkill_of_an_agent(cluster: Callable[..., Cluster]) -> None:
    c = cluster(nnodes="2:3", max_restarts=0)  # a charged re-formation would end the job
    for addr in ADDRS:
        c.start(addr)
    full = c.wait_world(3, 60)
    assert_consistent_round(c, full, nodes=list(ADDRS))
    victim = ADDRS[1]  # not the store host; survivors 127.0.0.2 and 127.0.0.4
    [victim_worker] = [r["pid"] for r in full if r["node"] == victim]
    killed_at = time.monotonic()
    c.agents[victim].send_signal(signal.SIGKILL)
    assert c.agents[victim].wait(timeout=10) == -signal.SIGKILL
    # the guardian takes the killed agent's worker with it: no orphan
    assert wait_until(lambda: not pid_alive(victim_worker), 5), f"orphan worker {victim_worker}"
    smaller = c.wait_world(2, 20)
    reformed_s = time.monotonic() - killed_at
    assert reformed_s < 10, f"survivors re-formed after {reformed_s:.1f}s\n{c.report()}"
    c.stop_workers()
    survivors = [ADDRS[0], ADDRS[2]]
    codes = c.wait_exit(60)
    assert {a: codes[a] for a in survivors} == dict.fromkeys(survivors, 0), c.report()

    assert_consistent_round(c, smaller, nodes=survivors)  # survivors keep their order
    assert {r["restart_count"] for r in full + smaller} == {0}
    for node in survivors:
        last = c.rounds(node)[-1]
        assert last.fields["world_size"] == 2 and last.fields["restart_count"] == 0
        assert last.fields["reason"] in ("node_lost", "worker_failure"), c.report()
        [restart] = c.events(ev.GROUP_RESTART, node)
        assert restart.fields["charged"] is False, c.report()
        assert restart.fields["reason"] == last.fields["reason"]
        [end] = c.events(ev.AGENT_EXIT, node)
        assert end.fields["outcome"] == "succeeded" and end.fields["restarts"] == 0
    assert not c.events(ev.AGENT_EXIT, victim)


# -- failures and the job-wide budget ----------------------------------------------------


def test_worker_failure_restarts_every_node(cluster: Callable[..., Cluster]) -> None:
    c = cluster(nnodes="2", nproc=2, max_restarts=1, STEPS="5", FAIL_RANK="3", FAIL_TIMES="1")
    nodes = list(ADDRS[:2])
    for addr in nodes:
        c.start(addr)
    assert c.wait_exit(90) == dict.fromkeys(nodes, 0), c.report()
    records = c.starts()
    second = [r for r in records if r["restart_count"] == 1]
    assert len(second) == 4, c.report()
    assert_consistent_round(c, second, nodes=nodes)
    assert {r["restart_count"] for r in records} == {0, 1}
    done = c.finished()
    assert sorted(d["rank"] for d in done) == [0, 1, 2, 3]
    assert {d["restart_count"] for d in done} == {1} and all(d["sum"] == [4, 6] for d in done)
    for node in nodes:
        [restart] = c.events(ev.GROUP_RESTART, node)
        assert restart.fields["reason"] == "worker_failure", c.report()
        assert restart.fields["charged"] is True and restart.fields["restart_count"] == 1
        # every node's workers were restarted: new pids, the same count everywhere
        started = c.events(ev.WORKER_STARTED, node)
        assert sorted(e.fields["restart_count"] for e in started) == [0, 0, 1, 1]
        first_pids = {e.fields["pid"] for e in started if e.fields["restart_count"] == 0}
        second_pids = {e.fields["pid"] for e in started if e.fields["restart_count"] == 1}
        assert first_pids.isdisjoint(second_pids)
        [end] = c.events(ev.AGENT_EXIT, node)
        assert end.fields["outcome"] == "succeeded" and end.fields["restarts"] == 1


def test_restart_budget_is_job_wide(cluster: Callable[..., Cluster]) -> None:
    c = cluster(nnodes="2", nproc=2, max_restarts=1, FAIL_RANK="3", FAIL_TIMES="99", FAIL_CODE="7")
    healthy, failing = ADDRS[0], ADDRS[1]  # rank 3 lives on group rank 1
    c.start(healthy)
    c.start(failing)
    codes = c.wait_exit(90)
    assert codes[failing] == 7, c.report()  # the root cause's own exit code
    assert codes[healthy] != 0, c.report()

    records = c.starts()
    # exactly one restart in the whole job (a per-node budget would give two)
    assert {r["restart_count"] for r in records} == {0, 1}, c.report()
    assert [r["rank"] for r in records if r["restart_count"] == 1].count(3) == 1
    for node in (healthy, failing):
        restarts = c.events(ev.GROUP_RESTART, node)
        assert [(e.fields["restart_count"], e.fields["charged"]) for e in restarts] == [
            (1, True)
        ], c.report()
        final = c.rounds(node)[-1]
        assert final.fields["budget_spent"] is True, c.report()
        [end] = c.events(ev.AGENT_EXIT, node)
        assert end.fields["outcome"] == "failed" and end.fields["restarts"] == 1
        assert end.fields["exit_code"] == codes[node]
    assert max(e.fields["restart_count"] for e in c.events(ev.WORKER_STARTED)) == 1

    summary = c.stderr(failing)
    assert "mesh.py FAILED" in summary, summary
    root = summary[summary.index("Root Cause") :]
    assert re.search(r"rank\s+: 3 \(local_rank: 1\)", root), root
    assert re.search(r"exitcode\s+: 7 \(pid: \d+\)", root), root
    other = c.stderr(healthy)
    assert "restart budget (1) spent" in other and "rank 3" in other, other


# -- spares and a wrong endpoint ---------------------------------------------------------


@pytest.mark.slow
def test_spare_node_waits_then_exits_zero(cluster: Callable[..., Cluster]) -> None:
    c = cluster(nnodes="1:2")
    members, spare = list(ADDRS[:2]), ADDRS[2]
    for addr in members:
        c.start(addr)
    c.wait_world(2, 45)
    proc = c.start(spare)
    # the spare is in: connected to the rendezvous store while the job runs
    assert wait_until(lambda: connected_to(proc.pid, c.port), 30, 0.05), c.report()
    assert proc.poll() is None
    c.stop_workers()
    codes = c.wait_exit(60)
    assert {a: codes[a] for a in members} == dict.fromkeys(members, 0), c.report()
    for node in members:
        assert [e.fields["world_size"] for e in c.rounds(node)] == [2], c.report()
        assert c.events(ev.AGENT_EXIT, node)[0].fields["outcome"] == "succeeded"
    assert not c.rounds(spare) and not c.events(ev.WORKER_STARTED, spare), c.report()
    assert codes[spare] == 0, c.report()
    [end] = c.events(ev.AGENT_EXIT, spare)
    assert end.fields["outcome"] == "spare_done" and end.fields["exit_code"] == 0


def run_against_dead_endpoint(
    procs: Procs, tmp_path: Path, *, read_timeout_s: int
) -> tuple[subprocess.Popen[str], str, float, str]:
    """A client agent pointed at an endpoint where nothing listens: (proc, stderr, seconds
    it took, the endpoint)."""
    endpoint = f"{HOST_ADDR}:{free_port()}"
    started = time.monotonic()
    proc = procs.launcher(
        "--nnodes",
        "2",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        endpoint,
        "--rdzv-id",
        unique_run_id("bad-endpoint"),
        "--rdzv-conf",
        f"read_timeout={read_timeout_s},is_host=0",  # on loopback it would host by default
        "--local-addr",
        ADDRS[1],
        "--log-dir",
        str(tmp_path / "logs"),
        "--event-log",
        str(tmp_path / "events.jsonl"),
        str(MESH),
        str(tmp_path),
    )
    _, err = proc.communicate(timeout=60)
    return proc, err, time.monotonic() - started, endpoint


def test_bad_endpoint_fails_fast_with_one_line(procs: Procs, tmp_path: Path) -> None:
    proc, err, took_s, endpoint = run_against_dead_endpoint(procs, tmp_path, read_timeout_s=3)
    assert proc.returncode not in (0, None), err
    # read_timeout (3 s) of connect retries, and no torch import; the default would be 60 s
    assert took_s < 20, f"took {took_s:.1f}s: {err}"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("launcher: error:")]
    assert len(errors) == 1, err
    assert endpoint in errors[0], err
    assert not (tmp_path / "starts.jsonl").exists()


def test_rendezvous_error_still_logs_agent_exit(procs: Procs, tmp_path: Path) -> None:
    proc, err, _, _ = run_against_dead_endpoint(procs, tmp_path, read_timeout_s=1)
    assert proc.returncode == 1, err
    events = list(ev.read_events(tmp_path / "events.jsonl"))
    assert events[0].name == ev.AGENT_STARTED
    assert events[-1].name == ev.AGENT_EXIT, [e.name for e in events]
    assert events[-1].fields["exit_code"] == 1
