"""The `local` topology: every node is a launcher agent process on its own loopback address.

Node i runs `python3 -m launcher` (or `python3 -m torch.distributed.run`) with
`--local-addr 127.0.0.(2+i)`, in its own session, with stdout/stderr in RUN_DIR/nodes/<i>/.
With c10d the store lives in node 0's agent (its address is the endpoint's, and every
launcher gets `--rdzv-conf is_host=1/0`, so no other agent can win the race to host); with
etcd the topology runs a real etcd cluster on 127.0.0.1. Needs no root, so it cannot cut the
network: partitions need the netns or docker backends.

The processes of a node are its agent's tree (walked through /proc while the agent lives)
plus the workers its event log and the workload's step reports name: torchrun's workers
outlive a SIGKILLed agent, and those orphans are still the node's and still the harness's to
kill. Every tracked process is a (pid, start time) pair, and a pid that did not come from an
agent's tree must carry this run's CHAOS_RUN_ID in its environment, so nothing outside the job
is ever signalled.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from chaos.scenario.schema import FAULT_KINDS, Scenario
from chaos.topology import launchers, procs
from chaos.topology.base import NodeHandle, Support, TopologyError
from chaos.topology.etcd import EtcdCluster
from chaos.topology.etcd_members import Placement, ProcessPlacement, die_with_parent
from chaos.topology.launcher_args import split_rdzv_conf, torch_etcd_v2_conf, without_extensions
from chaos.topology.store_links import StoreLink, StoreLinks, linked_nodes
from chaos.topology.view import JobView
from launcher.events import RDZV_ROUND_COMPLETE, WORKER_STARTED

REPO_ROOT = Path(__file__).resolve().parents[2]
# Inherited values of these would confuse the launcher or the workload.
_DROPPED_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK")


def node_addr(index: int) -> str:
    if not 0 <= index <= 250:
        raise TopologyError(f"local topology: node index {index} has no loopback address")
    return f"127.0.0.{2 + index}"


def free_port() -> int:
    """A port free on every local address (TCPStore listens on all of them)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
        return int(sock.getsockname()[1])


