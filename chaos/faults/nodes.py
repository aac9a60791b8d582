"""Node faults: kill the agent, crash or pause the whole node, join a spare, leave gracefully."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any

from chaos.scenario.schema import Fault
from chaos.topology.procs import parse_signal

if TYPE_CHECKING:
    from chaos.faults import FaultContext

# A pause must stop processes the node starts while it is being stopped, too: a few passes
# until no new process appears (each pass stops everything found so far).
PAUSE_PASSES = 10


def _running_node(fault: Fault, ctx: FaultContext) -> int | str:
    """The fault's node if its agent is running, else why the fault cannot apply."""
    if fault.node is None:
        return f"{fault.kind} needs a node"
    if fault.node not in ctx.topology.nodes():
        return f"node {fault.node} was never started"
    if ctx.topology.poll(fault.node) is not None:
        return f"the agent of node {fault.node} has already exited"
    return fault.node


def _signal_agent(fault: Fault, ctx: FaultContext, sig: signal.Signals) -> dict[str, Any]:
    node = _running_node(fault, ctx)
    if isinstance(node, str):
        return {"skipped": node, "node": fault.node}
    pid = ctx.topology.nodes()[node].pid
    sent = ctx.topology.signal_node(node, [pid], sig)
    return {"node": node, "pid": pid, "signal": sig.name, "signalled": bool(sent)}


def kill_agent(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    """The launcher process only: what its workers do next is the launcher's business."""
    return _signal_agent(fault, ctx, parse_signal(fault.signal))


def leave_node(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    """A graceful departure: SIGTERM to the agent, which announces it and stops its workers."""
    return _signal_agent(fault, ctx, signal.SIGTERM)


def crash_node_index(ctx: FaultContext, node: int) -> dict[str, Any]:
    agent = ctx.topology.nodes()[node].pid
    killed = ctx.topology.crash_node(node)
    return {"node": node, "agent_pid": agent, "pids": killed, "signal": "SIGKILL"}


def crash_node(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    node = _running_node(fault, ctx)
    if isinstance(node, str):
        return {"skipped": node, "node": fault.node}
    return crash_node_index(ctx, node)


def pause_node(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    node = _running_node(fault, ctx)
    if isinstance(node, str):
        return {"skipped": node, "node": fault.node}
    stopped: list[int] = []
    for _ in range(PAUSE_PASSES):
        fresh = [pid for pid in ctx.topology.node_pids(node) if pid not in stopped]
        if not fresh:
            break
        stopped += ctx.topology.signal_node(node, fresh, signal.SIGSTOP)
    return {
        "node": node,
        "pids": sorted(stopped),
        "signal": "SIGSTOP",
        "duration_s": fault.duration_s,
    }


def resume_node(fault: Fault, ctx: FaultContext, did: dict[str, Any]) -> dict[str, Any]:
    """The heal of pause_node: SIGCONT to exactly the processes it stopped."""
    node, pids = did.get("node"), did.get("pids")
    if not isinstance(node, int) or not isinstance(pids, list):
        return {"skipped": "the pause stopped nothing"}
    resumed = ctx.topology.signal_node(node, pids, signal.SIGCONT)
    return {"node": node, "pids": sorted(resumed), "signal": "SIGCONT"}


def join_node(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    started = ctx.topology.nodes()
    scenario_nodes = ctx.scenario.topology.nodes + ctx.scenario.topology.spares
    if fault.node is not None:
        index = fault.node
    else:  # the first spare not started yet
        index = next((i for i in range(scenario_nodes) if i not in started), scenario_nodes)
    if index in started:
        return {"skipped": f"node {index} was already started", "node": index}
    if index >= scenario_nodes:
        return {"skipped": f"no spare node left (the topology has {scenario_nodes})"}
    handle = ctx.topology.start_node(index)
    return {"node": index, "pid": handle.pid, "addr": handle.addr, "started_node": True}
