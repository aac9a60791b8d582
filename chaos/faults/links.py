"""Gray link faults: a toxic on a node's link to the store, a bandwidth cap on a node's link.

    toxic       a Toxiproxy toxic (latency, bandwidth, timeout, reset_peer, slicer, ...) added
                to every proxy between the node and the store (chaos.topology.store_links),
                removed at the heal; like Toxiproxy's, it acts on open connections too
    slow_link   `tc qdisc replace dev IF root tbf rate R` inside the node's namespace: every
                byte the node sends (store, gloo) leaves at R at most; the kernel here has no
                netem, so latency and loss come from the proxy and iptables, not from tc

Both record what they did; the heal undoes exactly that.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any

from chaos.proxy.client import ProxyApiError
from chaos.scenario.schema import Fault

if TYPE_CHECKING:
    from chaos.faults import FaultContext
    from chaos.topology.store_links import StoreLink

_TIMEOUT_S = 10.0
TOXIC_NAME = "chaos"


def toxic(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    node = fault.node
    link = getattr(ctx.topology, "store_link", lambda _i: None)(node)
    if node is None or link is None:
        return {"skipped": f"node {node} has no proxied link to the store"}
    name = f"{TOXIC_NAME}-{fault.toxic}"
    attributes = dict(fault.attributes)
    added: list[str] = []
    try:
        for proxy in link.proxies:
            link.api.add_toxic(
                proxy,
                str(fault.toxic),
                name=name,
                stream=fault.stream,
                toxicity=fault.toxicity,
                attributes=attributes,
            )
            added.append(proxy)
    except (ProxyApiError, OSError) as err:
        return {"node": node, "proxies": added, "toxic": name, "error": str(err)}
    return {
        "node": node,
        "proxies": added,
        "toxic": name,
        "type": fault.toxic,
        "stream": fault.stream,
        "toxicity": fault.toxicity,
        "attributes": attributes,
    }


def remove_toxic(fault: Fault, ctx: FaultContext, did: dict[str, Any]) -> dict[str, Any]:
    link: StoreLink | None = getattr(ctx.topology, "store_link", lambda _i: None)(did.get("node"))
    if link is None:
        return {"node": did.get("node"), "removed": [], "failed": ["no proxied link"]}
    removed, failed = [], []
    for proxy in did.get("proxies", []):
        try:
            link.api.remove_toxic(proxy, did["toxic"])
            removed.append(proxy)
        except (ProxyApiError, OSError) as err:  # the proxy is gone with its node
            failed.append(f"{proxy}: {err}")
    return {"node": did.get("node"), "removed": removed, "failed": failed}


def slow_link(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    net_exec = getattr(ctx.topology, "net_exec", None)
    if net_exec is None or fault.node is None or fault.rate is None:
        return {"skipped": "slow_link needs a node's own network namespace (netns or docker)"}
    prefix: list[str] = net_exec(fault.node)
    dev = _device(prefix)
    if dev is None:
        return {"skipped": f"node {fault.node} has no network interface besides lo"}
    # burst: enough for one full-size packet at any rate; latency bounds the queue.
    cmd = ["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", fault.rate]
    cmd += ["burst", "32kbit", "latency", "400ms"]
    done = subprocess.run(
        [*prefix, *cmd], check=False, capture_output=True, text=True, timeout=_TIMEOUT_S
    )
    if done.returncode != 0:
        return {"node": fault.node, "dev": dev, "error": done.stderr.strip()}
    return {"node": fault.node, "dev": dev, "rate": fault.rate, "qdisc": "tbf"}


def heal_slow_link(fault: Fault, ctx: FaultContext, did: dict[str, Any]) -> dict[str, Any]:
    if "error" in did:
        return {"node": did.get("node"), "nothing": "the fire failed"}
    try:
        prefix: list[str] = ctx.topology.net_exec(did["node"])  # type: ignore[attr-defined]
    except RuntimeError as err:  # the node is gone, and its namespace's qdisc with it
        return {"node": did["node"], "gone": str(err)}
    cmd = [*prefix, "tc", "qdisc", "del", "dev", did["dev"], "root"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=_TIMEOUT_S)
    return {"node": did["node"], "removed": done.returncode == 0, "stderr": done.stderr.strip()}


def _device(prefix: list[str]) -> str | None:
    """The node's one interface besides loopback (netns: its veth; docker: eth0)."""
    done = subprocess.run(
        [*prefix, "ip", "-o", "link", "show"],
        check=False,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
    )
    for line in done.stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        if name and name != "lo":
            return name
    return None
