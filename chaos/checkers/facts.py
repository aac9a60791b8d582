"""Read-only views derived from a History, shared by the checkers and the timeline.

Pure functions of the history (and the scenario): no I/O, no clocks. Times: harness records
carry `t` (seconds since the run started) and `wall` (epoch seconds); events and workload
reports carry epoch seconds, turned into run time with `wall_offset`.
"""

from __future__ import annotations

import signal as _signal
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chaos.history import History
from chaos.scenario.schema import Scenario
from launcher import events as ev

SCALE_REASONS = frozenset({"scale_up", "node_lost", "node_left"})
# Faults that stop a node's agent on purpose: its exit code says nothing about the job.
NODE_STOPPING_FAULTS = frozenset({"kill_agent", "crash_node", "leave_node", "kill_store_host"})
STORE_FAULTS = frozenset({"kill_store_host", "kill_etcd_member"})

Fields = Mapping[str, Any]


def records(history: History, kind: str) -> list[dict[str, Any]]:
    return [r for r in history.records if r.get("kind") == kind]


def events_named(history: History, *names: str) -> list[tuple[int, ev.Event]]:
    """(node index, event) for every event with one of `names`, node by node in log order."""
    return [(n, e) for n in sorted(history.events) for e in history.events[n] if e.name in names]


def no_event_log_reason(history: History, scenario: Scenario) -> str | None:
    """Why there is no launcher event log to judge, or None when there is one."""
    if scenario.launcher != "launcher":
        return f"launcher is {scenario.launcher}, which writes no event log"
    if not any(history.events.values()):
        return "no event log found (nodes/<i>/events.jsonl)"
    return None


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


def signal_name(value: Any) -> str | None:
    """'SIGKILL', 'KILL', 9 and -9 all become 'SIGKILL'; None stays None."""
    number = as_int(value)
    if number is not None:
        try:
            return _signal.Signals(abs(number)).name
        except ValueError:
            return str(value)
    if isinstance(value, str) and value:
        upper = value.upper()
        return upper if upper.startswith("SIG") else "SIG" + upper
    return None


# -- time ---------------------------------------------------------------------------------
def wall_offset(history: History) -> float | None:
    """Epoch seconds at run time 0, from the harness records (None without records)."""
    for record in history.records:
        t, wall = record.get("t"), record.get("wall")
        if isinstance(t, int | float) and isinstance(wall, int | float):
            return float(wall) - float(t)
    return None


def time_origin(history: History) -> float:
    """Epoch seconds at run time 0; without harness records, the earliest time seen."""
    offset = wall_offset(history)
    if offset is not None:
        return offset
    walls = [e.wall_time for evs in history.events.values() for e in evs]
    walls += [float(s["t"]) for s in history.steps if isinstance(s.get("t"), int | float)]
    return min(walls, default=0.0)


# -- faults and nodes ---------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class FaultFire:
    index: int | None  # the fault's index in the scenario
    kind: str
    t: float  # run time
    wall: float | None
    node: int | None  # the node it hit, when it hit one
    did: Fields

    @property
    def skipped(self) -> str | None:
        """Why the fault did nothing (its target was gone, or the harness failed), or None."""
        why = self.did.get("skipped") or self.did.get("error")
        return None if why is None else str(why)


def fault_fires(history: History, scenario: Scenario) -> list[FaultFire]:
    fires = []
    for record in records(history, "fault.fire"):
        index = as_int(record.get("fault"))
        raw_did = record.get("did")
        did: dict[str, Any] = raw_did if isinstance(raw_did, dict) else {}
        kind = str(record.get("fault_kind") or "")
        planned = None
        if index is not None and 0 <= index < len(scenario.faults):
            planned = scenario.faults[index]
        if not kind and planned is not None:
            kind = planned.kind
        node = as_int(did.get("node"))
        if node is None:
            node = as_int(record.get("node"))
        if node is None and planned is not None:
            node = planned.node
        wall = record.get("wall")
        fires.append(
            FaultFire(
                index=index,
                kind=kind,
                t=float(record.get("t") or 0.0),
                wall=float(wall) if isinstance(wall, int | float) else None,
                node=node,
                did=did,
            )
        )
    return sorted(fires, key=lambda f: f.t)


