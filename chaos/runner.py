"""Run one scenario: topology up, agents started, faults fired, history written, all torn down.

    run_scenario(scenario, run_dir=..., seed=..., backend=..., launcher=..., progress=...)

The run directory layout and record formats are chaos/history.py's. The runner is a single
loop (every TICK_S): learn new processes and log lines, fire the faults that are due, heal
the pauses that are over, record agents that exited. It ends when every started agent has
exited or the scenario's timeout passes. Then, before killing anything, it records what the
launcher left behind (processes of the job still alive after a short grace, ports still
bound): that is what the hygiene checker judges. Teardown kills every process of the job by
(pid, start time) and stops the store, on every path: normal end, exception, Ctrl-C, SIGTERM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from chaos import faults
from chaos.faults.triggers import is_due, plan
from chaos.history import HistoryWriter
from chaos.scenario.loader import dump_scenario
from chaos.scenario.schema import Fault, Scenario
from chaos.schedule import PlannedFault
from chaos.topology import JobView, Topology, TopologyError, make_topology

TICK_S = 0.05
LEFTOVER_GRACE_S = 3.0  # how long a launcher may take to reap its last processes after exiting


class RunError(RuntimeError):
    """The scenario cannot be run as asked (an unsupported fault on this topology, ...)."""


@dataclass(frozen=True, kw_only=True)
class RunResult:
    run_dir: Path
    seed: int
    backend: str
    launcher: str
    run_id: str
    timed_out: bool
    duration_s: float
    exit_codes: dict[int, int | None]  # node index -> agent exit code (negative: signal)
    fired: tuple[int, ...]  # indices of the faults that fired (skipped ones included)
    unfired: tuple[int, ...]  # faults whose trigger never came
    leftover_pids: tuple[int, ...]
    bound_ports: tuple[int, ...]


@dataclass
class _Heal:
    index: int
    fault: Fault
    did: dict[str, Any]
    due_s: float  # job time


class _Terminated(SystemExit):
    """SIGTERM to the harness, raised where the runner is, so cleanup runs; uncaught, Python
    exits with 128 + 15 and no traceback, like a process killed by it."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; the caller owns signals then
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_scenario(scenario: Scenario, run_dir: Path, seed: int) -> None:
    """scenario.yaml is the scenario as run (command-line overrides applied), written by the
    loader so `chaos check RUN_DIR` loads it back; `seed` holds the seed alone."""
    (run_dir / "scenario.yaml").write_text(dump_scenario(scenario))
    (run_dir / "seed").write_text(f"{seed}\n")


