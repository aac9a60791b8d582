"""Gray failures of one rank: it hangs (hang_worker) or runs slow (slow_worker).

The rank is resolved when the fault fires (resolve.py), like kill_worker's. Two ways in:

- from outside, by the harness: SIGSTOP (hang_worker `sigstop`, released by the heal: after
  `duration_s`, or at the end of the run), a SIGSTOP/SIGCONT duty cycle (slow_worker
  `sigstop`: a thread of the harness stops the rank for 1 - 1/factor of every `period_s`
  until the heal), or a CPU quota on the rank's node when the node is a container
  (slow_worker `cpu_quota`: the whole node gets 1/factor of one CPU until the heal);
- through the workload (scenarios/workloads/train.py), by an order written atomically to the
  control dir when the fault fires: `hang-rank-<r>.json` `{"mode": M, "pid": P}` (sleep,
  skip_collective, deadlock, gil: obeyed once, in the step the worker starts next, then
  consumed) and `slow-rank-<r>.json` `{"factor": k, "steps": [a, b], "pid": P}` (compute:
  the worker's `section("compute")` takes k times longer for steps a..b). The order names the
  worker's pid: its replacement after a restart does not obey it, so a fault hangs or slows
  exactly the incarnation that held the rank when it fired.

`did` says which worker it hit and how (`via`: signal, control, duty_cycle, cpu_quota).
"""

from __future__ import annotations

import random
import signal
import threading
import uuid
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from chaos.faults.resolve import resolve_worker
from chaos.faults.workers import write_order
from chaos.scenario.schema import Fault
from chaos.topology import procs

if TYPE_CHECKING:
    from chaos.faults import FaultContext

DEFAULT_PERIOD_S = 1.0  # slow_worker sigstop: one stop + run cycle
DUTY_JITTER = 0.4  # each cycle's length varies within +-40% of period_s (see DutyCycle)
CPU_PERIOD_US = 100_000  # slow_worker cpu_quota: the CFS period
MIN_QUOTA_US = 1_000  # the kernel's floor for a CFS quota
_JOIN_S = 5.0


@runtime_checkable
class CpuQuotaTarget(Protocol):
    """What a topology must offer for slow_worker `cpu_quota` (docker does)."""

    client: Any  # a Docker SDK client

    def container_name(self, index: int) -> str:
        """The container that is node `index`."""
        ...


def set_cpu_quota(topo: CpuQuotaTarget, node: int, cpus: float | None) -> dict[str, Any]:
    """`docker update` of the node's CFS quota: `cpus` CPUs per period, None for no limit."""
    quota = -1 if cpus is None else max(MIN_QUOTA_US, int(CPU_PERIOD_US * cpus))
    name = topo.container_name(node)
    topo.client.api.update_container(name, cpu_period=CPU_PERIOD_US, cpu_quota=quota)
    return {"container": name, "cpu_period_us": CPU_PERIOD_US, "cpu_quota_us": quota}