def stopped_nodes(history: History, scenario: Scenario) -> set[int]:
    """Nodes whose agent a fault killed or made leave on purpose."""
    return {
        f.node
        for f in fault_fires(history, scenario)
        if f.kind in NODE_STOPPING_FAULTS and f.node is not None and f.skipped is None
    }


def cut_off_nodes(history: History, scenario: Scenario) -> set[int]:
    """Nodes a partition cut off from the job's majority: the `node` of a node or from_store
    partition; with groups, every node outside the group that keeps the c10d store host
    (node 0), or outside the largest group when the store is an etcd cluster. A toxic that
    leaves a node's store link unusable (a black hole, resets) cuts that node off too."""
    cut: set[int] = set()
    for fire in fault_fires(history, scenario):
        if fire.kind not in ("partition", "toxic") or fire.skipped is not None:
            continue
        planned = scenario.faults[fire.index] if fire.index is not None else None
        if planned is None:
            continue
        if fire.kind == "toxic":
            if planned.toxic in ("timeout", "reset_peer") and planned.node is not None:
                cut.add(planned.node)
            continue
        if not planned.groups:
            if planned.node is not None:
                cut.add(planned.node)
            continue
        if scenario.topology.rdzv_backend == "c10d":
            kept = next((g for g in planned.groups if 0 in g), max(planned.groups, key=len))
        else:
            kept = max(planned.groups, key=len)
        cut |= {n for group in planned.groups if group is not kept for n in group}
    return cut


def started_nodes(history: History, scenario: Scenario) -> list[int]:
    """The initial nodes plus every node the harness started (spares that joined)."""
    nodes = set(range(scenario.topology.nodes))
    nodes |= {n for r in records(history, "node.start") if (n := as_int(r.get("node"))) is not None}
    return sorted(nodes)


def node_ids(history: History) -> dict[int, str]:
    """The harness's node index -> the launcher's node id (its --local-addr) in its log."""
    return {node: evs[0].node_id for node, evs in sorted(history.events.items()) if evs}


# -- rounds -------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Round:
    number: int
    nodes: dict[int, Fields]  # node index -> its rendezvous.round.complete fields
    walls: dict[int, float]  # node index -> when it logged the round complete
    workers: dict[int, tuple[Fields, ...]]  # node index -> worker.started fields of the round
    worker_walls: tuple[float, ...]

    @property
    def start_wall(self) -> float:
        return min(self.walls.values())

    @property
    def budget_spent(self) -> bool:
        return any(f.get("budget_spent") for f in self.nodes.values())

    @property
    def world_size(self) -> int | None:
        sizes = Counter(as_int(f.get("world_size")) for f in self.nodes.values())
        return sizes.most_common(1)[0][0] if sizes else None

    @property
    def reason(self) -> str:
        return str(next(iter(self.nodes.values())).get("reason", ""))

    @property
    def restart_count(self) -> int:
        return max((as_int(f.get("restart_count")) or 0 for f in self.nodes.values()), default=0)


def rounds(history: History) -> list[Round]:
    """Every round some node logged complete, by round number."""
    nodes: dict[int, dict[int, Fields]] = {}
    walls: dict[int, dict[int, float]] = {}
    workers: dict[int, dict[int, list[Fields]]] = {}
    worker_walls: dict[int, list[float]] = {}
    for node, event in events_named(history, ev.RDZV_ROUND_COMPLETE, ev.WORKER_STARTED):
        number = as_int(event.fields.get("round"))
        if number is None:
            continue
        if event.name == ev.RDZV_ROUND_COMPLETE:
            nodes.setdefault(number, {})[node] = event.fields
            walls.setdefault(number, {})[node] = event.wall_time
        else:
            workers.setdefault(number, {}).setdefault(node, []).append(event.fields)
            worker_walls.setdefault(number, []).append(event.wall_time)
    return [
        Round(
            number=number,
            nodes=nodes[number],
            walls=walls[number],
            workers={n: tuple(w) for n, w in workers.get(number, {}).items()},
            worker_walls=tuple(worker_walls.get(number, [])),
        )
        for number in sorted(nodes)
    ]


