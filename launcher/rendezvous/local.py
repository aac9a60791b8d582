"""The one-node rendezvous: standalone (`--standalone`, or torchrun's implicit single-node
mode) and single-node static (`--master-port`).

The agent hosts the workers' bootstrap store itself (TORCHELASTIC_USE_AGENT_STORE=True,
as under torchrun) on a socket bound here first, so the port is reserved before any worker
exists and stays the same across restarts; the server on it is the agent's (`serve_store`).
"""

from __future__ import annotations

import errno
import socket

from launcher.config import LaunchConfig
from launcher.errors import ConfigError
from launcher.rendezvous import RoundInfo, ServeStore
from launcher.rendezvous.addresses import BindPlan, listen, log_plan, plan_binding


def bind_listeners(plan: BindPlan, port: int, *, where: str, flag: str) -> list[socket.socket]:
    """The workers' store's listening sockets, bound before any worker exists."""
    try:
        return listen(plan, port)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {where} is already in use",
                flag=flag,
                fix="pick another port, or drop the flag to let the launcher choose a free one",
            ) from err
        raise ConfigError(f"cannot bind {where}:{port}: {err.strerror}", flag=flag) from err


class LocalRendezvous:
    def __init__(self, config: LaunchConfig, *, node_id: str, serve_store: ServeStore) -> None:
        self._config = config
        self._node_id = node_id
        if config.standalone:
            self.master_addr = config.local_addr or socket.getfqdn()
            port, flag = 0, "--standalone"
        else:
            self.master_addr = config.rdzv_host
            port, flag = config.rdzv_port or 0, "--master-port"
        # Only this machine's workers connect: no other machine needs to reach it.
        plan = plan_binding(self.master_addr, store_bind=config.rdzv.store_bind, remote_peers=False)
        listeners = bind_listeners(plan, port, where=self.master_addr, flag=flag)
        self.master_port = int(listeners[0].getsockname()[1])
        log_plan("the workers' store", plan, self.master_port)
        self._store = serve_store(listeners)
        self._store.start()
        self._round = -1
        self._restart_count = 0
        self._pending_failure: str | None = None
        self._pending_reason = "worker_failure"

    def next_round(self) -> RoundInfo:
        self._round += 1
        if self._round > 0:
            # Workers prefix keys by restart count, which a membership change keeps: start
            # every round from an empty store so no stale key can leak into it.
            self._store.reset()
        detail, self._pending_failure = self._pending_failure, None
        if detail is not None:
            self._restart_count += 1
        nproc = self._config.nproc_per_node
        return RoundInfo(
            round=self._round,
            group_rank=0,
            group_world_size=1,
            base_global_rank=0,
            world_size=nproc,
            base_role_rank=0,
            role_world_size=nproc,
            master_addr=self.master_addr,
            master_port=self.master_port,
            use_agent_store=True,
            restart_count=self._restart_count,
            reason="initial" if self._round == 0 else self._pending_reason,
            charged=detail is not None,
            budget_spent=self._restart_count > self._config.max_restarts,
            detail=detail or "",
            members=(self._node_id,),
        )

    def check(self) -> str | None:
        return None

    def wakeup_fd(self) -> int | None:
        return None

    def report_failure(self, detail: str, *, reason: str = "worker_failure") -> None:
        self._pending_failure = detail
        self._pending_reason = reason

    def hang_dumped(self) -> None:
        return None

    def await_dumps(self, timeout_s: float) -> int:
        return 1  # one node: this one

    def publish_window(self, window: int, payload: str) -> None:
        return None  # one node scores its own windows: nothing to exchange

    def collect_window(self, window: int) -> list[str]:
        return []

    def finish(self, *, succeeded: bool = True) -> None:
        return None

    def leave(self) -> None:
        return None

    def shutdown(self) -> None:
        self._store.stop()
