"""The `docker` topology: every node is a container on a private, internal Docker network.

Driven through the Docker SDK for Python. `up()` first removes what a killed harness left
behind (containers and networks labelled `chaos.harness` whose owner process is gone), then
makes sure the node image exists (built offline, see chaos.topology.docker_image) and creates
one user-defined bridge network with `internal: true` (no route out of it) on a private /24,
10.214.<k>.0/24 with k drawn per run. Node i is the container `chx<tag>-n<i>` at
10.214.<k>.<10+i>, hostname `node<i>`, with docker-init as PID 1, then a small shell, then the
agent (chaos.topology.node_shell: the shell keeps the container up while anything the agent
left behind lives, so orphans are caught here too).

The run directory is bind-mounted read-write at its own path and the project read-only at
its own, so the agents' event logs, the workload's step reports and checkpoints land where
the harness reads them, exactly as with the `local` topology. The c10d store is hosted by
node 0 at its container address; an etcd store is one container per member on the same
network (chaos.topology.etcd_docker).

Processes are seen from the host: every process under the container's init (a PID
namespace keeps even orphans under it), tracked by host pid and start time as everywhere
else. Event logs and step reports name pids as the node sees them; `host_pid` translates
through /proc/<pid>/status (NSpid). Crashing a node is `docker kill` (the kernel ends the
whole PID namespace with its init); pausing is SIGSTOP of the node's processes as in the
other topologies; partitions are iptables rules run inside the container's network namespace
(`nsenter -t <init pid> -n`, see chaos.faults.partition). Teardown removes every container,
so a job cannot leak processes out of a docker run, whatever its launcher does.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.scenario.schema import Scenario
from chaos.topology import node_shell, procs
from chaos.topology.base import NodeHandle, Support, TopologyError
from chaos.topology.docker_image import (
    LABEL,
    LABEL_OWNER,
    LABEL_RUN,
    NodeImage,
    remove_containers,
    remove_stale,
)
from chaos.topology.docker_image import owner_label as _owner_label
from chaos.topology.etcd import EtcdCluster
from chaos.topology.etcd_docker import DockerPlacement
from chaos.topology.local import REPO_ROOT, C10dStore, LocalTopology
from chaos.topology.view import JobView

STORE_PORT = 29400  # every container has its own port space: a fixed port cannot clash
ETCD_HOST_BASE = 200  # etcd member i is 10.214.<k>.<200+i>
NODE_IFNAME = "eth0"
_SUBNET_TRIES = 20
_WAIT_S = 10.0
# The host's environment that means nothing (or the wrong thing) inside a container.
_HOST_ONLY_ENV = ("HOSTNAME", "PWD", "OLDPWD", "SHLVL", "TERM", "DISPLAY", "SSH_AUTH_SOCK")
_USER_IMAGE_DROPS = ("PATH", "HOME", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "PYTHONHOME")


def docker_client() -> Any:
    """A client of a daemon that answers, or TopologyError saying what is missing."""
    try:
        import docker
    except ImportError:
        raise TopologyError(
            "the docker topology needs the Docker SDK for Python: pip install docker"
        ) from None
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as err:  # the SDK raises several unrelated types for "no daemon"
        raise TopologyError(
            f"the docker topology needs a running Docker daemon ({type(err).__name__}): "
            "start dockerd (see docs/harness.md) or use --backend local"
        ) from None
    return client


def have_docker() -> str | None:
    """Why the docker topology cannot run here, or None when it can."""
    try:
        docker_client().close()
    except TopologyError as err:
        return str(err)
    return None


@dataclass
class _Container:
    id: str
    name: str
    init: procs.ProcId  # docker-init, PID 1 of the container
    shell: procs.ProcId  # node_shell: the agent's parent, not part of the job
    agent: procs.ProcId
    handle: NodeHandle
    code: int | None = None


class DockerTopology(LocalTopology):
    backend = "docker"

    def __init__(self, scenario: Scenario, *, run_dir: Path, launcher: str, view: JobView) -> None:
        self.client = docker_client()
        # Containers see the run dir at the path the agents' argv names: make it absolute.
        super().__init__(scenario, run_dir=run_dir.resolve(), launcher=launcher, view=view)
        self.tag = uuid.uuid4().hex[:6]
        self.prefix = f"chx{self.tag}"
        self.network_name = f"{self.prefix}-net"
        self.subnet_k = 0
        self._store = C10dStore(f"{self.addr_of(0)}:{STORE_PORT}", STORE_PORT)
        self._labels = {LABEL: "node", LABEL_RUN: self.run_id, LABEL_OWNER: _owner_label()}
        self._network: Any = None
        self._image: NodeImage | None = None
        self._ctrs: dict[int, _Container] = {}
        self._created: list[str] = []  # container ids, started or not
        self._crashed: set[int] = set()
        self.stale_removed: list[str] = []
        if scenario.topology.rdzv_backend == "etcd":
            placement = DockerPlacement(
                self.client,
                network=self.network_name,
                address=self.etcd_addr,
                name=lambda i: f"{self.prefix}-e{i}",
                labels=self._labels,
            )
            self._store = self._etcd_cluster(placement)

    # -- names and addresses -----------------------------------------------------------------
    def addr_of(self, index: int) -> str:
        if not 0 <= index <= self.max_index:
            raise TopologyError(f"node {index} is not in the topology (0..{self.max_index})")
        if not self.subnet_k:
            self.subnet_k = random.Random(self.tag).randrange(16, 240)
        return f"10.214.{self.subnet_k}.{10 + index}"

    def node_indices(self) -> list[int]:
        return list(range(self.max_index + 1))

    def etcd_addr(self, index: int) -> str:
        """etcd member `index`'s address (container `<prefix>-e<index>`, etcd_docker.py)."""
        if not 0 <= index < self._store.member_count():
            raise TopologyError(f"etcd member {index} is not in the topology")
        self.addr_of(0)  # draws the subnet if up() has not yet
        return f"10.214.{self.subnet_k}.{ETCD_HOST_BASE + index}"

    def container_name(self, index: int) -> str:  # also what slow_worker cpu_quota updates
        return f"{self.prefix}-n{index}"

    def net_exec(self, index: int) -> list[str]:
        """The command prefix that runs a command in node `index`'s network namespace."""
        ctr = self._ctrs.get(index)
        if ctr is None or not ctr.init.alive():
            raise TopologyError(f"node {index} has no running container")
        return ["nsenter", "-t", str(ctr.init.pid), "-n"]

    # -- bring-up ----------------------------------------------------------------------------
    def up(self) -> None:
        import docker.errors
        import docker.types

        self.stale_removed = remove_stale(self.client)
        self._image = NodeImage.choose(self.client, self.scenario.topology.image)
        labels = {**self._labels, LABEL: "network"}
        draw = random.Random(self.tag)
        for _ in range(_SUBNET_TRIES):
            pool = docker.types.IPAMPool(subnet=f"10.214.{self.subnet_k}.0/24")
            try:
                self._network = self.client.networks.create(
                    self.network_name,
                    driver="bridge",
                    internal=True,  # no gateway out: the job reaches only its own nodes
                    ipam=docker.types.IPAMConfig(pool_configs=[pool]),
                    labels=labels,
                )
                break
            except docker.errors.APIError as err:
                if "overlap" not in str(err).lower():
                    raise TopologyError(f"docker network create: {err}") from None
                self.subnet_k = draw.randrange(16, 240)  # another run holds it: draw again
        else:
            raise TopologyError("no free 10.214.x.0/24 subnet for the docker network")
        if isinstance(self._store, EtcdCluster):
            self._store.start()  # its members join the network just made
        else:
            self._store = C10dStore(f"{self.addr_of(0)}:{STORE_PORT}", STORE_PORT)

    def _container_env(self, index: int, node_dir: Path) -> dict[str, str]:
        assert self._image is not None
        env = {k: v for k, v in self.node_env(index).items() if k not in _HOST_ONLY_ENV}
        if not self._image.host_mounts:
            env = {k: v for k, v in env.items() if k not in _USER_IMAGE_DROPS}
        env["CHAOS_NODE_ADDR"] = self.addr_of(index)
        env["CHAOS_NODE_DIR"] = str(node_dir)
        if self.links.get(index) is not None:
            env["CHAOS_WAIT_FOR"] = str(self.links.socket_of(index))
        env["GLOO_SOCKET_IFNAME"] = NODE_IFNAME
        env["TP_SOCKET_IFNAME"] = NODE_IFNAME
        return env

    def agent_argv(self, index: int) -> list[str]:
        argv = super().agent_argv(index)
        argv[argv.index("--local-addr") + 1] = self.addr_of(index)
        return argv

    def start_node(self, index: int) -> NodeHandle:
        import docker.errors

        if index in self._ctrs:
            raise TopologyError(f"node {index} was already started")
        if self._network is None or self._image is None:
            raise TopologyError("the docker network does not exist (was up() called?)")
        node_dir = self.run_dir / "nodes" / str(index)
        (node_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "workload" / "control").mkdir(parents=True, exist_ok=True)
        self.view.watch_node(index)
        argv = self.agent_argv(index)
        if argv[0] == sys.executable:  # ft_launcher's own venv script keeps its path
            argv[0] = self._image.python
        command = node_shell.command(argv)
        api, name = self.client.api, self.container_name(index)
        host_config = api.create_host_config(
            binds=self._image.binds(REPO_ROOT, self.run_dir),
            init=True,  # docker-init reaps what the agent orphans
            network_mode=self.network_name,
        )
        endpoint = api.create_endpoint_config(ipv4_address=self.addr_of(index))
        created = api.create_container(
            self._image.name,
            command=command,
            name=name,
            hostname=f"node{index}",
            environment=self._container_env(index, node_dir),
            working_dir=str(REPO_ROOT),
            labels=self._labels,
            host_config=host_config,
            networking_config=api.create_networking_config({self.network_name: endpoint}),
        )
        cid = str(created["Id"])
        self._created.append(cid)  # removed at teardown even if it never starts
        try:
            api.start(cid)
        except docker.errors.APIError as err:
            raise TopologyError(
                f"container {name} of image {self._image.name} could not start: "
                f"{err.explanation or err} (a user image needs /bin/sh and python3 with torch)"
            ) from None
        init_pid = int(api.inspect_container(cid)["State"]["Pid"])
        # The node's shell waits for its store-link proxy (CHAOS_WAIT_FOR) before the agent.
        self.links.start(index, ["nsenter", "-t", str(init_pid), "-n"], wait=False)
        init = procs.identify(init_pid)
        started = node_shell.wait_agent(init_pid, _WAIT_S)
        if init is None or started is None:
            said = api.logs(cid).decode(errors="replace").strip().splitlines()
            raise TopologyError(
                f"container {name} of image {self._image.name} exited at once: "
                f"{said[-1] if said else f'see {node_dir}/stderr.log'} "
                "(a user image needs /bin/sh and python3 with torch)"
            )
        shell, agent = started
        handle = NodeHandle(
            index=index, addr=self.addr_of(index), pid=agent.pid, argv=tuple(command), dir=node_dir
        )
        self._ctrs[index] = _Container(
            id=cid, name=name, init=init, shell=shell, agent=agent, handle=handle
        )
        self._learn(agent.pid, index, trusted=True)
        return handle

    def nodes(self) -> dict[int, NodeHandle]:
        return {i: ctr.handle for i, ctr in self._ctrs.items()}

    def poll(self, index: int) -> int | None:
        ctr = self._ctrs[index]
        if ctr.code is not None:
            return ctr.code
        if ctr.agent.alive():
            return None
        rc = None if index in self._crashed else node_shell.agent_rc(ctr.handle.dir)
        if rc is None:
            state = self.client.api.inspect_container(ctr.id)["State"]
            if state.get("Running"):
                return None  # the agent is gone; its shell writes agent.rc in a moment
            # As for a local agent the harness SIGKILLed: its own status, not docker's 137.
            rc = -9 if index in self._crashed else int(state.get("ExitCode", -1))
        ctr.code = rc
        return rc

    # -- which processes belong to the job ---------------------------------------------------
    def refresh(self) -> None:
        self.view.poll()
        for index, ctr in self._ctrs.items():
            if not ctr.init.alive():
                continue
            # Everything but docker-init and the node's shell (whose `sleep`s are not the
            # job's): the agent's tree, and whatever it orphaned (reparented to docker-init).
            for child in procs.children(ctr.init.pid):
                root = ctr.agent.pid if child == ctr.shell.pid else child
                if root == ctr.agent.pid and not ctr.agent.alive():
                    continue
                for pid in procs.tree(root):
                    self._learn(pid, index, trusted=True)

    def _not_job(self, pid: int) -> bool:
        """docker-init, the node shell and its `sleep`s carry the marker but are not the job."""
        shells = {ctr.shell.pid: ctr.agent.pid for ctr in self._ctrs.values()}
        inits = {ctr.init.pid for ctr in self._ctrs.values()}
        parent = procs.parent(pid)
        return pid in inits or pid in shells or (parent in shells and pid != shells[parent])

    def node_pids(self, index: int) -> list[int]:
        self.refresh()
        agent = self._ctrs[index].agent.pid
        pids = sorted(ident.pid for ident in self._alive(index))
        return sorted(pids, key=lambda pid: pid != agent)

    def host_pid(self, index: int, node_pid: int) -> int | None:
        for pid in self.node_pids(index):
            if procs.ns_pid(pid) == node_pid:
                return pid
        return None

    def bound_ports(self) -> list[int]:
        ports = self._job_ports() | {STORE_PORT}
        bound: set[int] = set()
        for ctr in self._ctrs.values():
            if ctr.init.alive():  # /proc/<pid>/net is the network namespace of that process
                bound.update(procs.listening(ports, pid=ctr.init.pid))
        return sorted(bound)

    def supports(self, fault_kind: str) -> Support:
        if fault_kind == "partition":
            if os.geteuid() != 0 or shutil.which("nsenter") is None:
                return Support(ok=False, reason="docker partitions need root and nsenter")
            if shutil.which("iptables") is None:
                return Support(ok=False, reason="docker partitions need iptables")
            return Support(ok=True)
        return super().supports(fault_kind)

    # -- killing -----------------------------------------------------------------------------
    def _kill_container(self, ctr: _Container) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.APIError):  # it has already stopped
            self.client.api.kill(ctr.id, "SIGKILL")
        with contextlib.suppress(Exception):
            self.client.api.wait(ctr.id, timeout=_WAIT_S)

    def crash_node(self, index: int) -> list[int]:
        pids = self.node_pids(index)
        self._crashed.add(index)
        self._kill_container(self._ctrs[index])
        return [pid for pid in pids if procs.proc_start(pid) is None]

    def stop_all(self) -> dict[int, int | None]:
        codes: dict[int, int | None] = {}
        try:
            for index, ctr in self._ctrs.items():
                if self.poll(index) is None:
                    self._crashed.add(index)
                    self._kill_container(ctr)
                codes[index] = self.poll(index)
            return codes
        finally:
            self.links.close()
            failed: list[str] = []
            try:
                self._stop_store()  # its containers are on the network: before remove_objects
            except (OSError, RuntimeError) as err:
                failed.append(f"etcd: {err}")
            failed += self.remove_objects()
            if failed:
                raise TopologyError(f"could not remove docker objects: {failed}")

    def remove_objects(self) -> list[str]:
        """Removes this run's containers and network; returns what could not be removed."""
        import docker.errors

        failed, self._created = remove_containers(self.client, self._created)
        if self._network is not None:
            try:
                self._network.remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as err:
                failed.append(f"network {self.network_name}: {err}")
            self._network = None
        return failed