def unique_run_id(name: str) -> str:
    """Distinct per run, so parallel runs (pytest-xdist) never share a rendezvous."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:24] or "run"
    return f"chaos-{slug}-{worker}-{uuid.uuid4().hex[:8]}"


class C10dStore:
    """The c10d store: a TCPStore inside the agent of node 0 (nothing to run, no members)."""

    kind = "c10d"

    def __init__(self, endpoint: str, port: int) -> None:
        self.endpoint = endpoint
        self.port = port
        self.host_node: int | None = 0

    def member_count(self) -> int:
        return 0

    def member_pid(self, index: int) -> int | None:
        return None

    def kill_member(self, index: int) -> int | None:
        raise TopologyError("a c10d store has no members to kill; crash its host node instead")

    def leader_index(self, timeout_s: float = 10.0) -> int:
        raise TopologyError("a c10d store has no leader")


@dataclass
class _Node:
    handle: NodeHandle
    proc: subprocess.Popen[bytes]


class LocalTopology:
    backend = "local"

    def __init__(self, scenario: Scenario, *, run_dir: Path, launcher: str, view: JobView) -> None:
        topo = scenario.topology
        if topo.rdzv_backend not in ("c10d", "etcd"):
            raise TopologyError(f"unknown rendezvous backend {topo.rdzv_backend!r}")
        # torch's etcd backends speak only the v2 API, through the python-etcd client.
        torch_etcd = launcher == "torchrun" and topo.rdzv_backend == "etcd"
        if torch_etcd and importlib.util.find_spec("etcd") is None:
            raise TopologyError("torchrun's etcd rendezvous needs python-etcd (pip install)")
        launchers.check_supported(launcher, topo.rdzv_backend)
        self.scenario = scenario
        self.run_dir = run_dir
        self.launcher = launcher
        self.view = view
        self.run_id = unique_run_id(scenario.name)
        self.max_index = topo.nodes + topo.spares - 1
        self._store: C10dStore | EtcdCluster
        if topo.rdzv_backend == "c10d":
            port = free_port()
            self._store = C10dStore(f"{node_addr(0)}:{port}", port)
        else:
            self._store = self._etcd_cluster(ProcessPlacement())
        self._nodes: dict[int, _Node] = {}
        in_namespace = self.backend != "local"  # netns, docker: a proxy process in the node
        self.links = StoreLinks(run_dir, linked_nodes(scenario), in_namespace=in_namespace)
        self._known: dict[int, tuple[procs.ProcId, int]] = {}  # pid -> (identity, node)
        self._events_seen: dict[int, int] = {}
        self._steps_seen = 0

    @property
    def store(self) -> C10dStore | EtcdCluster:
        return self._store

    def _etcd_cluster(self, placement: Placement) -> EtcdCluster:
        """The run's etcd cluster, its members wherever `placement` puts them."""
        return EtcdCluster(
            self.scenario.topology.etcd_members,
            log_dir=self.run_dir / "etcd",
            enable_v2=self.launcher == "torchrun",  # torch's etcd-v2 backend speaks only v2
            placement=placement,
            tls=self.scenario.topology.rdzv_tls,  # certificates in RUN_DIR/etcd/tls
        )

    def _stop_store(self) -> None:
        if isinstance(self._store, EtcdCluster):
            self._store.stop()

    # -- bring-up ----------------------------------------------------------------------------
    def up(self) -> None:
        if isinstance(self._store, EtcdCluster):
            self._store.start()

    def _endpoint(self) -> str:
        if isinstance(self._store, EtcdCluster) and self.launcher == "torchrun":
            return self._store.endpoint.split(",")[0]  # torch's client takes exactly one
        return self._store.endpoint

    def agent_argv(self, index: int) -> list[str]:
        topo, work = self.scenario.topology, self.scenario.workload
        low = topo.min_nodes if topo.min_nodes is not None else topo.nodes
        high = topo.max_nodes if topo.max_nodes is not None else topo.nodes + topo.spares
        rest, conf = split_rdzv_conf(topo.launcher_args)
        if self.launcher in launchers.TORCHRUN_LIKE:
            rest = without_extensions(rest)
        backend = topo.rdzv_backend
        if backend == "c10d":
            # Every launcher here (ours too) treats a loopback endpoint as "mine", as torchrun
            # does, and the agent that binds first hosts: name the host, so node 0 hosts the
            # store whatever the start order (store_host_loss kills node 0 to kill it).
            conf.setdefault("is_host", "1" if index == 0 else "0")
        if isinstance(self._store, EtcdCluster) and self._store.tls is not None:
            conf.update(self._store.tls.rdzv_conf())
        if self.launcher == "torchrun" and backend == "etcd":
            backend, conf = "etcd-v2", torch_etcd_v2_conf(conf)
        if topo.rdzv_secret and self.launcher == "launcher":  # only ours signs its values
            conf["secret_file"] = str(self._secret_file())
        node_dir = self.run_dir / "nodes" / str(index)
        argv = launchers.agent_command(self.launcher)
        argv += ["--nnodes", str(low) if low == high else f"{low}:{high}"]
        argv += ["--nproc-per-node", str(topo.nproc_per_node)]
        endpoint = self.links.endpoint(index, self._endpoint(), host_node=self.store.host_node)
        argv += ["--rdzv-backend", backend, "--rdzv-endpoint", endpoint]
        argv += ["--rdzv-id", self.run_id, "--local-addr", node_addr(index)]
        argv += ["--log-dir", str(node_dir / "logs")]
        if conf:
            argv += ["--rdzv-conf", ",".join(f"{k}={v}" for k, v in conf.items())]
        if self.launcher == "launcher":
            argv += ["--event-log", str(node_dir / "events.jsonl")]
        script = Path(work.script)
        argv += [*rest, str(script if script.is_absolute() else REPO_ROOT / script)]
        argv += ["--steps", str(work.steps), "--step-s", str(work.step_s)]
        argv += ["--checkpoint-every", str(work.checkpoint_every)]
        argv += ["--ckpt-dir", str(self.run_dir / "workload" / "ckpt"), *work.args]
        return argv

    def _secret_file(self) -> Path:
        path = self.run_dir / "job.secret"
        if not path.exists():
            path.write_bytes(secrets.token_hex(32).encode())
            path.chmod(0o600)
        return path

    def node_env(self, index: int) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PET_", "TORCHELASTIC_", "CHAOS_")) and k not in _DROPPED_ENV
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        workload = self.run_dir / "workload"
        env["CHAOS_RUN_ID"] = self.run_id
        env["CHAOS_NODE"] = str(index)
        env["CHAOS_NODE_ADDR"] = node_addr(index)
        env["CHAOS_STEPS_FILE"] = str(workload / "steps.jsonl")
        env["CHAOS_CONTROL_DIR"] = str(workload / "control")
        return env

    def start_node(self, index: int) -> NodeHandle:
        if index in self._nodes:
            raise TopologyError(f"node {index} was already started")
        if not 0 <= index <= self.max_index:
            raise TopologyError(f"node {index} is not in the topology (0..{self.max_index})")
        node_dir = self.run_dir / "nodes" / str(index)
        (node_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "workload" / "control").mkdir(parents=True, exist_ok=True)
        self.view.watch_node(index)
        argv = self.agent_argv(index)
        with (
            (node_dir / "stdout.log").open("ab") as out,
            (node_dir / "stderr.log").open("ab") as err,
        ):
            proc = subprocess.Popen(
                die_with_parent(argv),  # agents die with the harness, even on SIGKILL
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.node_env(index),
                cwd=REPO_ROOT,
                start_new_session=True,  # its own session: the harness finds and kills its tree
            )
        handle = NodeHandle(
            index=index, addr=node_addr(index), pid=proc.pid, argv=tuple(argv), dir=node_dir
        )
        self._nodes[index] = _Node(handle=handle, proc=proc)
        self._learn(proc.pid, index, trusted=True)
        return handle

    def store_link(self, index: int) -> StoreLink | None:
        """The proxy on node `index`'s link to the store (`toxic` faults), if it has one."""
        return self.links.get(index)

    def nodes(self) -> dict[int, NodeHandle]:
        return {i: node.handle for i, node in self._nodes.items()}

    def poll(self, index: int) -> int | None:
        return self._nodes[index].proc.poll()

    # -- which processes belong to the job ---------------------------------------------------
    def _ours(self, pid: int) -> bool:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False
        return f"CHAOS_RUN_ID={self.run_id}".encode() in environ.split(b"\0")

    def _learn(self, pid: int, node: int, *, trusted: bool) -> None:
        known = self._known.get(pid)
        if known is not None and known[0].alive():
            return
        ident = procs.identify(pid)
        if ident is not None and (trusted or self._ours(pid)):
            self._known[pid] = (ident, node)

    def refresh(self) -> None:
        self.view.poll()
        for index, node in self._nodes.items():
            # Not reaped yet, so the pid is still this agent (stopped or running).
            if node.proc.poll() is None:
                for child in procs.tree(node.proc.pid):
                    self._learn(child, index, trusted=True)
            events = self.view.events.get(index, [])
            for event in events[self._events_seen.get(index, 0) :]:
                worker = event.fields.get("pid")
                if event.name == WORKER_STARTED and isinstance(worker, int):
                    self._learn(worker, index, trusted=False)
            self._events_seen[index] = len(events)
        for row in self.view.steps[self._steps_seen :]:
            reporter, owner = row.get("pid"), row.get("node")
            if isinstance(reporter, int) and isinstance(owner, int) and owner in self._nodes:
                self._learn(reporter, owner, trusted=False)
        self._steps_seen = len(self.view.steps)

    def _alive(self, node: int | None = None) -> list[procs.ProcId]:
        return [
            ident
            for ident, owner in self._known.values()
            if (node is None or owner == node) and ident.alive()
        ]

    def node_pids(self, index: int) -> list[int]:
        self.refresh()
        agent = self._nodes[index].proc.pid
        pids = sorted(ident.pid for ident in self._alive(index))
        return sorted(pids, key=lambda pid: pid != agent)  # the agent first

    def signal_node(self, index: int, pids: list[int], sig: signal.Signals) -> list[int]:
        wanted = set(pids)
        targets = [ident for ident, owner in self._known.values() if owner == index]
        return procs.send([ident for ident in targets if ident.pid in wanted], sig)

    def job_pids(self) -> list[int]:
        self.refresh()
        self._learn_marked()
        return sorted(ident.pid for ident in self._alive())

    def _learn_marked(self) -> None:
        """Every process carrying this run's CHAOS_RUN_ID, however it left the agent's tree (a
        helper that called setsid and was reparented to init is no worker and in no event)."""
        for pid, env in procs.marked("CHAOS_RUN_ID", self.run_id).items():
            node = env.get("CHAOS_NODE", "")
            if node.isdigit() and int(node) in self._nodes and not self._not_job(pid):
                self._learn(pid, int(node), trusted=True)

    def _not_job(self, pid: int) -> bool:
        """Processes of the node's own plumbing that carry the marker too (none here)."""
        return False

    def host_pid(self, index: int, node_pid: int) -> int | None:
        """The harness's pid of a process that node `index` knows as `node_pid` (the same
        number here: every local node shares the harness's PID namespace)."""
        return node_pid if node_pid in self.node_pids(index) else None

    def _job_ports(self) -> set[int]:
        """The rendezvous and master ports the job used (from events and step reports)."""
        ports: set[int] = set()
        if isinstance(self._store, C10dStore):
            ports.add(self._store.port)
        for _, event in self.view.named(RDZV_ROUND_COMPLETE):
            if isinstance(event.fields.get("master_port"), int):
                ports.add(event.fields["master_port"])
        ports.update(r["master_port"] for r in self.view.steps if r.get("master_port"))
        return ports

    def bound_ports(self) -> list[int]:
        """The job's ports that one of its processes (or one not found) still listens on: the
        host's other jobs, a parallel scenario's too, may be handed a port this one gave back."""
        owned = procs.listening_owners(self._job_ports())
        return sorted(
            port for port, pids in owned.items() if not pids or any(map(self._ours, pids))
        )

    def supports(self, fault_kind: str) -> Support:
        if fault_kind not in FAULT_KINDS:
            return Support(ok=False, reason=f"unknown fault kind {fault_kind!r}")
        if fault_kind == "partition":
            return Support(ok=False, reason="partitions need --backend netns or docker (root)")
        if fault_kind == "intruder" and self.backend != "local":
            return Support(ok=False, reason="the intruder reaches the store on loopback: local")
        if fault_kind == "kill_etcd_member" and not isinstance(self._store, EtcdCluster):
            return Support(ok=False, reason="kill_etcd_member needs rdzv_backend: etcd")
        return Support(ok=True)

    # -- killing -----------------------------------------------------------------------------
    def _freeze_and_kill(self, node: int | None) -> list[int]:
        """SIGSTOPs every process (of one node, or all) until no new one appears, then SIGKILLs
        them together: a stopped agent cannot fork or react to its workers dying, so the rest
        of the job sees the node vanish at once, and nothing slips out of the kill."""
        frozen: set[int] = set()
        for _ in range(20):
            self.refresh()
            fresh = [p for p in self._alive(node) if p.pid not in frozen]
            if not fresh:
                break
            frozen.update(procs.send(fresh, signal.SIGSTOP))
        return sorted(procs.send(self._alive(node), signal.SIGKILL))

    def crash_node(self, index: int) -> list[int]:
        return self._freeze_and_kill(index)

    def stop_all(self) -> dict[int, int | None]:
        try:
            for _ in range(5):  # bounded: a second pass only if something escaped the first
                if not self._freeze_and_kill(None):
                    break
                time.sleep(0.05)  # let the kernel deliver the kills before looking again
            codes: dict[int, int | None] = {}
            for index, node in self._nodes.items():
                try:
                    codes[index] = node.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    codes[index] = None
            return codes
        finally:
            self.links.close()
            self._stop_store()
