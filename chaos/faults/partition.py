"""The partition fault: cut traffic between nodes with iptables, inside their network namespaces.

    node: N                 N is cut from every other node and from the store (c10d: node 0;
                            etcd: every member of the cluster)
    node: N, from_store     N is cut from the store only (the c10d host, or every etcd member)
    groups: [[0, 1], [2]]   every node is cut from the nodes of the other groups (etcd members
                            are in no group: every node keeps them)
    mode: drop | reject     silent (default) or refused

Each cut (node, peer) is a set of rules inserted at the head of INPUT and OUTPUT inside the cut
node's network namespace; loopback is never touched.

- `drop`: `INPUT -s PEER -j DROP` and `OUTPUT -d PEER -j DROP`. Packets vanish and nobody is
  told, so both sides hang until their own timeouts (TCP retransmits, heartbeats).
- `reject`: TCP is refused at once, in both directions:
  `INPUT ! -i lo -p tcp ! --tcp-flags RST RST -s PEER -j REJECT --reject-with tcp-reset` and
  the OUTPUT twin `! -o lo ... -d PEER`. The node's own connects and sends get a reset from
  its OUTPUT rule (ECONNREFUSED / ECONNRESET), the peer's get one from its INPUT rule. The two
  exclusions matter: the reset the OUTPUT rule forges reaches the local socket through `lo`
  with the peer's source address, and the INPUT rule must let resets through, or the reset
  is itself rejected and the cut behaves like DROP. Non-TCP traffic to and from the peer is
  dropped (`! -p tcp ... -j DROP`): the job speaks only TCP (TCPStore, gloo, etcd's HTTP), so
  only TCP needs to be refused, but the cut stays complete for everything else (ping, UDP).

The rules run through the topology's `net_exec(node)` prefix (netns: `ip netns exec NS`,
docker: `nsenter -t PID -n`), so this module works on any topology that implements
`PartitionTarget`. The heal deletes exactly the rules the fire inserted, through the same
prefix (`did["rules"]`); tearing the namespaces down would drop them anyway.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from chaos.scenario.schema import Fault

if TYPE_CHECKING:
    from chaos.faults import FaultContext
    from chaos.topology.base import Store

_TIMEOUT_S = 10.0
_REFUSE = ["-p", "tcp", "!", "--tcp-flags", "RST", "RST"]
_RESET = ["-j", "REJECT", "--reject-with", "tcp-reset"]


@runtime_checkable
class PartitionTarget(Protocol):
    """What a topology must offer for partitions (netns and docker do)."""

    def net_exec(self, index: int) -> list[str]:
        """The command prefix that runs a command inside node `index`'s network namespace."""
        ...

    def addr_of(self, index: int) -> str:
        """Node `index`'s address, as its peers see it."""
        ...

    def node_indices(self) -> list[int]:
        """Every node of the topology, started or not (spares included)."""
        ...


def _cuts(
    fault: Fault, everyone: list[int], store_host: int | None, *, etcd: bool = False
) -> dict[int, list[int]] | str:
    """node -> the peer nodes it must not reach, or why the fault cannot apply (pure). With an
    etcd store (`etcd`), `from_store` cuts no node: only the members (`_store_cuts`)."""
    if fault.groups:
        listed = [n for group in fault.groups for n in group]
        missing = sorted(n for n in listed if n not in everyone)
        if missing:
            return f"nodes {missing} are not in the topology"
        return {
            n: sorted(m for m in listed if m not in group) for group in fault.groups for n in group
        }
    if fault.node is None:
        return "partition needs a node or groups"
    if fault.node not in everyone:
        return f"node {fault.node} is not in the topology"
    if fault.from_store:
        if etcd:
            return {fault.node: []}
        if store_host is None or store_host == fault.node:
            return f"node {fault.node} cannot be cut from a store it hosts (or that has no host)"
        return {fault.node: [store_host]}
    return {fault.node: [n for n in everyone if n != fault.node]}


