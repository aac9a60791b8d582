"""A node's link to the rendezvous store, through the harness's proxy: what `toxic` acts on.

A node that a scenario's `toxic` fault names gets a `--rdzv-endpoint` that points at a proxy
(chaos.proxy, Toxiproxy's API) instead of at the store. With no toxic on it the proxy only
passes bytes (0.06 ms added at p50, bench/proxy.py), so the job runs as it would without.
The proxy sits where the node's traffic starts:

    local           one proxy server in the harness (a thread); per node and store endpoint
                    a proxy `n<node>-s<j>` on 127.0.0.1:<free port>
    netns, docker   a `chaos proxy serve` process in the node's network namespace (`ip netns
                    exec`, or `nsenter -n` into the container), its proxies on 127.0.0.1:
                    29450+j there and its API on a unix socket in the run dir (a file: the
                    harness reaches it from its own namespace). Docker's node shell waits for
                    that socket before it starts the agent (CHAOS_WAIT_FOR).

etcd: one proxy per member, so a client that fails over to another member is still behind
the proxy. c10d: the store host's own connection never leaves its process, so its link
cannot be proxied; the scenario rules refuse a `toxic` on it. The proxy process carries no
CHAOS_RUN_ID: it is the harness's, never a leftover of the job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from chaos.proxy.client import ProxyClient
from chaos.proxy.server import ServerHandle, serve_in_thread
from chaos.scenario.schema import Scenario
from chaos.topology.base import TopologyError

LINK_PORT = 29450  # + j in a node's own namespace (nothing else listens there)
START_TIMEOUT_S = 10.0
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, kw_only=True)
class StoreLink:
    api: ProxyClient
    proxies: tuple[str, ...]  # one per store endpoint
    endpoint: str  # the node's --rdzv-endpoint


def linked_nodes(scenario: Scenario) -> frozenset[int]:
    """The nodes whose store link some `toxic` fault may act on (a drawn node: every one)."""
    topo = scenario.topology
    everyone = range(topo.nodes + topo.spares)
    nodes: set[int] = set()
    for fault in scenario.faults:
        if fault.kind == "toxic":
            nodes.update(everyone if fault.node is None else (fault.node,))
    return frozenset(nodes)


class StoreLinks:
    """Proxies for the nodes in `nodes`; `in_namespace`: one server process per node."""

    def __init__(self, run_dir: Path, nodes: Iterable[int], *, in_namespace: bool) -> None:
        self.dir = run_dir / "proxies"
        self.nodes = frozenset(nodes)
        self.in_namespace = in_namespace
        self._links: dict[int, StoreLink] = {}
        self._thread: ServerHandle | None = None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    def get(self, index: int) -> StoreLink | None:
        return self._links.get(index)

    def socket_of(self, index: int) -> Path:
        return self.dir / f"n{index}.sock"

    def endpoint(self, index: int, store_endpoint: str, *, host_node: int | None) -> str:
        """Node `index`'s --rdzv-endpoint: `store_endpoint` itself, or its proxies."""
        if index not in self.nodes:
            return store_endpoint
        if index == host_node:
            raise TopologyError(
                f"node {index} hosts the c10d store: its link to the store never leaves its "
                "process, so a toxic cannot act on it (name another node, or use etcd)"
            )
        if index in self._links:
            return self._links[index].endpoint
        upstreams = store_endpoint.split(",")
        names = tuple(f"n{index}-s{j}" for j in range(len(upstreams)))
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.in_namespace:  # the server starts with the node (`start`)
            listens = [f"127.0.0.1:{LINK_PORT + j}" for j in range(len(upstreams))]
            api = ProxyClient(f"unix:{self.socket_of(index)}")
        else:
            if self._thread is None:
                self._thread = serve_in_thread("127.0.0.1", 0)
            api = ProxyClient(self._thread.server.url)
            listens = [
                str(api.create_proxy(name, upstream=up)["listen"])
                for name, up in zip(names, upstreams, strict=True)
            ]
        self._write_config(index, names, listens, upstreams)
        link = StoreLink(api=api, proxies=names, endpoint=",".join(listens))
        self._links[index] = link
        return link.endpoint

    def _write_config(
        self, index: int, names: tuple[str, ...], listens: list[str], upstreams: list[str]
    ) -> None:
        rows = [
            {"name": n, "listen": listen, "upstream": up}
            for n, listen, up in zip(names, listens, upstreams, strict=True)
        ]
        (self.dir / f"n{index}.json").write_text(json.dumps(rows) + "\n")

    def start(self, index: int, net_exec: list[str], *, wait: bool = True) -> None:
        """Starts node `index`'s proxy process inside its namespace (in_namespace only);
        `wait`: until its API answers."""
        if not self.in_namespace or index not in self._links or index in self._procs:
            return
        sock = self.socket_of(index)
        argv = [sys.executable, "-m", "chaos", "proxy", "serve", "--unix", str(sock)]
        argv += ["--config", str(self.dir / f"n{index}.json")]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT)}
        with (self.dir / f"n{index}.log").open("ab") as log:
            self._procs[index] = subprocess.Popen(
                [*net_exec, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        if wait:
            self.await_api(index)

    def await_api(self, index: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        proc = self._procs[index]
        while not self.socket_of(index).exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / f"n{index}.log").read_text(errors="replace").strip()
                last = log.splitlines()[-1] if log else f"exit {proc.poll()}"
                raise TopologyError(f"node {index}'s store-link proxy did not start: {last}")
            time.sleep(0.02)  # the server creates the socket file once it listens

    def close(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
