"""The multi-node rendezvous: the pure protocol (state/) driven against a real store.

One instance per agent. The main thread joins rounds and checks the round key once per
monitor interval (O(1)); a heartbeat thread beats, watches this node's successor and
wakes the agent through a pipe when something changed. Every round, the node that gets
group rank 0 serves the workers' bootstrap store on a socket it bound *before* joining,
so MASTER_PORT is free by construction and every round starts from an empty store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

from launcher.config import LaunchConfig
from launcher.errors import RendezvousConnectionError, RendezvousTimeoutError
from launcher.rendezvous import RoundInfo
from launcher.rendezvous.driver import Driver
from launcher.rendezvous.local import bind_listener
from launcher.rendezvous.state import (
    FAILED,
    Assignment,
    Excluded,
    JobOver,
    NodeInfo,
    Params,
    RendezvousTimeout,
    WatchState,
    check_round,
    declared_dead,
    finish,
    heartbeat,
    join,
    leave,
    report_failure,
)
from launcher.rendezvous.store import Store
from launcher.workers.agent_store import AgentStoreServer

log = logging.getLogger(__name__)

EXIT_BARRIER_TIMEOUT_S = 300.0
# Heartbeat failures in a row after which the agent gives up on an unreachable store.
_MAX_STORE_FAILURES = 3


def open_store(config: LaunchConfig) -> Callable[[], Store]:
    """Opens the backend's store; returns a factory for more client connections."""
    opts = config.rdzv
    backend = config.rdzv_backend
    if backend in ("c10d", "static"):
        from launcher.rendezvous.backends.c10d import C10dStore

        is_host = opts.is_host
        if backend == "static":
            is_host = config.node_rank == 0
        timeout = opts.timeout_s if backend == "static" else opts.read_timeout_s
        first = C10dStore.open(
            config.rdzv_host,
            int(config.rdzv_port or 0),
            is_host=is_host,
            local_addr=config.local_addr,
            timeout_s=timeout,
            run_id=config.run_id,
        )
        clones: list[Store] = [first]

        def c10d_factory() -> Store:
            return clones.pop() if clones else first.clone()

        return c10d_factory
    if backend in ("etcd", "etcd-v2"):
        from launcher.rendezvous.backends.etcd import EtcdStore, parse_endpoints

        endpoints = parse_endpoints(config.rdzv_endpoint_text, default_port=2379)
        protocol = opts.extra.get("protocol", "http")

        def etcd_factory() -> Store:
            return EtcdStore(
                endpoints,
                prefix=opts.extra.get("etcd_prefix", "/launcher/"),
                timeout_s=opts.read_timeout_s,
                protocol=protocol,
            )

        return etcd_factory
    raise RendezvousConnectionError(f"backend {backend!r} has no multi-node store")


