"""Causes before symptoms, with real gloo workers on two agents (c10d on loopback).

tests/workloads/cause.py makes the issue's timing happen on purpose: the failing worker
closes its gloo group while its victim is blocked in an all_reduce, waits until the victim
has written "Connection closed by peer" to its error file, then exits 3 a second and a half
later; every other worker lingers after its symptom until its agent stops it. Ordered by
time, the victim (stopped by its agent after writing the error file) was the root cause.
The peer-only case kills a whole node: the survivor's worker sees the broken connection,
and the cause is the lost node.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from chaos.checkers.root_cause import launcher_root_cause
from chaos.history import History
from launcher import events as ev
from tests.conftest import WORKLOADS, Procs, wait_until
from tests.integration.test_multinode import ADDRS, Cluster

pytestmark = pytest.mark.integration

CAUSE = WORKLOADS / "cause.py"
PEER_GONE = re.compile(r"Connection (closed|reset) by peer")


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


def chaos_view(c: Cluster, nodes: list[str]) -> tuple[int, Mapping[str, Any], str] | None:
    """What the chaos root_cause checker blames, from the agents' shared event log."""
    events = {i: tuple(c.events(node=addr)) for i, addr in enumerate(nodes)}
    history = History(run_dir=c.dir, records=(), events=events, steps=())
    return launcher_root_cause(history)


def root_causes(c: Cluster) -> list[tuple[str, Mapping[str, Any]]]:
    return [
        (e.node_id, e.fields["root_cause"])
        for e in c.events()
        if e.name in (ev.GROUP_FAILED, ev.AGENT_EXIT) and e.fields.get("root_cause")
    ]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("cause", "victim"), [(1, 0), (0, 1)], ids=["rank1-exits", "rank0-exits"])
def test_own_exit_outranks_the_stopped_symptom_written_first(
    cluster: Callable[..., Cluster], cause: int, victim: int
) -> None:
    c = cluster(
        nnodes="2",
        nproc=2,
        script=CAUSE,
        CAUSE_RANK=str(cause),
        VICTIM_RANK=str(victim),
        CAUSE_CODE="3",
        LINGER_RANKS="all",
    )
    nodes = list(ADDRS[:2])  # ranks 0 and 1 on 127.0.0.2, 2 and 3 on 127.0.0.3
    home, other = nodes
    for addr in nodes:
        c.start(addr)
    codes = c.wait_exit(120)
    assert codes[home] == 3, c.report()  # the root cause's own exit code
    assert codes[other] != 0, c.report()

    [failed] = c.events(ev.GROUP_FAILED, home)
    by_rank = {f["rank"]: f for f in failed.fields["failures"]}
    root = failed.fields["root_cause"]
    assert (root["rank"], root["exit_code"], root["kind"]) == (cause, 3, "self"), c.report()
    symptom = by_rank[victim]
    # The order of events: the victim's error file was stamped first, then the
    # agent saw the cause exit and stopped the victim.
    assert PEER_GONE.search(symptom["message"] or ""), symptom
    assert symptom["kind"] == "stopped" and symptom["stopped_by_agent"] is True, symptom
    assert symptom["exit_code"] == -signal.SIGTERM, symptom
    assert symptom["precise_at"] < root["precise_at"] - 1.0, (symptom, root)
    [end] = c.events(ev.AGENT_EXIT, home)
    assert end.fields["root_cause"]["rank"] == cause and end.fields["exit_code"] == 3

    # No agent blames the victim, nor anything but the cause as a cause.
    for node, blamed in root_causes(c):
        assert blamed["rank"] != victim, (node, blamed)
        assert blamed["kind"] != "self" or blamed["rank"] == cause, (node, blamed)
    for e in c.events(ev.GROUP_FAILED, other):  # symptoms at most, if they exited first
        assert e.fields["root_cause"]["kind"] in ("symptom", "stopped"), c.report()

    summary = c.stderr(home)
    root_text = summary[summary.index("Root Cause") :]
    assert re.search(rf"rank\s+: {cause} \(local_rank: {cause}\)", root_text), root_text
    assert re.search(r"exitcode\s+: 3 \(pid: \d+\) \n", root_text), root_text
    far = c.stderr(other)
    if not c.events(ev.GROUP_FAILED, other):
        assert f"rank {cause} (local_rank {cause}" in far and "exit code 3" in far, far

    found = chaos_view(c, nodes)
    assert found is not None
    node, blamed, _ = found
    assert (node, blamed["rank"], blamed["exit_code"]) == (0, cause, 3), found


@pytest.mark.timeout(180)
def test_a_crashed_node_is_the_cause_not_the_survivors_symptom(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster(nnodes="1:2", nproc=1, script=CAUSE, CAUSE_RANK="-1")
    survivor, victim = ADDRS[0], ADDRS[1]  # the survivor hosts the rendezvous store
    for addr in (survivor, victim):
        c.start(addr)
    c.wait_world(2, 60)
    assert wait_until(
        lambda: (c.out / "ready-0").exists() and (c.out / "ready-1").exists(), 60, 0.05
    ), c.report()
    [worker] = [e.fields["pid"] for e in c.events(ev.WORKER_STARTED, victim)]
    # The whole node at once: its agent and its worker.
    c.agents[victim].send_signal(signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    assert c.agents[victim].wait(timeout=10) == -signal.SIGKILL
    c.wait_world(1, 60)  # the survivor goes on alone
    c.stop_workers()
    assert c.agents[survivor].wait(timeout=60) == 0, c.report()

    # Its worker failed on the broken connection first: a symptom. It waits (up to the
    # agent's SYMPTOM_GRACE_S) for the cause; when the watcher declares the node lost first,
    # the symptom is never reported, else it is, marked as a symptom.
    for failed in c.events(ev.GROUP_FAILED, survivor):
        root = failed.fields["root_cause"]
        assert root["kind"] == "symptom" and PEER_GONE.search(root["message"] or ""), c.report()
    # The rendezvous names the cause: the lost node, not charged to the budget.
    [restart] = c.events(ev.GROUP_RESTART, survivor)
    assert restart.fields["reason"] == "node_lost", c.report()
    assert restart.fields["charged"] is False and victim in restart.fields["detail"]
    [end] = c.events(ev.AGENT_EXIT, survivor)
    assert end.fields["outcome"] == "succeeded" and end.fields["root_cause"] is None

    found = chaos_view(c, [survivor, victim])
    assert found is not None
    node, blamed, where = found
    assert node == 1 and blamed["kind"] == "node_lost" and victim in blamed["detail"], found
    assert "node_lost" in where