def run_scenario(
    scenario: Scenario,
    *,
    run_dir: Path,
    seed: int | None = None,
    backend: str | None = None,
    launcher: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunResult:
    """Runs `scenario` once into `run_dir`. `seed`, `backend` and `launcher` default to the
    scenario's. Raises RunError before starting anything when the scenario cannot run on this
    topology; any other exception (or Ctrl-C) still tears everything down first."""
    seed = scenario.seed if seed is None else seed
    backend = backend or scenario.topology.backend
    launcher = launcher or scenario.launcher
    scenario = dataclasses.replace(
        scenario,
        seed=seed,
        launcher=launcher,
        topology=dataclasses.replace(scenario.topology, backend=backend),
    )
    run_dir = Path(run_dir)
    if (run_dir / "history.jsonl").exists():
        # Appending a second run to a history would make both unreadable.
        raise RunError(f"{run_dir} already holds a run (history.jsonl); pick a new run dir")
    try:
        planned = plan(scenario, seed)
    except ValueError as err:
        raise RunError(f"cannot schedule {scenario.name}: {err}") from err
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_scenario(scenario, run_dir, seed)
    view = JobView(run_dir)
    try:
        topology = make_topology(backend, scenario, run_dir=run_dir, launcher=launcher, view=view)
    except TopologyError as err:
        raise RunError(str(err)) from err
    for index, fault in enumerate(scenario.faults):
        support = topology.supports(fault.kind)
        if not support:
            raise RunError(f"fault {index} ({fault.kind}) on --backend {backend}: {support.reason}")
    run = _Run(scenario, topology, planned, run_dir=run_dir, seed=seed, say=progress or _quiet)
    run.execute(backend=backend, launcher=launcher)
    return RunResult(
        run_dir=run_dir,
        seed=seed,
        backend=backend,
        launcher=launcher,
        run_id=topology.run_id,
        timed_out=run.timed_out,
        duration_s=round(run.duration_s, 3),
        exit_codes=dict(run.exit_codes),
        fired=tuple(run.fired),
        unfired=tuple(run.unfired()),
        leftover_pids=tuple(run.leftovers),
        bound_ports=tuple(run.ports),
    )


def _quiet(line: str) -> None:
    return None


class _Run:
    """The state of one run while it executes (single-threaded: one loop, no callbacks)."""

    def __init__(
        self,
        scenario: Scenario,
        topology: Topology,
        planned: list[PlannedFault],
        *,
        run_dir: Path,
        seed: int,
        say: Callable[[str], None],
    ) -> None:
        self.scenario = scenario
        self.topology = topology
        self.seed = seed
        self.say = say
        self.planned = planned
        self.ctx = faults.FaultContext(
            scenario=scenario, topology=topology, control_dir=run_dir / "workload" / "control"
        )
        self.history_path = run_dir / "history.jsonl"
        (run_dir / "workload").mkdir(exist_ok=True)
        self.history: HistoryWriter | None = None
        self.start = time.monotonic()
        self.duration_s = 0.0
        self.timed_out = False
        self.exit_codes: dict[int, int | None] = {}
        self.fired: list[int] = []
        self.heals: list[_Heal] = []
        self.leftovers: list[int] = []
        self.ports: list[int] = []

    def unfired(self) -> list[int]:
        return [p.index for p in self.planned if p.index not in self.fired]

    def record(self, kind: str, **fields: Any) -> None:
        if self.history is not None:
            self.history.write(kind, wall=time.time(), mono=time.monotonic(), **fields)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    # -- the run -----------------------------------------------------------------------------
    def execute(self, *, backend: str, launcher: str) -> None:
        error: str | None = None
        try:
            with _sigterm_raises():
                self.topology.up()  # etcd first: its start-up is not the job's time
                self.start = time.monotonic()
                self.history = HistoryWriter(self.history_path, clock_start=self.start)
                self.record(
                    "run.start",
                    scenario=self.scenario.name,
                    seed=self.seed,
                    backend=backend,
                    launcher=launcher,
                    run_id=self.topology.run_id,
                    rdzv_backend=self.scenario.topology.rdzv_backend,
                    endpoint=self.topology.store.endpoint,
                    nodes=self.scenario.topology.nodes,
                    spares=self.scenario.topology.spares,
                    timeout_s=self.scenario.timeout_s,
                    planned=[
                        {
                            "fault": p.index,
                            "kind": p.fault.kind,
                            "at_s": p.fire_at_s,
                            "drawn": dict(p.drawn),
                        }
                        for p in self.planned
                    ],
                )
                for index in range(self.scenario.topology.nodes):
                    self.start_node(index)
                self.timed_out = self.drive()
                self.heal_all()  # a paused node can neither exit nor be judged
                self.record_exits()
                self.leftovers = self.find_leftovers(wait=not self.timed_out)
                self.ports = self.topology.bound_ports()
                if self.leftovers or self.ports:
                    self.say(f"left behind: pids {self.leftovers}, ports {self.ports}")
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.say(f"run aborted: {error}")
            raise
        finally:
            self.duration_s = self.elapsed()
            self.teardown()
            self.record(
                "run.end",
                timed_out=self.timed_out,
                leftover_pids=self.leftovers,
                bound_ports=self.ports,
                error=error,
                unfired=self.unfired(),
            )
            if self.history is not None:
                self.history.close()

    def start_node(self, index: int) -> None:
        handle = self.topology.start_node(index)
        self.record(
            "node.start", node=index, pid=handle.pid, addr=handle.addr, argv=list(handle.argv)
        )
        self.say(f"node {index} started: agent pid {handle.pid} on {handle.addr}")

    def drive(self) -> bool:
        """Fires, heals and watches until every agent exited; returns whether it timed out."""
        waiting = list(self.planned)
        while True:
            self.topology.refresh()
            for item in [p for p in waiting if is_due(p, self.topology.view, self.elapsed())]:
                waiting.remove(item)
                self.fire(item)
            for pending in [h for h in self.heals if self.elapsed() >= h.due_s]:
                self.heal(pending)
            self.record_exits()
            nodes = self.topology.nodes()
            if nodes and all(i in self.exit_codes for i in nodes):
                return False
            if self.elapsed() >= self.scenario.timeout_s:
                self.say(f"timed out after {self.scenario.timeout_s:g}s")
                return True
            time.sleep(TICK_S)  # polling processes and files: there is nothing to block on

    # -- faults ------------------------------------------------------------------------------
    def fire(self, item: PlannedFault) -> None:
        fired_at = self.elapsed()
        try:
            did = faults.fire(item.fault, self.ctx)
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            # A harness-side failure is recorded (the checkers see it), and the run goes on.
            did = {"error": f"{type(err).__name__}: {err}"}
        self.fired.append(item.index)
        self.record(
            "fault.fire",
            fault=item.index,
            fault_kind=item.fault.kind,
            trigger=item.trigger.kind,
            did=did,
        )
        if did.get("started_node"):
            handle = self.topology.nodes()[did["node"]]
            self.record(
                "node.start",
                node=handle.index,
                pid=handle.pid,
                addr=handle.addr,
                argv=list(handle.argv),
            )
        brief = {k: v for k, v in did.items() if k not in ("file", "order")}
        self.say(f"fault {item.index} {item.fault.kind} fired at {fired_at:.2f}s: {brief}")
        after = faults.heal_after_s(item.fault, did)
        if after is not None:
            self.heals.append(
                _Heal(index=item.index, fault=item.fault, did=did, due_s=fired_at + after)
            )

    def heal(self, pending: _Heal) -> None:
        self.heals.remove(pending)
        try:
            did = faults.heal(pending.fault, self.ctx, pending.did)
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            did = {"error": f"{type(err).__name__}: {err}"}
        self.record("fault.heal", fault=pending.index, fault_kind=pending.fault.kind, did=did)
        self.say(f"fault {pending.index} {pending.fault.kind} healed: {did}")

    def heal_all(self) -> None:
        for pending in list(self.heals):
            self.heal(pending)

    # -- the end -----------------------------------------------------------------------------
    def record_exits(self, *, by_harness: bool = False) -> None:
        for index in self.topology.nodes():
            if index in self.exit_codes:
                continue
            code = self.topology.poll(index)
            if code is None:
                continue
            self.note_exit(index, code, by_harness=by_harness)

    def note_exit(self, index: int, code: int | None, *, by_harness: bool) -> None:
        self.exit_codes[index] = code
        self.record("node.exit", node=index, exit_code=code, killed_by_harness=by_harness)
        self.say(f"node {index} exited with {code}" + (" (killed by the harness)" * by_harness))

    def find_leftovers(self, *, wait: bool) -> list[int]:
        """Processes of the job alive once every agent exited, after a bounded grace (a worker
        on its way out a moment after its agent is not a leak)."""
        deadline = time.monotonic() + (LEFTOVER_GRACE_S if wait else 0.0)
        while True:
            alive = self.topology.job_pids()
            if not alive or time.monotonic() >= deadline:
                return alive
            time.sleep(0.1)  # polling /proc for processes on their way out

    def teardown(self) -> None:
        """Kills everything left; must not raise over the error that brought us here."""
        if self.history is not None and self.heals:
            with contextlib.suppress(OSError, RuntimeError):
                self.heal_all()
        try:
            codes = self.topology.stop_all()
        except (OSError, RuntimeError) as err:
            self.say(f"teardown problem: {type(err).__name__}: {err}")
            return
        for index, code in codes.items():
            if index not in self.exit_codes:
                self.note_exit(index, code, by_harness=True)
