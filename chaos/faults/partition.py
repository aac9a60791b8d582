"""The partition fault: a silent DROP of traffic between nodes, inside their namespaces.

    node: N                 N is cut from every other node (and so from the store on node 0)
    node: N, from_store     N is cut from the store host only
    groups: [[0, 1], [2]]   every node is cut from the nodes of the other groups

Each cut is a pair of iptables rules inside the cut node's network namespace,
`INPUT -s PEER -j DROP` and `OUTPUT -d PEER -j DROP`: packets vanish, nobody is told, so peers
hang until their own timeouts (loopback is untouched). The heal deletes exactly the rules the
fire inserted (`did["rules"]`); deleting the namespace at teardown would drop them anyway.
Works on any topology that says where a node's namespace is (`PartitionTarget`).
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from chaos.scenario.schema import Fault

if TYPE_CHECKING:
    from chaos.faults import FaultContext

_TIMEOUT_S = 10.0


@runtime_checkable
class PartitionTarget(Protocol):
    def netns_of(self, index: int) -> str: ...

    def addr_of(self, index: int) -> str: ...

    def node_indices(self) -> list[int]: ...


def _cuts(fault: Fault, ctx: FaultContext, topo: PartitionTarget) -> dict[int, list[int]] | str:
    """node -> the peers it must not reach, or why the fault cannot apply."""
    everyone = topo.node_indices()
    if fault.groups:
        listed = [n for group in fault.groups for n in group]
        return {
            n: sorted(m for m in listed if m not in group) for group in fault.groups for n in group
        }
    if fault.node is None:
        return "partition needs a node or groups"
    if fault.node not in everyone:
        return f"node {fault.node} is not in the topology"
    if fault.from_store:
        host = ctx.topology.store.host_node
        if host is None or host == fault.node:
            return f"node {fault.node} cannot be cut from a store it hosts (or that has no host)"
        return {fault.node: [host]}
    return {fault.node: [n for n in everyone if n != fault.node]}


def _iptables(netns: str, rule: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "iptables", "-w", *rule],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
        check=False,
    )


def partition(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    topo = ctx.topology
    if not isinstance(topo, PartitionTarget):
        return {"skipped": f"the {topo.backend} topology has no network namespaces"}
    cuts = _cuts(fault, ctx, topo)
    if isinstance(cuts, str):
        return {"skipped": cuts, "node": fault.node}
    applied: list[dict[str, Any]] = []
    for node, peers in sorted(cuts.items()):
        netns = topo.netns_of(node)
        for peer in peers:
            addr = topo.addr_of(peer)
            for rule in (["INPUT", "-s", addr, "-j", "DROP"], ["OUTPUT", "-d", addr, "-j", "DROP"]):
                done = _iptables(netns, ["-I", *rule])
                if done.returncode != 0:
                    _delete(applied)  # all or nothing
                    raise RuntimeError(f"iptables -I {' '.join(rule)} in {netns}: {done.stderr}")
                applied.append({"node": node, "netns": netns, "rule": rule})
    return {
        "node": fault.node,
        "groups": [list(g) for g in fault.groups],
        "mode": "drop",
        "cuts": {str(n): peers for n, peers in sorted(cuts.items())},
        "rules": applied,
        "duration_s": fault.duration_s,
    }


def _delete(rules: list[dict[str, Any]]) -> tuple[int, list[str]]:
    deleted, failed = 0, []
    for item in rules:
        done = _iptables(str(item["netns"]), ["-D", *item["rule"]])
        if done.returncode == 0:
            deleted += 1
        else:
            failed.append(f"{item['netns']}: {' '.join(item['rule'])}: {done.stderr.strip()}")
    return deleted, failed


def heal_partition(fault: Fault, ctx: FaultContext, did: dict[str, Any]) -> dict[str, Any]:
    """Deletes exactly the rules the fire inserted."""
    rules = did.get("rules")
    if not isinstance(rules, list) or not rules:
        return {"skipped": "the partition inserted no rules"}
    deleted, failed = _delete(rules)
    out: dict[str, Any] = {"node": did.get("node"), "rules_deleted": deleted}
    if failed:
        out["failed"] = failed
    return out
