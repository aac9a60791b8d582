"""Synthetic run directories for the checker and report tests (no process is started).

RunBuilder collects harness records, per-node launcher events (written through
launcher.events.EventLog with injected clocks) and workload reports, then writes the run
directory layout that chaos.history.load_history reads. `kill_worker_run` and
`scale_up_run` tell two complete, healthy stories that tests then break one fact at a time.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from chaos.scenario.schema import (
    Expectations,
    Fault,
    IntRange,
    RootCause,
    Scenario,
    Topology,
    Trigger,
    Workload,
)
from launcher import events as ev

T0 = 1_700_000_000.0  # epoch seconds at run time 0


class _Clock:
    """Run time `now`, as the agent's wall and monotonic clocks would read it."""

    def __init__(self) -> None:
        self.now = 0.0

    def wall(self) -> float:
        return T0 + self.now

    def mono(self) -> float:
        return 500.0 + self.now


class RunBuilder:
    def __init__(self, root: Path, *, nodes: int = 2, nproc: int = 2) -> None:
        self.root = root
        self.nproc = nproc
        self.records: list[dict[str, Any]] = []
        self.events: dict[int, list[tuple[float, str, dict[str, Any]]]] = {}
        self.steps: list[dict[str, Any]] = []
        self.record("run.start", 0.0, seed=7)
        for node in range(nodes):
            self.start_node(node, 0.01)

    def addr(self, node: int) -> str:
        return f"10.0.0.{node + 1}"

    def record(self, kind: str, t: float, **fields: Any) -> None:
        self.records.append({"kind": kind, "t": t, "wall": T0 + t, **fields})

    def emit(self, node: int, t: float, name: str, **fields: Any) -> None:
        self.events.setdefault(node, []).append((t, name, fields))

    def start_node(self, node: int, t: float) -> None:
        self.record("node.start", t, node=node, pid=1000 + node, addr=self.addr(node))
        self.emit(node, t + 0.01, ev.AGENT_STARTED, nproc_per_node=self.nproc)

    def form_round(
        self,
        t: float,
        number: int,
        nodes: list[int],
        *,
        reason: str = "initial",
        restart_count: int = 0,
        charged: bool = False,
    ) -> None:
        """Every node of `nodes` (in group-rank order) logs the round and starts workers."""
        world = len(nodes) * self.nproc
        for group_rank, node in enumerate(nodes):
            common = {"round": number, "restart_count": restart_count}
            self.emit(
                node,
                t,
                ev.RDZV_ROUND_COMPLETE,
                **common,
                reason=reason,
                group_rank=group_rank,
                group_world_size=len(nodes),
                world_size=world,
                base_rank=group_rank * self.nproc,
                members=[self.addr(n) for n in nodes],
                master_addr=self.addr(nodes[0]),
                master_port=29500,
                budget_spent=False,
            )
            if reason != "initial":
                self.emit(
                    node,
                    t + 0.001,
                    ev.GROUP_RESTART,
                    reason=reason,
                    restart_count=restart_count,
                    max_restarts=3,
                    charged=charged,
                    detail="",
                )
            for local in range(self.nproc):
                self.emit(
                    node,
                    t + 0.01 + 0.001 * local,
                    ev.WORKER_STARTED,
                    **common,
                    local_rank=local,
                    rank=group_rank * self.nproc + local,
                    group_rank=group_rank,
                    world_size=world,
                    local_world_size=self.nproc,
                    group_world_size=len(nodes),
                    pid=self.pid(number, node, local),
                )

    @staticmethod
    def pid(number: int, node: int, local: int) -> int:
        return 5000 + 100 * number + 10 * node + local

    def worker_exit(
        self, node: int, t: float, *, number: int, rank: int, local: int, code: int, stopped: bool
    ) -> None:
        self.emit(
            node,
            t,
            ev.WORKER_EXITED,
            round=number,
            rank=rank,
            local_rank=local,
            pid=self.pid(number, node, local),
            exit_code=code,
            signal={-9: "SIGKILL", -15: "SIGTERM"}.get(code),
            stopped_by_agent=stopped,
        )

    def report_steps(
        self,
        t: float,
        first: int,
        last: int,
        *,
        restart_count: int,
        resumed: int | None,
        world: int,
    ) -> None:
        for i, step in enumerate(range(first, last + 1)):
            for rank in range(world):
                self.steps.append(
                    {
                        "t": T0 + t + 0.1 * i,
                        "rank": rank,
                        "world": world,
                        "step": step,
                        "restart_count": restart_count,
                        "resumed_from": resumed,
                    }
                )

    def finish(self, t: float, nodes: list[int], *, exit_code: int = 0, **end: Any) -> None:
        for node in nodes:
            outcome = "succeeded" if exit_code == 0 else "failed"
            self.emit(node, t, ev.AGENT_EXIT, outcome=outcome, exit_code=exit_code, root_cause=None)
            self.record("node.exit", t + 0.01, node=node, exit_code=exit_code)
        fields = {"timed_out": False, "leftover_pids": [], "bound_ports": [], **end}
        self.record("run.end", t + 0.1, **fields)

    def edit(self, node: int, name: str, match: dict[str, Any], **changes: Any) -> int:
        """Changes the fields of `node`'s `name` events matching `match`; returns how many."""
        count = 0
        for i, (t, ename, fields) in enumerate(self.events[node]):
            if ename == name and all(fields.get(k) == v for k, v in match.items()):
                self.events[node][i] = (t, ename, {**fields, **changes})
                count += 1
        return count

    def edit_record(self, kind: str, match: dict[str, Any], **changes: Any) -> int:
        count = 0
        for record in self.records:
            if record["kind"] == kind and all(record.get(k) == v for k, v in match.items()):
                record.update(changes)
                count += 1
        return count

    def drop(self, node: int, name: str, match: dict[str, Any]) -> None:
        self.events[node] = [
            item
            for item in self.events[node]
            if not (item[1] == name and all(item[2].get(k) == v for k, v in match.items()))
        ]

    def write(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "history.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in sorted(self.records, key=lambda r: r["t"]))
        )
        for old in self.root.glob("nodes/*/events.jsonl"):
            old.unlink()  # EventLog appends: a second write() must not double the events
        for node, items in self.events.items():
            clock = _Clock()
            log = ev.EventLog(
                run_id="job",
                node_id=self.addr(node),
                paths=[self.root / "nodes" / str(node) / "events.jsonl"],
                wall_clock=clock.wall,
                mono_clock=clock.mono,
            )
            for t, name, fields in sorted(items, key=lambda item: item[0]):
                clock.now = t
                log.emit(name, **fields)
            log.close()
        (self.root / "workload").mkdir(exist_ok=True)
        (self.root / "workload" / "steps.jsonl").write_text(
            "".join(json.dumps(s) + "\n" for s in self.steps)
        )
        return self.root