def _store_cuts(fault: Fault, members: list[str]) -> dict[int, list[str]]:
    """node -> the etcd member addresses it must not reach (pure): a `node` partition cuts the
    node from the whole cluster; `groups` leave the members reachable to everyone."""
    if fault.groups or fault.node is None or not members:
        return {}
    return {fault.node: list(members)}


def _etcd_members(store: Store) -> list[str]:
    """The addresses of an etcd store's members (from its endpoint); none for c10d."""
    if store.kind != "etcd":
        return []
    return [ep.rsplit(":", 1)[0] for ep in store.endpoint.split(",") if ep]


def rules_for(peer: str, mode: str) -> list[list[str]]:
    """The rules (chain first, no -I/-D) that cut a node from `peer` in `mode`."""
    if mode == "reject":
        return [
            ["INPUT", "!", "-i", "lo", *_REFUSE, "-s", peer, *_RESET],
            ["OUTPUT", "!", "-o", "lo", *_REFUSE, "-d", peer, *_RESET],
            ["INPUT", "!", "-p", "tcp", "-s", peer, "-j", "DROP"],
            ["OUTPUT", "!", "-p", "tcp", "-d", peer, "-j", "DROP"],
        ]
    if mode == "drop":
        return [["INPUT", "-s", peer, "-j", "DROP"], ["OUTPUT", "-d", peer, "-j", "DROP"]]
    raise ValueError(f"unknown partition mode {mode!r} (drop or reject)")


def _iptables(prefix: list[str], rule: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, "iptables", "-w", *rule],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
        check=False,
    )


def partition(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    topo = ctx.topology
    if not isinstance(topo, PartitionTarget):
        return {"skipped": f"the {topo.backend} topology cannot run commands in a node's network"}
    store = ctx.topology.store
    members = _etcd_members(store)
    cuts = _cuts(fault, topo.node_indices(), store.host_node, etcd=bool(members))
    if isinstance(cuts, str):
        return {"skipped": cuts, "node": fault.node}
    store_cuts = _store_cuts(fault, members)
    applied: list[dict[str, Any]] = []
    for node, peers in sorted(cuts.items()):
        prefix = topo.net_exec(node)
        where = " ".join(prefix)
        for peer in [topo.addr_of(p) for p in peers] + store_cuts.get(node, []):
            for rule in rules_for(peer, fault.mode):
                done = _iptables(prefix, ["-I", *rule])
                if done.returncode != 0:
                    _delete(applied)  # all or nothing
                    raise RuntimeError(f"{where} iptables -I {' '.join(rule)}: {done.stderr}")
                applied.append({"node": node, "netns": where, "exec": prefix, "rule": rule})
    return {
        "node": fault.node,
        "groups": [list(g) for g in fault.groups],
        "mode": fault.mode,
        "cuts": {str(n): peers for n, peers in sorted(cuts.items())},
        "store_cuts": {str(n): addrs for n, addrs in sorted(store_cuts.items())},
        "rules": applied,
        "duration_s": fault.duration_s,
    }


def _delete(rules: list[dict[str, Any]]) -> tuple[int, list[str]]:
    deleted, failed = 0, []
    for item in reversed(rules):
        done = _iptables([str(part) for part in item["exec"]], ["-D", *item["rule"]])
        if done.returncode == 0:
            deleted += 1
        else:
            failed.append(f"{item['netns']}: {' '.join(item['rule'])}: {done.stderr.strip()}")
    return deleted, failed


def heal_partition(fault: Fault, ctx: FaultContext, did: dict[str, Any]) -> dict[str, Any]:
    """Deletes exactly the rules the fire inserted, in the namespaces it inserted them in."""
    rules = did.get("rules")
    if not isinstance(rules, list) or not rules:
        return {"skipped": "the partition inserted no rules"}
    deleted, failed = _delete(rules)
    out: dict[str, Any] = {"node": did.get("node"), "rules_deleted": deleted}
    if failed:
        out["failed"] = failed
    return out
