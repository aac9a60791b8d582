"""kill_worker: a signal to the process holding a rank, or an exit code / exception it raises.

A signal is sent by the harness at once. An exit code or an exception is an order written to
the workload's control dir (`fail-rank-<rank>.json`, atomically); the worker holding that rank
obeys it at its next step (the workload raises inside `record`, so the error file gets a real
traceback), and consumes it so its replacement does not fail again.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from chaos.faults.resolve import resolve_worker
from chaos.scenario.schema import Fault
from chaos.topology.procs import parse_signal

if TYPE_CHECKING:
    from chaos.faults import FaultContext

# What an uncaught Python exception exits with: the checkers compare it with the launcher's view.
EXCEPTION_EXIT_CODE = 1


def write_order(ctx: FaultContext, name: str, order: dict[str, Any]) -> str:
    """Writes `order` to the control dir as `name` (see scenarios/workloads/train.py)."""
    ctx.control_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.control_dir / name
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(order))
    os.replace(tmp, path)  # the worker never reads half an order
    return str(path)


def kill_worker(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    target = resolve_worker(
        ctx.topology, rank=fault.rank, node=fault.node, local_rank=fault.local_rank
    )
    if isinstance(target, str):
        return {"skipped": target, "rank": fault.rank, "node": fault.node}
    did = target.as_did()
    if fault.exception is not None:
        order: dict[str, Any] = {"exception": fault.exception}
        path = write_order(ctx, f"fail-rank-{target.rank}.json", order)
        return {
            **did,
            "via": "control",
            "order": order,
            "file": path,
            "exception": fault.exception,
            "exit_code": EXCEPTION_EXIT_CODE,
            "signal": None,
        }
    if fault.exit_code is not None:
        order = {"exit_code": fault.exit_code}
        path = write_order(ctx, f"fail-rank-{target.rank}.json", order)
        return {
            **did,
            "via": "control",
            "order": order,
            "file": path,
            "exit_code": fault.exit_code,
            "signal": None,
        }
    sig = parse_signal(fault.signal)
    sent = ctx.topology.signal_node(target.node, [target.host_pid], sig)
    return {**did, "via": "signal", "signal": sig.name, "signalled": bool(sent)}
