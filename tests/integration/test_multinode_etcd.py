"""Multi-node jobs on a REAL etcd (one member, or a 3-member cluster that loses members).

Every node is a real `python3 -m launcher` agent on loopback with its own `--local-addr`
(127.0.0.2, 127.0.0.3, ...), `--rdzv-backend etcd` and every etcd member as an endpoint.
Workers are real gloo jobs (tests/workloads/elastic.py, probe.py) or flaky.py. Each test
bounds every wait, polls files instead of sleeping, and kills what it starts (the `procs`
fixture kills agents; an agent's guardian kills its workers; worker PIDs read from the
workload's files are killed too).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from chaos.topology.etcd import EtcdCluster, free_ports
from launcher import events as ev
from launcher.events import Event
from tests.agent_node import Node
from tests.conftest import WORKLOADS, Procs, clean_env, pid_alive, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.etcd]

FORM_TIMEOUT_S = 40.0  # first round formed and workers started (3 interpreters + torch on 2 cores)
EXIT_TIMEOUT_S = 60.0
# Initial rounds close at once (MAX nodes join). A re-formation after a worker failure
# expects the previous size back, so with a node gone it closes after the last call (or when
# a watcher declares the node dead, ~3 s): 1 s keeps test 3 fast.
ELASTIC_CONF = "last_call_timeout=1"


def endpoint_text(etcd: EtcdCluster) -> str:
    return ",".join(f"{host}:{port}" for host, port in etcd.endpoints)


def start_nodes(
    procs: Procs,
    tmp_path: Path,
    *,
    count: int,
    endpoint: str,
    nnodes: str,
    nproc: int = 1,
    script: Path,
    script_args: Sequence[str],
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> list[Node]:
    """`count` agents, 127.0.0.2 first; output and event logs go to files under tmp_path."""
    run_id = f"etcd-{uuid.uuid4().hex[:10]}"
    nodes = []
    for index in range(count):
        addr = f"127.0.0.{index + 2}"
        log = tmp_path / f"agent-{addr}.log"
        events = tmp_path / f"events-{addr}.jsonl"
        args = [
            "--nnodes",
            nnodes,
            "--nproc-per-node",
            str(nproc),
            "--rdzv-backend",
            "etcd",
            "--rdzv-endpoint",
            endpoint,
            "--rdzv-id",
            run_id,
            "--log-dir",
            str(tmp_path / f"logs-{addr}"),
            "--local-addr",
            addr,
            "--event-log",
            str(events),
            *extra_args,
            str(script),
            *script_args,
        ]
        with log.open("w") as handle:
            proc = procs.launcher(
                *args, env=clean_env(**(env or {})), stdout=handle, stderr=subprocess.STDOUT
            )
        nodes.append(Node(addr=addr, proc=proc, log=log, events=events))
    return nodes


def describe_all(nodes: Sequence[Node], out: Path | None = None) -> str:
    text = "\n".join(node.describe() for node in nodes)
    if out is not None:
        for name in ("starts.txt", "finished.txt"):
            path = out / name
            body = path.read_text() if path.exists() else "(none)"
            text += f"\n--- {name}:\n{body}"
    return text


@dataclass(frozen=True)
class Start:
    """One line of elastic.py's starts.txt."""

    run_id: str
    restart_count: int
    group_rank: int
    rank: int
    world_size: int
    pid: int


def read_starts(out: Path) -> list[Start]:
    path = out / "starts.txt"
    if not path.exists():
        return []
    starts = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 7:
            continue  # a line being written
        _, run_id, restart, group_rank, rank, world, pid = parts
        starts.append(Start(run_id, int(restart), int(group_rank), int(rank), int(world), int(pid)))
    return starts


def read_finished(out: Path) -> list[tuple[int, int]]:
    path = out / "finished.txt"
    if not path.exists():
        return []
    return sorted(
        (int(p[0]), int(p[1])) for p in (line.split() for line in path.read_text().splitlines())
    )