def kill_worker_scenario(**expect: Any) -> Scenario:
    base = Expectations(
        restarts=IntRange(low=1, high=1),
        restarts_by_reason={"worker_failure": IntRange(low=1, high=1)},
        final_world_size=4,
        root_cause=RootCause(rank=1, node=0, signal="SIGKILL"),
        detect_within_s=1.0,
        recover_within_s=2.0,
    )
    return Scenario(
        name="kill-one-worker",
        seed=7,
        topology=Topology(nodes=2, nproc_per_node=2),
        workload=Workload(steps=40, step_s=0.1, checkpoint_every=5),
        faults=(Fault(kind="kill_worker", trigger=Trigger(kind="at_s", at_s=2.0), rank=1),),
        expect=replace(base, **expect),
    )


def kill_worker_run(root: Path) -> RunBuilder:
    """2 nodes x 2 workers; rank 1 (node 0) SIGKILLed at t=2.0; one charged restart from the
    step-10 checkpoint (last step before: 13); the job then finishes all 40 steps."""
    b = RunBuilder(root)
    b.form_round(0.1, 0, [0, 1])
    b.report_steps(0.5, 0, 13, restart_count=0, resumed=None, world=4)
    b.record(
        "fault.fire",
        2.0,
        fault=0,
        fault_kind="kill_worker",
        did={"rank": 1, "node": 0, "pid": b.pid(0, 0, 1), "signal": "SIGKILL"},
    )
    b.worker_exit(0, 2.01, number=0, rank=1, local=1, code=-9, stopped=False)
    b.worker_exit(0, 2.02, number=0, rank=0, local=0, code=-15, stopped=True)
    failure = {
        "rank": 1,
        "local_rank": 1,
        "pid": b.pid(0, 0, 1),
        "exit_code": -9,
        "signal": "SIGKILL",
        "message": None,
        "timestamp": T0 + 2.01,
        "host": "h0",
    }
    b.emit(0, 2.03, ev.GROUP_FAILED, restart_count=0, failures=[failure])
    b.emit(1, 2.05, ev.RDZV_CHANGED, reason="worker_failure")
    b.worker_exit(1, 2.06, number=0, rank=2, local=0, code=-15, stopped=True)
    b.worker_exit(1, 2.06, number=0, rank=3, local=1, code=-15, stopped=True)
    b.form_round(2.5, 1, [0, 1], reason="worker_failure", restart_count=1, charged=True)
    b.report_steps(2.7, 11, 39, restart_count=1, resumed=10, world=4)
    for node in (0, 1):
        for local in range(2):
            b.worker_exit(
                node, 5.7, number=1, rank=node * 2 + local, local=local, code=0, stopped=False
            )
        b.emit(node, 5.75, ev.GROUP_SUCCEEDED, restart_count=1)
    b.finish(5.8, [0, 1])
    return b


