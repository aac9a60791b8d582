"""Who is in the job and with which ranks.

`create_rendezvous(config)` picks the backend by name and imports it lazily, so the
single-node path never imports torch or an etcd client.

The node that serves the workers' bootstrap store (MASTER_ADDR:MASTER_PORT) binds its socket
here, before the round forms, so the port is known to every member; the server that answers
on it comes from the agent (`serve_store`), so this package starts no server of its own for
the workers and knows nothing of them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from launcher.config import LaunchConfig
from launcher.events import EventSink

if TYPE_CHECKING:
    from launcher.rendezvous.state.model import Assignment


@dataclass(frozen=True, kw_only=True)
class RoundInfo:
    """The outcome of one rendezvous round, as seen by one node."""

    round: int
    group_rank: int
    group_world_size: int
    base_global_rank: int
    world_size: int
    base_role_rank: int
    role_world_size: int
    master_addr: str
    master_port: int
    use_agent_store: bool
    restart_count: int  # job-wide: every worker of the round sees the same count
    reason: str  # why this round formed: initial, worker_failure, scale_up, node_lost, ...
    charged: bool  # whether forming it used the restart budget
    budget_spent: bool  # the restart budget is exhausted: stop, do not start workers
    detail: str = ""  # what caused the round (the failing worker, the lost node)
    members: tuple[str, ...] = ()


def round_info(a: Assignment) -> RoundInfo:
    """A dynamic round's assignment (rank numbers from its closer) as the agent sees it."""
    from launcher.rendezvous.state.model import FAILED  # only multi-node agents need it

    return RoundInfo(
        round=a.round,
        group_rank=a.group_rank,
        group_world_size=a.group_world_size,
        base_global_rank=a.base_rank,
        world_size=a.world_size,
        base_role_rank=a.base_rank,
        role_world_size=a.world_size,
        master_addr=a.master_addr,
        master_port=a.master_port,
        use_agent_store=True,
        restart_count=a.restart_count,
        reason=a.reason,
        charged=a.charged,
        budget_spent=a.status == FAILED,
        detail=a.detail,
        members=a.members,
    )


class WorkersStore(Protocol):
    """The workers' bootstrap store, served on listening sockets the rendezvous bound."""

    def start(self) -> None: ...

    def reset(self) -> None:
        """Drop every key and connection: the next worker group starts from nothing."""
        ...

    def stop(self) -> None: ...


# Makes (does not start) the workers' store on bound, listening sockets (one port, one per
# address: rendezvous/addresses.py) that it then owns.
ServeStore = Callable[[list[socket.socket]], WorkersStore]


class Rendezvous(Protocol):
    def next_round(self) -> RoundInfo | None:
        """The next round this node is a member of; None if the job ended while this node
        waited as a spare."""
        ...

    def check(self) -> str | None:
        """Called while workers run: why the job must re-form now, or None."""
        ...

    def wakeup_fd(self) -> int | None:
        """Readable when `check` may have news (so the agent need not poll)."""
        ...

    def report_failure(self, detail: str, *, reason: str = "worker_failure") -> None:
        """Every node must restart (charged): a worker failed, or hung (reason "hang")."""
        ...

    def hang_dumped(self) -> None:
        """This node has taken its ranks' stacks after a hang (the round before the bump)."""
        ...

    def await_dumps(self, timeout_s: float) -> int:
        """Waits, bounded, until every node of the hung round has taken its ranks' stacks;
        how many had."""
        ...

    def publish_window(self, window: int, payload: str) -> None:
        """Best effort: this node's straggler medians for its `window`-th window."""
        ...

    def collect_window(self, window: int) -> list[str]:
        """Every member's published medians for `window` (read by group rank 0 only)."""
        ...

    def finish(self, *, succeeded: bool = True) -> None:
        """The end of this node's part: its workers all succeeded, or the job failed (the
        restart budget is spent). Waits, bounded, so peers can finish with the store."""
        ...

    def leave(self) -> None:
        """This node is going away on purpose (a signal): let the rest re-form at once."""
        ...

    def shutdown(self) -> None: ...


def create_rendezvous(
    config: LaunchConfig,
    *,
    node_id: str,
    interrupt_fd: int,
    serve_store: ServeStore,
    events: EventSink | None = None,
) -> Rendezvous:
    if (config.max_nodes == 1 and config.rdzv_backend in ("static", "memory")) or config.standalone:
        from launcher.rendezvous.local import LocalRendezvous

        return LocalRendezvous(config, node_id=node_id, serve_store=serve_store)
    from launcher.rendezvous.dynamic import DynamicRendezvous

    return DynamicRendezvous(
        config,
        node_id=node_id,
        interrupt_fd=interrupt_fd,
        serve_store=serve_store,
        events=events,
    )