def _target(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    found = resolve_worker(
        ctx.topology, rank=fault.rank, node=fault.node, local_rank=fault.local_rank
    )
    if isinstance(found, str):
        return {"skipped": found, "rank": fault.rank, "node": fault.node, "mode": fault.mode}
    return {**found.as_did(), "mode": fault.mode}


def hang_worker(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    did = _target(fault, ctx)
    if "skipped" in did:
        return did
    if fault.mode == "sigstop":
        sent = ctx.topology.signal_node(did["node"], [did["host_pid"]], signal.SIGSTOP)
        return {**did, "via": "signal", "signal": "SIGSTOP", "signalled": bool(sent)}
    order = {"mode": fault.mode, "pid": did["pid"]}
    path = write_order(ctx, f"hang-rank-{did['rank']}.json", order)
    return {**did, "via": "control", "order": order, "file": path}


def release_worker(fault: Fault, ctx: FaultContext, did: dict[str, Any]) -> dict[str, Any]:
    """The heal of a sigstop hang: SIGCONT, if that very process is still there."""
    sent = ctx.topology.signal_node(did["node"], [did["host_pid"]], signal.SIGCONT)
    return {
        "rank": did.get("rank"),
        "pid": did.get("pid"),
        "signal": "SIGCONT",
        "resumed": bool(sent),
    }


class DutyCycle:
    """Stops a process for `stop_s`, lets it run for `run_s`, again, until `stop()`; it ends
    with SIGCONT. The process is a ProcId: a pid reused by another process is never touched.

    Each cycle is stretched or shrunk as a whole by a factor drawn from `rng` within
    1 +- `jitter` (the stop and run shares, so the slowdown, stay exact). A fixed period
    phase-locks to a worker's fixed step: a 1 s cycle over 0.11 s steps stops it at nearly
    the same point of its step every time, inside its compute section for several cycles and
    then outside it for several more, so what the slowdown looks like depends on luck."""

    def __init__(
        self,
        proc: procs.ProcId,
        *,
        stop_s: float,
        run_s: float,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.proc = proc
        self.stop_s = stop_s
        self.run_s = run_s
        self.jitter = jitter
        self._rng = rng or random.Random(proc.pid)
        self.cycles = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"duty-{proc.pid}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._done.is_set() and procs.send([self.proc], signal.SIGSTOP):
                self.cycles += 1
                stretch = 1.0 + self._rng.uniform(-self.jitter, self.jitter)
                self._done.wait(self.stop_s * stretch)
                procs.send([self.proc], signal.SIGCONT)
                self._done.wait(self.run_s * stretch)
        finally:
            procs.send([self.proc], signal.SIGCONT)

    def stop(self) -> int:
        """Ends the cycle (the process left running); returns how many stops it made."""
        self._done.set()
        self._thread.join(_JOIN_S)
        return self.cycles


def slow_worker(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    did = _target(fault, ctx)
    if "skipped" in did:
        return did
    factor = float(fault.factor or 1.0)
    if fault.mode == "compute":
        steps = list(fault.steps) if fault.steps is not None else None
        order = {"factor": factor, "steps": steps, "pid": did["pid"]}
        path = write_order(ctx, f"slow-rank-{did['rank']}.json", order)
        return {**did, "via": "control", "factor": factor, "order": order, "file": path}
    if fault.mode == "sigstop":
        proc = procs.identify(did["host_pid"])
        if proc is None:
            return {**did, "skipped": f"worker pid {did['host_pid']} exited as the fault fired"}
        period_s = fault.period_s or DEFAULT_PERIOD_S
        run_s = period_s / factor
        # Seeded: a replay with the scenario's seed stops the worker on the same schedule.
        rng = random.Random(f"{ctx.scenario.seed}:{did['rank']}")
        cycle = DutyCycle(proc, stop_s=period_s - run_s, run_s=run_s, jitter=DUTY_JITTER, rng=rng)
        token = f"duty-{uuid.uuid4().hex[:8]}"
        ctx.background[token] = cycle
        cycle.start()
        return {
            **did,
            "via": "duty_cycle",
            "factor": factor,
            "period_s": period_s,
            "stop_s": round(period_s - run_s, 4),
            "cycle": token,
        }
    topo = ctx.topology
    if not isinstance(topo, CpuQuotaTarget):
        return {**did, "skipped": f"the {topo.backend} topology has no container to limit"}
    cpus = 1.0 / factor
    return {**did, "via": "cpu_quota", "factor": factor, **set_cpu_quota(topo, did["node"], cpus)}


def restore_speed(fault: Fault, ctx: FaultContext, did: dict[str, Any]) -> dict[str, Any]:
    """The heal of a duty cycle or a CPU quota."""
    if did.get("via") == "duty_cycle":
        cycle = ctx.background.pop(str(did.get("cycle")), None)
        if not isinstance(cycle, DutyCycle):
            return {"skipped": "no duty cycle running"}
        return {"rank": did.get("rank"), "stops": cycle.stop(), "signal": "SIGCONT"}
    topo = ctx.topology
    if did.get("via") == "cpu_quota" and isinstance(topo, CpuQuotaTarget):
        return {"rank": did.get("rank"), **set_cpu_quota(topo, did["node"], None)}
    return {"skipped": f"nothing to restore after {did.get('via')}"}


def heals(fault: Fault, did: dict[str, Any]) -> bool:
    """Whether the fault has something to undo (the in-process modes end on their own)."""
    return did.get("via") in ("signal", "duty_cycle", "cpu_quota")
