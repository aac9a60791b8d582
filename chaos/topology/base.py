"""The seam between the runner/faults and where the nodes actually run.

A topology brings up the rendezvous store (if the job needs one outside the agents), starts
one launcher agent per node on demand, knows every process of each node (the agent's tree
plus workers that left it), and tears everything down. Faults act only through this protocol,
so the `local`, `netns` and `docker` backends can differ in how a node is built without the
faults knowing.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from chaos.topology.view import JobView


class TopologyError(RuntimeError):
    """The topology cannot run this scenario (a missing binary, an unsupported combination)."""


@dataclass(frozen=True, kw_only=True)
class NodeHandle:
    index: int
    addr: str  # the node's address (its --local-addr)
    pid: int  # the launcher agent
    argv: tuple[str, ...]
    dir: Path  # RUN_DIR/nodes/<index>


@dataclass(frozen=True, kw_only=True)
class Support:
    """Whether a topology can inject a fault kind; `reason` says why not."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


class Store(Protocol):
    """The rendezvous store as faults see it."""

    @property
    def kind(self) -> str:
        """ "c10d" (hosted by an agent) or "etcd" (a cluster the topology runs)."""
        ...

    @property
    def endpoint(self) -> str:
        """What --rdzv-endpoint gets (etcd: every member, comma-separated)."""
        ...

    @property
    def host_node(self) -> int | None:
        """c10d: the node whose agent hosts the store; None for etcd."""
        ...

    def member_count(self) -> int: ...

    def member_pid(self, index: int) -> int | None: ...

    def kill_member(self, index: int) -> int | None:
        """SIGKILLs etcd member `index`; returns its pid (None if it was already gone)."""
        ...

    def leader_index(self, timeout_s: float = 10.0) -> int: ...


class Topology(Protocol):
    backend: str
    run_id: str
    view: JobView

    @property
    def store(self) -> Store: ...

    def up(self) -> None:
        """Brings up what must exist before the first agent (an etcd cluster)."""
        ...

    def start_node(self, index: int) -> NodeHandle: ...

    def nodes(self) -> dict[int, NodeHandle]:
        """Every node started so far."""
        ...

    def poll(self, index: int) -> int | None:
        """The agent's exit code once it has exited, else None."""
        ...

    def refresh(self) -> None:
        """Learns the processes started since the last call (call it often while running)."""
        ...

    def host_pid(self, index: int, node_pid: int) -> int | None:
        """The harness's pid of the live process that node `index` knows as `node_pid` (event
        logs and step reports name pids as the node sees them; a container has its own PID
        namespace), or None when no such process of that node is alive."""
        ...

    def node_pids(self, index: int) -> list[int]:
        """Every live process of that node: the agent first, then its tree and its workers."""
        ...

    def signal_node(self, index: int, pids: list[int], sig: signal.Signals) -> list[int]:
        """Sends `sig` to those pids of node `index` (only processes of the job); returns the
        pids actually signalled."""
        ...

    def crash_node(self, index: int) -> list[int]:
        """Kills every process of the node at once (SIGKILL); returns the pids killed."""
        ...

    def job_pids(self) -> list[int]:
        """Every live process of the job on every node (not the harness's etcd)."""
        ...

    def bound_ports(self) -> list[int]:
        """The job's rendezvous and master ports that something still listens on."""
        ...

    def supports(self, fault_kind: str) -> Support: ...

    def stop_all(self) -> dict[int, int | None]:
        """Kills every process of the job and the store; returns each agent's exit code."""
        ...
