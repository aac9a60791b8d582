"""The `netns` topology: every node is a network namespace on a private bridge (root only).

A "switch" namespace holds a bridge `br0`; node i gets its own namespace with loopback up and
one veth (`veth0`, created directly inside the namespaces, so no name ever appears in the
root namespace) whose peer `p<i>` is a port of the bridge. Addresses come from a private /24,
10.213.<k>.0/24 with k drawn per run, and live only inside these namespaces; nothing has a
default route, so the job can reach nothing but its own nodes. Node i is 10.213.<k>.<10+i>.

Agents run as `ip netns exec <ns> python3 -m launcher ... --local-addr <node ip>` with
GLOO_SOCKET_IFNAME=veth0 (`ip netns exec` execs, so the pid is the agent's); the c10d store is
hosted by node 0 at its namespace address; an etcd store runs one member per namespace
`<prefix>-e<i>` at 10.213.<k>.<200+i> on the same bridge (chaos.topology.etcd_members), so a
partition can cut a node from the cluster. Processes are tracked exactly as in the `local`
topology (same PID namespace, /proc walks). Everything is created in `up()` and removed by
`stop_all()` (which the runner calls on every exit path): deleting a namespace deletes its
veth and its iptables rules. Partitions (chaos.faults.partition) add iptables rules inside a
node's namespace through `net_exec` (`ip netns exec <ns>`) and `addr_of`.

Leftovers: before creating anything, `up()` claims the run's prefix in /run/chaos-netns/ and
removes the namespaces of harnesses that died without tearing down (netns_claims.py: owner
gone, never a live harness's); `stop_all()` releases the claim once the namespaces are gone.
What `up()` removed is in `reaped`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

from chaos.scenario.schema import Scenario
from chaos.topology import netns_claims as claims
from chaos.topology.base import NodeHandle, Support, TopologyError
from chaos.topology.etcd import EtcdCluster
from chaos.topology.etcd_members import ProcessPlacement, die_with_parent
from chaos.topology.local import REPO_ROOT, C10dStore, LocalTopology, _Node
from chaos.topology.view import JobView
from launcher.events import RDZV_ROUND_COMPLETE

NETNS_PREFIX = "chx"  # every namespace of every netns run starts with this
NODE_IFNAME = "veth0"  # the node's side of its veth, inside the node's namespace
BRIDGE = "br0"
STORE_PORT = 29400  # every node has its own port space: a fixed port cannot clash
ETCD_HOST_BASE = 200  # etcd member i is 10.213.<k>.<200+i>, in namespace <prefix>-e<i>
_CMD_TIMEOUT_S = 10.0
_LISTEN = "0A"


def have_netns() -> str | None:
    """Why the netns topology cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the netns topology needs root (network namespaces, iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"the netns topology needs `{tool}` (apt-get install iproute2 iptables)"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs `ip ARGS`; raises TopologyError with its stderr when it fails and `check`."""
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=_CMD_TIMEOUT_S, check=False
    )
    if check and done.returncode != 0:
        raise TopologyError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def list_netns(prefix: str = NETNS_PREFIX) -> list[str]:
    """Namespaces whose names start with `prefix` (`ip netns list` prints 'name (id: n)')."""
    out = ip("netns", "list", check=False).stdout
    names = (line.split()[0] for line in out.splitlines() if line.strip())
    return sorted(name for name in names if name.startswith(prefix))


def _delete_netns(name: str) -> bool:
    """Deletes namespace `name`; whether it is gone (deleted now or already)."""
    done = ip("netns", "del", name, check=False)
    return done.returncode == 0 or name not in list_netns(name)


def _run_tag(run_id: str) -> str:
    """6 hex chars unique to the run, for short names (interface names stop at 15 chars)."""
    tail = re.sub(r"[^0-9a-f]", "", run_id.rsplit("-", 1)[-1])
    return (tail + uuid.uuid4().hex)[:6]


class NetnsTopology(LocalTopology):
    backend = "netns"

    def __init__(self, scenario: Scenario, *, run_dir: Path, launcher: str, view: JobView) -> None:
        missing = have_netns()
        if missing:
            raise TopologyError(missing)
        super().__init__(scenario, run_dir=run_dir, launcher=launcher, view=view)
        self._name(_run_tag(self.run_id))
        if scenario.topology.rdzv_backend == "etcd":
            # Resolved when the members spawn, after up() has claimed the final prefix.
            placement = ProcessPlacement(address=self.etcd_addr, prefix=self.etcd_exec)
            self._store = self._etcd_cluster(placement)
        self._created: list[str] = []  # namespaces, in creation order
        self._claimed = False
        self.reaped: list[str] = []  # stale namespaces of dead harnesses that up() removed

    def _name(self, tag: str) -> None:
        """Names everything of the run after `tag` (6 hex chars)."""
        self.prefix = f"{NETNS_PREFIX}{tag}"  # e.g. chx3fa1c2 (9 chars)
        self.switch = f"{self.prefix}-sw"
        # Only inside our namespaces, but still spread runs over many subnets.
        self.subnet_k = 16 + int(tag, 16) % 224
        self.subnet = f"10.213.{self.subnet_k}.0/24"
        if isinstance(self._store, C10dStore):
            self._store = C10dStore(f"{self.addr_of(0)}:{STORE_PORT}", STORE_PORT)

    # -- names and addresses -----------------------------------------------------------------
    def netns_of(self, index: int) -> str:
        return f"{self.prefix}-n{index}"

    def net_exec(self, index: int) -> list[str]:
        """The prefix that runs a command inside node `index`'s namespace (PartitionTarget)."""
        return ["ip", "netns", "exec", self.netns_of(index)]

    def addr_of(self, index: int) -> str:
        if not 0 <= index <= self.max_index:
            raise TopologyError(f"node {index} is not in the topology (0..{self.max_index})")
        return f"10.213.{self.subnet_k}.{10 + index}"

    def node_indices(self) -> list[int]:
        """Every node of the topology, started or not (spares included)."""
        return list(range(self.max_index + 1))

    def etcd_members(self) -> int:
        """How many etcd members get a namespace (0 with c10d)."""
        return self._store.member_count()

    def etcd_netns(self, index: int) -> str:
        return f"{self.prefix}-e{index}"

    def etcd_exec(self, index: int) -> list[str]:
        """The prefix that runs a command inside etcd member `index`'s namespace."""
        return ["ip", "netns", "exec", self.etcd_netns(index)]

    def etcd_addr(self, index: int) -> str:
        if not 0 <= index < self.etcd_members():
            raise TopologyError(f"etcd member {index} is not in the topology")
        return f"10.213.{self.subnet_k}.{ETCD_HOST_BASE + index}"

    def namespaces(self) -> list[str]:
        return list(self._created)

    # -- bring-up / teardown -----------------------------------------------------------------
    def _add_netns(self, name: str) -> None:
        ip("netns", "add", name)
        self._created.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _claim(self) -> None:
        """Removes dead harnesses' namespaces and claims a prefix no one holds, under the lock."""
        owner = claims.Owner.me()
        with claims.locked():
            self.reaped = claims.reap_stale(list_netns(), _delete_netns, prefix=NETNS_PREFIX)
            for _ in range(100):
                if not list_netns(self.prefix) and claims.write_claim(
                    self.prefix, owner, run_id=self.run_id
                ):
                    self._claimed = True
                    return
                self._name(uuid.uuid4().hex[:6])  # taken by another run: draw again
        raise TopologyError("could not claim a free netns prefix in 100 tries")

    def up(self) -> None:
        self._claim()
        try:
            self._add_netns(self.switch)
            ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
            ip("-n", self.switch, "link", "set", BRIDGE, "up")
            for index in self.node_indices():
                self._plug(self.netns_of(index), f"p{index}", self.addr_of(index))
            for index in range(self.etcd_members()):
                self._plug(self.etcd_netns(index), f"e{index}", self.etcd_addr(index))
            if isinstance(self._store, EtcdCluster):
                self._store.start()
        except BaseException:
            try:
                self._stop_store()  # no member may outlive its namespace's name
            finally:
                self.remove_namespaces()
            raise

    def _plug(self, ns: str, port: str, addr: str) -> None:
        """Creates namespace `ns` with a veth whose peer `port` is a port of the bridge."""
        self._add_netns(ns)
        ip("-n", ns, "link", "add", NODE_IFNAME, "type", "veth", "peer", "name", port,
           "netns", self.switch)  # fmt: skip
        ip("-n", self.switch, "link", "set", port, "master", BRIDGE)
        ip("-n", self.switch, "link", "set", port, "up")
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", NODE_IFNAME)
        ip("-n", ns, "link", "set", NODE_IFNAME, "up")

    def remove_namespaces(self) -> list[str]:
        """Deletes every namespace this run created (their veths and rules go with them);
        returns the ones that could not be deleted."""
        failed = [name for name in reversed(self._created) if not _delete_netns(name)]
        self._created = failed
        if not failed and self._claimed:  # a claim with namespaces left stays for the reaper
            claims.release(self.prefix)
            self._claimed = False
        return failed

    def stop_all(self) -> dict[int, int | None]:
        try:
            return super().stop_all()
        finally:
            failed = self.remove_namespaces()
            if failed:
                raise TopologyError(f"could not delete namespaces {failed}")

    # -- agents ------------------------------------------------------------------------------
    def agent_argv(self, index: int) -> list[str]:
        argv = super().agent_argv(index)
        argv[argv.index("--local-addr") + 1] = self.addr_of(index)
        return argv

    def node_env(self, index: int) -> dict[str, str]:
        env = super().node_env(index)
        env["CHAOS_NODE_ADDR"] = self.addr_of(index)
        env["GLOO_SOCKET_IFNAME"] = NODE_IFNAME
        env["TP_SOCKET_IFNAME"] = NODE_IFNAME
        return env

    def start_node(self, index: int) -> NodeHandle:
        if index in self._nodes:
            raise TopologyError(f"node {index} was already started")
        if self.netns_of(index) not in self._created:
            raise TopologyError(f"node {index} has no namespace (was up() called?)")
        node_dir = self.run_dir / "nodes" / str(index)
        (node_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "workload" / "control").mkdir(parents=True, exist_ok=True)
        self.view.watch_node(index)
        argv = self.agent_argv(index)
        self.links.start(index, self.net_exec(index))  # its store-link proxy, if it has one
        # `ip netns exec` and setpriv both exec: the pid is the agent's.
        full = [*self.net_exec(index), *die_with_parent(argv)]
        with (
            (node_dir / "stdout.log").open("ab") as out,
            (node_dir / "stderr.log").open("ab") as err,
        ):
            proc = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.node_env(index),
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        handle = NodeHandle(
            index=index, addr=self.addr_of(index), pid=proc.pid, argv=tuple(full), dir=node_dir
        )
        self._nodes[index] = _Node(handle=handle, proc=proc)
        self._learn(proc.pid, index, trusted=True)
        return handle

    # -- observation -------------------------------------------------------------------------
    def bound_ports(self) -> list[int]:
        """The job's ports something listens on, looked up inside every node's namespace."""
        wanted = set(self._wanted_ports())
        bound: set[int] = set()
        for index in self.node_indices():
            ns = self.netns_of(index)
            if ns not in self._created:
                continue
            done = ip("netns", "exec", ns, "cat", "/proc/net/tcp", "/proc/net/tcp6", check=False)
            for line in done.stdout.splitlines():
                cols = line.split()
                if len(cols) > 3 and cols[3] == _LISTEN and ":" in cols[1]:
                    port = int(cols[1].rsplit(":", 1)[1], 16)
                    if port in wanted:
                        bound.add(port)
        return sorted(bound)

    def _wanted_ports(self) -> list[int]:
        ports = {STORE_PORT}
        for _, event in self.view.named(RDZV_ROUND_COMPLETE):
            if isinstance(event.fields.get("master_port"), int):
                ports.add(event.fields["master_port"])
        ports.update(r["master_port"] for r in self.view.steps if r.get("master_port"))
        return sorted(ports)

    def supports(self, fault_kind: str) -> Support:
        if fault_kind == "partition":
            return Support(ok=True)
        return super().supports(fault_kind)
