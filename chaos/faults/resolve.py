"""Which process is "rank r" right now: resolved when a fault fires, never planned ahead.

Ranks move between processes (and nodes) at every re-formation, so a kill_worker names a
rank and this module finds its process at the moment of the fault: the `worker.started`
events of the current round (the highest round any node has logged) across every node's
event log; without event logs (torchrun) the live process of the job whose environment
holds that RANK (so a fault can fire before any step is reported), and failing that the
newest step report of that rank. A candidate only counts if the topology still knows it as
a live process of that node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chaos.topology import procs
from chaos.topology.base import Topology
from launcher.events import WORKER_STARTED


@dataclass(frozen=True, kw_only=True)
class WorkerTarget:
    rank: int
    local_rank: int | None
    node: int
    pid: int  # as the node sees it (what event logs, error files and reports name)
    host_pid: int  # as the harness signals it (differs inside a container)
    round: int | None  # None when resolved from step reports
    source: str  # "events", "environ" or "steps"

    def as_did(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "local_rank": self.local_rank,
            "node": self.node,
            "pid": self.pid,
            "host_pid": self.host_pid,
            "round": self.round,
            "resolved_from": self.source,
        }


def _matches(rank: int | None, node: int | None, local_rank: int | None, fields: Any) -> bool:
    if rank is not None:
        return bool(fields.get("rank") == rank and (node is None or fields.get("node") == node))
    return bool(fields.get("node") == node and fields.get("local_rank") == (local_rank or 0))


def _worker_env(pid: int) -> tuple[int, int, int] | None:
    """(RANK, LOCAL_RANK, TORCHELASTIC_RESTART_COUNT) a launcher gave that process, if any."""
    env = procs.environ(pid)
    try:
        return (
            int(env["RANK"]),
            int(env["LOCAL_RANK"]),
            int(env.get("TORCHELASTIC_RESTART_COUNT", 0)),
        )
    except (KeyError, ValueError):
        return None


def _from_environ(
    topology: Topology, *, rank: int | None, node: int | None, local_rank: int | None
) -> WorkerTarget | None:
    """Without event logs: the live process of the job whose environment says it holds the
    rank (what any torchrun-compatible launcher must set). Its children inherit RANK too, so
    a process whose parent is also a candidate is not the worker; of several generations
    (one being stopped, one starting) the newest restart count, then the newest process."""
    found: dict[int, tuple[int, int, int, int]] = {}  # host pid -> (node, rank, local, restart)
    for n in sorted(topology.nodes()):
        for pid in topology.node_pids(n):
            said = _worker_env(pid)
            if said is None:
                continue
            fields = {"rank": said[0], "local_rank": said[1], "node": n}
            if _matches(rank, node, local_rank, fields):
                found[pid] = (n, *said)
    workers = [pid for pid in found if procs.parent(pid) not in found]
    if not workers:
        return None
    host = max(workers, key=lambda pid: (found[pid][3], procs.proc_start(pid) or 0))
    n, got_rank, got_local, _ = found[host]
    return WorkerTarget(
        rank=got_rank,
        local_rank=got_local,
        node=n,
        pid=procs.ns_pid(host) or host,
        host_pid=host,
        round=None,
        source="environ",
    )


def resolve_worker(
    topology: Topology, *, rank: int | None, node: int | None, local_rank: int | None
) -> WorkerTarget | str:
    """The live worker holding `rank` (or node + local_rank), or why there is none."""
    if rank is None and node is None:
        return "kill_worker needs a rank, or a node and a local_rank"
    want = f"rank {rank}" if rank is not None else f"node {node} local_rank {local_rank or 0}"
    topology.refresh()
    started = topology.view.named(WORKER_STARTED)
    if started:
        current = max(int(e.fields.get("round", -1)) for _, e in started)
        found = [
            (n, e)
            for n, e in started
            if e.fields.get("round", -1) == current
            and _matches(rank, node, local_rank, {**e.fields, "node": n})
        ]
        if not found:
            return f"no worker with {want} in the current round {current}"
        n, event = max(found, key=lambda item: item[1].wall_time)
        pid = int(event.fields["pid"])
        host = topology.host_pid(n, pid)
        if host is None:
            return f"the worker with {want} (pid {pid}, node {n}) is no longer running"
        return WorkerTarget(
            rank=int(event.fields["rank"]),
            local_rank=event.fields.get("local_rank"),
            node=n,
            pid=pid,
            host_pid=host,
            round=current,
            source="events",
        )
    by_env = _from_environ(topology, rank=rank, node=node, local_rank=local_rank)
    if by_env is not None:
        return by_env
    rows = [r for r in topology.view.steps if _matches(rank, node, local_rank, r)]
    if not rows:
        return f"no live worker of the job has {want} in its environment, and no step report"
    row = rows[-1]
    reporter, owner = row.get("pid"), row.get("node")
    if not isinstance(reporter, int) or not isinstance(owner, int):
        return f"the last step report of {want} names no pid and node"
    host = topology.host_pid(owner, reporter)
    if host is None:
        return f"the last worker that reported {want} (pid {reporter}) is no longer running"
    return WorkerTarget(
        rank=int(row["rank"]),
        local_rank=row.get("local_rank"),
        node=owner,
        pid=reporter,
        host_pid=host,
        round=None,
        source="steps",
    )
