"""Faults: one function per fault kind, each returning what it actually did.

    fire(fault, ctx) -> did          heal(fault, ctx, did) -> did   (pause_node, partition,
                                                                      hang/slow_worker)

`did` is a JSON-able dict recorded verbatim in history.jsonl (`fault.fire` / `fault.heal`).
A fault that cannot apply when it fires (the rank has no live worker, the node already
exited) does nothing and says why in `did["skipped"]`; checkers see that instead of a
silently missing fault. Targets are resolved when the fault fires (see resolve.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.faults import gray, intruder, links, nodes, partition, store, workers
from chaos.scenario.schema import Fault, Scenario
from chaos.topology.base import Topology

__all__ = ["FaultContext", "fire", "heal", "heal_after_s"]


@dataclass(frozen=True, kw_only=True)
class FaultContext:
    scenario: Scenario
    topology: Topology
    control_dir: Path  # the workload's control dir (kill_worker, hang/slow_worker orders)
    # What a fault left running until its heal (slow_worker's duty cycles), by `did` token.
    background: dict[str, Any] = field(default_factory=dict)


FireFn = Callable[[Fault, FaultContext], dict[str, Any]]
HealFn = Callable[[Fault, FaultContext, dict[str, Any]], dict[str, Any]]

FIRE: dict[str, FireFn] = {
    "kill_worker": workers.kill_worker,
    "kill_agent": nodes.kill_agent,
    "crash_node": nodes.crash_node,
    "pause_node": nodes.pause_node,
    "join_node": nodes.join_node,
    "leave_node": nodes.leave_node,
    "kill_store_host": store.kill_store_host,
    "kill_etcd_member": store.kill_etcd_member,
    "partition": partition.partition,
    "toxic": links.toxic,
    "slow_link": links.slow_link,
    "hang_worker": gray.hang_worker,
    "slow_worker": gray.slow_worker,
    "intruder": intruder.intruder,
}
HEAL: dict[str, HealFn] = {
    "pause_node": nodes.resume_node,
    "partition": partition.heal_partition,
    "toxic": links.remove_toxic,
    "slow_link": links.heal_slow_link,
    "hang_worker": gray.release_worker,
    "slow_worker": gray.restore_speed,
}


def fire(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    action = FIRE.get(fault.kind)
    if action is None:
        return {"skipped": f"fault kind {fault.kind!r} is not implemented"}
    return action(fault, ctx)


def heal_after_s(fault: Fault, did: dict[str, Any]) -> float | None:
    """Seconds after the fire when the heal is due, or None when there is nothing to heal."""
    if fault.kind not in HEAL or "skipped" in did or "error" in did:
        return None
    if fault.kind in ("hang_worker", "slow_worker") and not gray.heals(fault, did):
        return None
    # Without a duration the pause lasts until the run ends (healed during teardown).
    return fault.duration_s if fault.duration_s is not None else math.inf


def heal(fault: Fault, ctx: FaultContext, did: dict[str, Any]) -> dict[str, Any]:
    return HEAL[fault.kind](fault, ctx, did)