def wait_for_starts(
    procs: Procs, out: Path, nodes: Sequence[Node], *, world: int, count: int
) -> list[Start]:
    """Waits (bounded) for `count` workers of world size `world`; tracks every worker PID."""

    def matching() -> list[Start]:
        starts = read_starts(out)
        procs.extra_pids.update(s.pid for s in starts)
        return [s for s in starts if s.world_size == world]

    assert wait_until(lambda: len(matching()) >= count, FORM_TIMEOUT_S, interval_s=0.1), (
        f"{count} workers of world {world} did not start\n{describe_all(nodes, out)}"
    )
    return matching()


def exit_event(node: Node) -> Event:
    exits = node.named(ev.AGENT_EXIT)
    assert len(exits) == 1, f"{node.addr}: expected one agent.exit\n{node.describe()}"
    return exits[0]


# -- 1. fixed size on a single etcd server ---------------------------------------------------


def test_two_nodes_fixed_size_all_reduce(
    procs: Procs, tmp_path: Path, etcd_server: EtcdCluster
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    nodes = start_nodes(
        procs,
        tmp_path,
        count=2,
        endpoint=endpoint_text(etcd_server),
        nnodes="2",
        script=WORKLOADS / "probe.py",
        nproc=2,
        script_args=[str(out), "--dist"],
    )
    codes = [node.wait() for node in nodes]
    assert codes == [0, 0], describe_all(nodes)

    records = {rank: json.loads((out / f"{rank}.json").read_text()) for rank in range(4)}
    for rank, record in records.items():
        env = record["env"]
        assert record["all_reduce"] == 0 + 1 + 2 + 3, (rank, record["all_reduce"])
        assert env["WORLD_SIZE"] == "4"
        assert env["LOCAL_WORLD_SIZE"] == "2"
        assert env["GROUP_WORLD_SIZE"] == "2"
        assert env["GROUP_RANK"] == str(rank // 2), (rank, env["GROUP_RANK"])
        assert env["LOCAL_RANK"] == str(rank % 2)
        assert env["MASTER_ADDR"] == "127.0.0.2"  # the group-rank-0 node
        assert env["TORCHELASTIC_RESTART_COUNT"] == "0"
    # Ranks 0,1 on 127.0.0.2 and 2,3 on 127.0.0.3 (newcomers ordered by --local-addr).
    for index, node in enumerate(nodes):
        rounds = node.named(ev.RDZV_ROUND_COMPLETE)
        assert len(rounds) == 1, node.describe()
        assert rounds[0].fields["group_rank"] == index
        assert rounds[0].fields["world_size"] == 4
        assert exit_event(node).fields["outcome"] == "succeeded"


# -- 2. losing the etcd leader mid-run --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("agents_talk_to", ["leader", "follower"])
def test_etcd_leader_killed_mid_run_job_finishes(
    procs: Procs, tmp_path: Path, etcd_cluster: EtcdCluster, agents_talk_to: str
) -> None:
    """Both failover paths, chosen by the endpoint order (the store starts on the first):
    'leader': requests to the dead leader are refused at once and go to a follower, which
    answers once a new leader is elected; 'follower': requests the follower forwarded to the
    dead leader hang until the store's reply timeout, then fail over."""
    out = tmp_path / "out"
    out.mkdir()
    leader = etcd_cluster.leader_index()
    first = leader if agents_talk_to == "leader" else (leader + 1) % 3
    order = [first, *(i for i in range(3) if i != first)]
    endpoint = ",".join(f"{h}:{p}" for h, p in (etcd_cluster.endpoints[i] for i in order))
    nodes = start_nodes(
        procs,
        tmp_path,
        count=3,
        endpoint=endpoint,
        nnodes="2:3",
        script=WORKLOADS / "elastic.py",
        script_args=[str(out)],
        extra_args=["--rdzv-conf", ELASTIC_CONF],
        env={"RUN_S": "8", "STEP_S": "0.2"},
    )
    wait_for_starts(procs, out, nodes, world=3, count=3)
    assert etcd_cluster.leader_index() == leader, "the leader changed before the kill"
    etcd_cluster.kill_member(leader)
    new_leader = etcd_cluster.leader_index(timeout_s=15)
    assert new_leader != leader

    codes = [node.wait() for node in nodes]
    assert codes == [0, 0, 0], describe_all(nodes, out)
    assert read_finished(out) == [(0, 3), (1, 3), (2, 3)], describe_all(nodes, out)
    # The rendezvous never noticed: one round, one start per worker, nothing re-formed.
    starts = read_starts(out)
    assert len(starts) == 3, describe_all(nodes, out)
    for node in nodes:
        restarts = node.named(ev.GROUP_RESTART)
        assert not [r for r in restarts if r.fields["charged"]], node.describe()
        assert restarts == [], f"{node.addr} re-formed after the leader loss\n{node.describe()}"
        exit_fields = exit_event(node).fields
        assert (exit_fields["outcome"], exit_fields["exit_code"]) == ("succeeded", 0)


# -- 3. losing the node that started the job ------------------------------------------------


@pytest.mark.slow
def test_group_rank_zero_node_killed_survivors_reform(
    procs: Procs, tmp_path: Path, etcd_cluster: EtcdCluster
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    nodes = start_nodes(
        procs,
        tmp_path,
        count=3,
        endpoint=endpoint_text(etcd_cluster),
        nnodes="2:3",
        script=WORKLOADS / "elastic.py",
        script_args=[str(out)],
        extra_args=["--rdzv-conf", ELASTIC_CONF],
        env={"RUN_S": "4", "STEP_S": "0.2"},
    )
    first = wait_for_starts(procs, out, nodes, world=3, count=3)
    victim, survivors = nodes[0], nodes[1:]
    assert wait_until(lambda: bool(victim.named(ev.RDZV_ROUND_COMPLETE)), 10, 0.05)
    assert victim.named(ev.RDZV_ROUND_COMPLETE)[0].fields["group_rank"] == 0, victim.describe()
    victim_workers = [s.pid for s in first if s.group_rank == 0]
    assert len(victim_workers) == 1, first

    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=10)
    # Its guardian takes its worker down with it.
    assert wait_until(lambda: not any(map(pid_alive, victim_workers)), 10, 0.05), victim_workers

    wait_for_starts(procs, out, nodes, world=2, count=2)
    codes = [node.wait() for node in survivors]
    assert codes == [0, 0], describe_all(nodes, out)
    second = [s for s in read_starts(out) if s.world_size == 2]
    assert sorted((s.group_rank, s.rank) for s in second) == [(0, 0), (1, 1)], second
    assert {s.pid for s in second}.isdisjoint(s.pid for s in first)
    survivor_workers = {
        e.fields["pid"]
        for node in survivors
        for e in node.named(ev.WORKER_STARTED)
        if e.fields["world_size"] == 2
    }
    assert survivor_workers == {s.pid for s in second}, (survivor_workers, second)
    assert read_finished(out) == [(0, 2), (1, 2)], describe_all(nodes, out)

    for node in survivors:
        rounds = node.named(ev.RDZV_ROUND_COMPLETE)
        members = rounds[-1].fields["members"]
        assert len(members) == 2, node.describe()
        assert not [m for m in members if m.startswith(f"{victim.addr}-")], node.describe()
        assert rounds[-1].fields["world_size"] == 2
        restarts = node.named(ev.GROUP_RESTART)
        assert restarts, f"{node.addr} never re-formed\n{node.describe()}"
        for restart in restarts:
            assert restart.fields["reason"] in ("node_lost", "worker_failure"), node.describe()
            assert restart.fields["charged"] is False, node.describe()
        exit_fields = exit_event(node).fields
        assert (exit_fields["outcome"], exit_fields["exit_code"]) == ("succeeded", 0)
    # Survivors keep their relative order: 127.0.0.3 becomes group rank 0.
    assert survivors[0].named(ev.RDZV_ROUND_COMPLETE)[-1].fields["group_rank"] == 0
    assert survivors[1].named(ev.RDZV_ROUND_COMPLETE)[-1].fields["group_rank"] == 1


# -- 4. a worker failure restarts every node, with one job-wide counter ----------------------


def test_worker_failure_restarts_both_nodes_job_wide_count(
    procs: Procs, tmp_path: Path, etcd_server: EtcdCluster
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    nodes = start_nodes(
        procs,
        tmp_path,
        count=2,
        endpoint=endpoint_text(etcd_server),
        nnodes="2",
        script=WORKLOADS / "flaky.py",
        script_args=[str(out)],
        extra_args=["--max-restarts", "1"],
        # Rank 1 (on 127.0.0.3) exits 3 on restart 0, once rank 0 has started (a worker the
        # failure stops before its first line writes none); rank 0 is still sleeping then.
        env={
            "FAIL_RANK": "1",
            "FAIL_TIMES": "1",
            "FAIL_CODE": "3",
            "OK_SLEEP": "3",
            "FAIL_AFTER_STARTS": "1",
        },
    )
    codes = [node.wait() for node in nodes]
    lines = (out / "starts.txt").read_text().split("\n") if (out / "starts.txt").exists() else []
    starts = sorted((int(p[0]), int(p[1])) for p in (line.split() for line in lines if line))
    assert codes == [0, 0], f"{describe_all(nodes)}\nstarts: {starts}"
    # Both nodes ran restart 0 and restart 1 (restart count 1 everywhere, never 2).
    assert starts == [(0, 0), (0, 1), (1, 0), (1, 1)], describe_all(nodes)
    for node in nodes:
        restarts = node.named(ev.GROUP_RESTART)
        assert [
            (r.fields["reason"], r.fields["restart_count"], r.fields["charged"]) for r in restarts
        ] == [("worker_failure", 1, True)], node.describe()
        assert "on 127.0.0.3" in restarts[0].fields["detail"], node.describe()
        exit_fields = exit_event(node).fields
        assert (exit_fields["outcome"], exit_fields["exit_code"], exit_fields["restarts"]) == (
            "succeeded",
            0,
            1,
        ), node.describe()


# -- 5. nothing listening at the etcd endpoint ----------------------------------------------


def test_unreachable_etcd_endpoint_fails_fast_with_one_line(procs: Procs, tmp_path: Path) -> None:
    (port,) = free_ports(1)  # released again: nothing listens there
    endpoint = f"127.0.0.1:{port}"
    began = time.monotonic()
    result = procs.run_launcher(
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "etcd",
        "--rdzv-endpoint",
        endpoint,
        "--rdzv-id",
        f"bad-{uuid.uuid4().hex[:8]}",
        "--local-addr",
        "127.0.0.2",
        "--rdzv-conf",
        "read_timeout=3",
        str(WORKLOADS / "sleeper.py"),
        str(tmp_path),
        timeout=30,
    )
    elapsed = time.monotonic() - began
    assert result.code != 0, result
    assert elapsed < 10, f"took {elapsed:.1f}s\n{result!r}"
    assert "Traceback" not in result.err + result.out, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith("launcher: error:")]
    assert len(fatal) == 1, result
    assert endpoint in fatal[0], result
    # The fatal line must be all the user sees. Currently it is preceded by
    # "[launcher] WARNING heartbeat to the rendezvous store failed (1): <same message>":
    # the heartbeat thread starts in DynamicRendezvous.__init__, before this node ever
    # joined, and the agent joins that thread (shutdown) before printing its error.
    assert lines == fatal, f"expected only the error line on stderr, got {len(lines)} lines:\n" + (
        "\n".join(lines)
    )
