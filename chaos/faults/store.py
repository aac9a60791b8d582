"""Store faults: lose the c10d store's host node, or an etcd member (by index or the leader)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chaos.faults.nodes import crash_node_index
from chaos.scenario.schema import Fault

if TYPE_CHECKING:
    from chaos.faults import FaultContext


def _leader_or_none(ctx: FaultContext) -> int | None:
    try:
        return ctx.topology.store.leader_index(timeout_s=2.0)
    except RuntimeError:
        return None  # no agreed leader right now (an election, or quorum lost)


def kill_etcd_member(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    store = ctx.topology.store
    selector = fault.member if fault.member is not None else "leader"
    leader = _leader_or_none(ctx)
    if selector == "leader":
        if leader is None:
            return {"skipped": "no etcd leader could be found", "selector": selector}
        index = leader
    elif selector.isdigit() and int(selector) < store.member_count():
        index = int(selector)
    else:
        return {"skipped": f"no etcd member {selector!r}", "selector": selector}
    pid = store.kill_member(index)
    if pid is None:
        return {"skipped": f"etcd member {index} had already exited", "member": index}
    return {
        "store": "etcd",
        "member": index,
        "selector": selector,
        "pid": pid,
        "was_leader": leader == index,
        "signal": "SIGKILL",
    }


def kill_store_host(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    store = ctx.topology.store
    if store.kind == "etcd":
        return kill_etcd_member(fault, ctx)
    if store.host_node is None:
        return {"skipped": "no node hosts the store", "store": store.kind}
    return {"store": store.kind, **crash_node_index(ctx, store.host_node)}