def scale_up_scenario(**expect: Any) -> Scenario:
    return Scenario(
        name="spare-joins",
        seed=3,
        topology=Topology(nodes=2, spares=1, nproc_per_node=2),
        workload=Workload(steps=40, step_s=0.1, checkpoint_every=5),
        faults=(Fault(kind="join_node", trigger=Trigger(kind="at_s", at_s=2.0), node=2),),
        expect=replace(
            Expectations(restarts=IntRange(low=0, high=0), final_world_size=6), **expect
        ),
    )


def scale_up_run(root: Path) -> RunBuilder:
    """2 nodes x 2 workers; node 2 joins at t=2.0; an uncharged scale_up round of 6 workers."""
    b = RunBuilder(root)
    b.form_round(0.1, 0, [0, 1])
    b.report_steps(0.5, 0, 13, restart_count=0, resumed=None, world=4)
    b.record("fault.fire", 2.0, fault=0, fault_kind="join_node", did={"node": 2})
    b.start_node(2, 2.0)
    for node in (0, 1):
        b.emit(node, 2.2, ev.RDZV_CHANGED, reason="scale_up")
        for local in range(2):
            b.worker_exit(
                node, 2.25, number=0, rank=node * 2 + local, local=local, code=-15, stopped=True
            )
    b.form_round(2.5, 1, [0, 1, 2], reason="scale_up", restart_count=0, charged=False)
    b.report_steps(2.7, 11, 39, restart_count=0, resumed=10, world=6)
    b.finish(5.8, [0, 1, 2])
    return b


def budget_spent_run(root: Path) -> RunBuilder:
    """max_restarts 0: rank 3 (node 1) exits 3 at t=1.5; the next round has budget_spent and
    both agents fail with exit code 1 (node 1 names the root cause)."""
    b = RunBuilder(root)
    b.form_round(0.1, 0, [0, 1])
    b.report_steps(0.5, 0, 9, restart_count=0, resumed=None, world=4)
    did = {"rank": 3, "node": 1, "pid": b.pid(0, 1, 1), "exit_code": 3, "signal": None}
    b.record("fault.fire", 1.5, fault=0, fault_kind="kill_worker", did=did)
    b.worker_exit(1, 1.52, number=0, rank=3, local=1, code=3, stopped=False)
    b.worker_exit(1, 1.53, number=0, rank=2, local=0, code=-15, stopped=True)
    failure = {
        "rank": 3,
        "local_rank": 1,
        "pid": b.pid(0, 1, 1),
        "exit_code": 3,
        "signal": None,
        "message": "exit code 3",
        "timestamp": T0 + 1.52,
        "host": "h1",
    }
    b.emit(1, 1.54, ev.GROUP_FAILED, restart_count=0, failures=[failure])
    b.emit(0, 1.6, ev.RDZV_CHANGED, reason="worker_failure")
    for local in range(2):
        b.worker_exit(0, 1.61, number=0, rank=local, local=local, code=-15, stopped=True)
    for group_rank, node in enumerate((0, 1)):
        b.emit(
            node,
            1.8,
            ev.RDZV_ROUND_COMPLETE,
            round=1,
            reason="worker_failure",
            group_rank=group_rank,
            group_world_size=2,
            world_size=4,
            base_rank=group_rank * 2,
            restart_count=1,
            members=[b.addr(0), b.addr(1)],
            master_addr=b.addr(0),
            master_port=29500,
            budget_spent=True,
        )
        cause = failure if node == 1 else None
        b.emit(node, 1.9, ev.AGENT_EXIT, outcome="failed", exit_code=1, root_cause=cause)
        b.record("node.exit", 1.95, node=node, exit_code=1)
    b.record("run.end", 2.0, timed_out=False, leftover_pids=[], bound_ports=[])
    return b


def torchrun_run(root: Path) -> RunBuilder:
    """The kill_worker story under torchrun: no event log, only exits and workload reports."""
    b = RunBuilder(root)
    b.events.clear()
    b.report_steps(0.5, 1, 13, restart_count=0, resumed=None, world=4)
    b.record("fault.fire", 2.0, fault=0, fault_kind="kill_worker", did={"rank": 1, "node": 0})
    b.report_steps(2.7, 11, 40, restart_count=1, resumed=10, world=4)
    for node in (0, 1):
        b.record("node.exit", 5.8, node=node, exit_code=0)
    b.record("run.end", 5.9, timed_out=False, leftover_pids=[], bound_ports=[])
    return b