class DynamicRendezvous:
    def __init__(self, config: LaunchConfig, *, node_id: str, interrupt_fd: int) -> None:
        self._config = config
        opts = config.rdzv
        self.params = Params(
            run_id=config.run_id,
            min_nodes=config.min_nodes,
            max_nodes=config.max_nodes,
            max_restarts=config.max_restarts,
            join_timeout_s=opts.join_timeout_s,
            last_call_timeout_s=opts.last_call_timeout_s,
            keep_alive_interval_s=opts.keep_alive_interval_s,
            keep_alive_max_attempt=opts.keep_alive_max_attempt,
            static=config.rdzv_backend == "static",
        )
        self.addr = config.local_addr or socket.getfqdn()
        self._base_id = node_id
        self.node_id = self._new_id()
        factory = open_store(config)
        self._store = factory()
        self._hosting = bool(getattr(self._store, "hosting", False))
        self._driver = Driver(self._store, interrupt_fd=interrupt_fd)
        self._hb_store = factory()
        self.assignment: Assignment | None = None
        self._server: AgentStoreServer | None = None
        self._lock = threading.Lock()
        self._watch: WatchState | None = None
        self._news: str | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stop = threading.Event()
        # Started after the first successful join: before that there is nothing to watch,
        # and an unreachable store must give one error line, not a heartbeat warning too.
        self._hb_thread = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)

    def _new_id(self) -> str:
        return f"{self._base_id}-{os.getpid()}-{secrets.token_hex(3)}"

    # -- the Rendezvous interface --------------------------------------------------------
    def next_round(self) -> RoundInfo | None:
        if self.assignment is not None and self._driver.run(
            declared_dead(self.params, self.node_id)
        ):
            # e.g. this node was paused long enough for its watcher to give up on it
            self.node_id = self._new_id()
            self.assignment = None
        listener = bind_listener(self.addr, 0, flag="--local-addr")
        try:
            while True:
                prev = self.assignment
                info = NodeInfo(
                    node_id=self.node_id,
                    addr=self.addr,
                    master_port=int(listener.getsockname()[1]),
                    nproc=self._config.nproc_per_node,
                    prev_round=prev.round if prev else -1,
                    prev_group_rank=prev.group_rank if prev else -1,
                    node_rank=self._config.node_rank,
                )
                result = self._driver.run(join(self.params, info, now=self._driver.now()))
                if not isinstance(result, Excluded):
                    break
                # Declared dead while the round formed (e.g. cut off from the store for
                # longer than the heartbeat timeout): the closer left this identity out.
                log.warning(
                    "declared dead while round %d formed; joining again as a new node",
                    result.round,
                )
                self.node_id = self._new_id()
                self.assignment = None
        except RendezvousTimeout as err:
            listener.close()
            raise RendezvousTimeoutError(
                str(err), run_id=self.params.run_id, endpoint=self._config.rdzv_endpoint
            ) from err
        except BaseException:
            listener.close()
            raise
        if isinstance(result, JobOver):
            listener.close()
            return None
        self._serve_workers_store(result, listener)
        with self._lock:
            self.assignment = result
            self._watch = WatchState(
                round=result.round,
                group_world_size=result.group_world_size,
                watched=result.watch,
                last_change=time.monotonic(),
            )
            self._news = None
        if not self._hb_thread.is_alive() and not self._stop.is_set():
            self._hb_thread.start()
        return RoundInfo(
            round=result.round,
            group_rank=result.group_rank,
            group_world_size=result.group_world_size,
            base_global_rank=result.base_rank,
            world_size=result.world_size,
            base_role_rank=result.base_rank,
            role_world_size=result.world_size,
            master_addr=result.master_addr,
            master_port=result.master_port,
            use_agent_store=True,
            restart_count=result.restart_count,
            reason=result.reason,
            charged=result.charged,
            budget_spent=result.status == FAILED,
            detail=result.detail,
            members=result.members,
        )

    def check(self) -> str | None:
        try:
            while os.read(self._wake_r, 64):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            news, assignment = self._news, self.assignment
        if news == "store_unreachable":
            raise RendezvousConnectionError(
                "lost the rendezvous store (heartbeats failing)",
                run_id=self.params.run_id,
                endpoint=self._config.rdzv_endpoint,
            )
        if news == "declared_dead":
            # Peers gave up on this incarnation (a long pause); come back as a new one.
            self.node_id = self._new_id()
            self.assignment = None
            return news
        if assignment is None:
            return None
        return self._driver.run(check_round(self.params, assignment.round))

    def wakeup_fd(self) -> int | None:
        return self._wake_r

    def report_failure(self, detail: str) -> None:
        if self.assignment is not None:
            self._driver.run(
                report_failure(self.params, self.assignment, by=self.node_id, detail=detail)
            )

    def finish(self, *, succeeded: bool = True) -> None:
        a = self.assignment
        if a is None:
            return
        self._stop.set()  # this node is done: no more heartbeats or watching
        try:
            outcome = self._driver.run(
                finish(
                    self.params,
                    a,
                    hosting=self._hosting,
                    timeout_s=EXIT_BARRIER_TIMEOUT_S,
                    now=self._driver.now(),
                    succeeded=succeeded,
                )
            )
        except RendezvousConnectionError as err:
            # Our workers succeeded; a store gone at the very end must not turn that into
            # a failure (torchrun's exit barrier logs and ignores this too).
            log.warning("exit barrier: %s", err)
            return
        if outcome not in ("succeeded", FAILED):
            log.warning("exit barrier ended with %s", outcome)

    def leave(self) -> None:
        try:
            Driver(self._store).run(leave(self.params, self.assignment, me=self.node_id))
        except (RendezvousConnectionError, RuntimeError, OSError) as err:
            log.warning("could not announce this node's departure: %s", err)

    def shutdown(self) -> None:
        self._stop.set()
        if self._hb_thread.is_alive():
            self._hb_thread.join(timeout=5)
        if self._server is not None:
            self._server.stop()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- internals -----------------------------------------------------------------------
    def _serve_workers_store(self, a: Assignment, listener: socket.socket) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if a.group_rank == 0:
            self._server = AgentStoreServer(listener)
            self._server.start()
        else:
            listener.close()

    def _heartbeats(self) -> None:
        driver = Driver(self._hb_store)
        failures = 0
        interval = self.params.keep_alive_interval_s
        while not self._stop.wait(interval):
            with self._lock:
                watch, me = self._watch, self.node_id
            try:
                news = driver.run(heartbeat(self.params, me, watch, now=time.monotonic()))
                failures = 0
            except (RendezvousConnectionError, RuntimeError, OSError, ValueError) as err:
                failures += 1
                log.warning("heartbeat to the rendezvous store failed (%d): %s", failures, err)
                news = "store_unreachable" if failures >= _MAX_STORE_FAILURES else None
            if news is not None:
                with self._lock:
                    if news == "declared_dead" and self.node_id != me:
                        continue  # next_round already left that identity behind
                    self._news = news
                with contextlib.suppress(BlockingIOError):  # already has a wakeup pending
                    os.write(self._wake_w, b"!")