@dataclass(frozen=True, kw_only=True)
class Restart:
    node: int
    round: int | None  # the round this restart formed (the node's last round complete)
    wall: float
    fields: Fields


def restarts(history: History) -> list[Restart]:
    """Every group.restart of every node, with the round it belongs to."""
    out = []
    for node in sorted(history.events):
        current: int | None = None
        for event in history.events[node]:
            if event.name == ev.RDZV_ROUND_COMPLETE:
                current = as_int(event.fields.get("round"))
            elif event.name == ev.GROUP_RESTART:
                out.append(
                    Restart(node=node, round=current, wall=event.wall_time, fields=event.fields)
                )
    return out


def restarts_by_round(history: History) -> dict[int | None, Restart]:
    """One group.restart per round (the nodes all log the same one)."""
    out: dict[int | None, Restart] = {}
    for restart in sorted(restarts(history), key=lambda r: r.wall):
        out.setdefault(restart.round, restart)
    return out


# -- workload steps -----------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Attempt:
    """The workload reports of one incarnation of the job (one start of its workers)."""

    restart_count: int
    resumed_from: int | None
    world: int | None
    first_wall: float
    last_wall: float
    first_step: int
    last_step: int
    reports: tuple[Fields, ...]


def _key(report: Fields) -> tuple[int, int | None, int | None]:
    return (
        as_int(report.get("restart_count")) or 0,
        as_int(report.get("resumed_from")),
        as_int(report.get("world")),
    )


def incarnations(history: History) -> list[list[Fields]]:
    """Workload reports split where the job started again, in time order.

    A report opens a new incarnation when its (resumed_from, world) differs from the current
    one's or its restart_count is higher, or when its rank goes back to an earlier step, or
    reports from a different pid, than it did in the current incarnation (a restart from the
    same checkpoint, or from scratch, changes nothing else). A lower restart_count alone does
    not: ft_launcher restarts a node's workers with its own count, so after one restart the
    two nodes of one incarnation report 0 and 1 (interleaved, that would split it per report)."""
    out: list[list[Fields]] = []
    seen: dict[Any, tuple[int, Any]] = {}  # rank -> (last step, pid) in the current one
    key: object = None
    count = -1
    for report in sorted(history.steps, key=lambda s: float(s.get("t") or 0.0)):
        step = as_int(report.get("step"))
        if step is None:
            continue
        rank, pid = report.get("rank"), report.get("pid")
        last = seen.get(rank)
        moved = last is not None and (step <= last[0] or (pid is not None and pid != last[1]))
        restart_count, *rest = _key(report)
        if tuple(rest) != key or restart_count > count or moved:
            out.append([])
            seen, key = {}, tuple(rest)
        count = restart_count if not seen else max(count, restart_count)
        out[-1].append(report)
        seen[rank] = (step, pid)
    return out


def attempts(history: History) -> list[Attempt]:
    """One Attempt per incarnation of the job, in time order."""
    out = []
    for rows in incarnations(history):
        restart_count, resumed_from, world = _key(rows[0])
        steps = [as_int(r.get("step")) or 0 for r in rows]
        out.append(
            Attempt(
                restart_count=restart_count,
                resumed_from=resumed_from,
                world=world,
                first_wall=float(rows[0].get("t") or 0.0),
                last_wall=float(rows[-1].get("t") or 0.0),
                first_step=min(steps),
                last_step=max(steps),
                reports=tuple(rows),
            )
        )
    return out


def final_step(history: History, scenario: Scenario) -> int:
    """The last step of the workload: steps count from 0 or 1, whichever the reports use."""
    steps = [s for r in history.steps if (s := as_int(r.get("step"))) is not None]
    base = 0 if steps and min(steps) <= 0 else 1  # no report: the workload's own convention
    return base + scenario.workload.steps - 1


def max_step(history: History) -> int | None:
    steps = [s for r in history.steps if (s := as_int(r.get("step"))) is not None]
    return max(steps, default=None)
