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
from collections.abc import Callable, Generator
from typing import TypeVar

from launcher import events as ev
from launcher.config import LaunchConfig
from launcher.errors import (
    RendezvousAccessError,
    RendezvousConnectionError,
    RendezvousTimeoutError,
)
from launcher.rendezvous import RoundInfo, ServeStore, WorkersStore, round_info
from launcher.rendezvous.addresses import log_plan, plan_binding
from launcher.rendezvous.backends import open_store
from launcher.rendezvous.beats import run_heartbeats
from launcher.rendezvous.driver import Driver, Interrupted
from launcher.rendezvous.health import RejectReport, StoreHealth, drop_events
from launcher.rendezvous.local import bind_listeners
from launcher.rendezvous.side_channel import SideChannel
from launcher.rendezvous.state import (
    FAILED,
    Assignment,
    Excluded,
    Feedback,
    JobOver,
    Keys,
    NodeInfo,
    Op,
    Params,
    RendezvousTimeout,
    WatchState,
    check_interval_s,
    check_round,
    conclude,
    declared_dead,
    goodbye,
    join,
    leave,
    report_failure,
    retire,
)
from launcher.rendezvous.store import Store, Watching
from launcher.secret import job_seal

log = logging.getLogger(__name__)

EXIT_BARRIER_TIMEOUT_S = 300.0
T = TypeVar("T")


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


class DynamicRendezvous(SideChannel):
    """A store that fails is retried, not given up on: each protocol step that fails is
    re-run from its start (never a single operation: an `add` or a compare-and-set may have
    been applied although its reply was lost) after a backoff, until the store has been
    unreachable for `store_outage_timeout` (health.py). Running workers keep running
    meanwhile; if peers declared this node dead, it rejoins under a new identity."""

    def __init__(
        self,
        config: LaunchConfig,
        *,
        node_id: str,
        interrupt_fd: int,
        serve_store: ServeStore,
        events: ev.EventSink | None = None,
    ) -> None:
        self._config = config
        self._serve_store = serve_store
        opts = config.rdzv
        self.addr = config.local_addr or socket.getfqdn()
        # MASTER_ADDR when this node is group rank 0: workers of every node connect there.
        self._bind = plan_binding(
            self.addr, store_bind=opts.store_bind, remote_peers=config.max_nodes > 1
        )
        log_plan("the workers' store (served while this node is group rank 0)", self._bind)
        self._base_id = node_id
        self.node_id = self._new_id()
        sink = events or ev.NullEventSink()
        factory = open_store(config, on_drop=drop_events(sink, store="rendezvous"))
        self._store = factory()
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
            # etcd wakes a waiting joiner when its assignment is written (etcd_watch.py)
            store_wakes=isinstance(self._store, Watching),
        )
        self._hosting = bool(getattr(self._store, "hosting", False))
        rejects = RejectReport(sink, prefix=Keys(config.run_id).prefix)
        self._seal = job_seal(opts.secret_file, config.run_id, on_reject=rejects.rejected)
        self._driver = self._new_driver(self._store, interrupt_fd=interrupt_fd)
        self._health = StoreHealth(
            window_s=opts.store_outage_timeout_s,
            events=sink,
            run_id=config.run_id,
            endpoint=config.rdzv_endpoint,
        )
        self._retry_at = 0.0  # check() backs off until then after a failed check
        self._next_check = 0.0  # ... and in a big job checks less often (check_interval_s)
        self._hb_store = factory()
        self.assignment: Assignment | None = None
        self._server: WorkersStore | None = None
        self._lock = threading.Lock()
        self._watch: WatchState | None = None
        self._news: str | None = None
        self._refused: RendezvousAccessError | None = None  # the heartbeat's, for check()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stop = threading.Event()  # and a pipe, to end _heartbeats' waits (_halt)
        self._halt_r, self._halt_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        # Started after the first successful join: before that there is nothing to watch,
        # and an unreachable store must give one error line, not a heartbeat warning too.
        self._hb_thread = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)

    def _new_id(self) -> str:
        return f"{self._base_id}-{os.getpid()}-{secrets.token_hex(3)}"

    # -- the Rendezvous interface --------------------------------------------------------
    def next_round(self) -> RoundInfo | None:
        if self.assignment is not None and self._retrying(
            lambda: declared_dead(self.params, self.node_id)
        ):
            # e.g. this node was paused long enough for its watcher to give up on it
            self.node_id = self._new_id()
            self.assignment = None
        listeners = bind_listeners(self._bind, 0, where=self.addr, flag="--local-addr")
        port = int(listeners[0].getsockname()[1])
        try:
            started = self._driver.now()
            while True:
                prev = self.assignment
                info = NodeInfo(
                    node_id=self.node_id,
                    addr=self.addr,
                    master_port=port,
                    nproc=self._config.nproc_per_node,
                    prev_round=prev.round if prev else -1,
                    prev_group_rank=prev.group_rank if prev else -1,
                    node_rank=self._config.node_rank,
                )
                try:
                    # A retry keeps the first try's start: join_timeout bounds them all.
                    result = self._driver.run(join(self.params, info, now=started))
                except RendezvousConnectionError as err:
                    wrote = self._driver.wrote
                    self._back_off(err)
                    if wrote:
                        self._retire_identity()
                    continue
                self._health.answered()
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
                started = self._driver.now()
        except RendezvousTimeout as err:
            _close_all(listeners)
            raise RendezvousTimeoutError(
                str(err), run_id=self.params.run_id, endpoint=self._config.rdzv_endpoint
            ) from err
        except BaseException:
            _close_all(listeners)
            raise
        if isinstance(result, JobOver):
            _close_all(listeners)
            return None
        self._serve_workers_store(result, listeners)
        with self._lock:
            self.assignment = result
            self._watch = WatchState.of(result, now=time.monotonic())
            self._next_check = 0.0
            self._news = None
        if not self._hb_thread.is_alive() and not self._stop.is_set():
            self._hb_thread.start()
        return round_info(result)

    def check(self) -> str | None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 64):
                pass
        with self._lock:
            news, assignment = self._news, self.assignment
        if news == "store_unreachable":
            raise self._health.give_up()  # the heartbeat thread saw the window end
        if news == "store_refused" and self._refused is not None:
            raise self._refused  # e.g. a certificate that expired while the job ran
        if news == "declared_dead":
            # Peers gave up on this incarnation (a long pause); come back as a new one.
            self.node_id = self._new_id()
            self.assignment = None
            return news
        now = self._driver.now()
        # The heartbeat thread saw the round move (or moved it): look now, not at the
        # next check (a big job's are up to a second apart).
        if urgent := news in ("round_moved", "node_lost"):
            with self._lock:
                self._news = None if self._news == news else self._news
        if assignment is None or now < self._retry_at or (now < self._next_check and not urgent):
            return None
        every = check_interval_s(self._config.monitor_interval_s, assignment.group_world_size)
        self._next_check = now + every
        try:
            reason = self._driver.run(check_round(self.params, assignment.round))
        except RendezvousConnectionError as err:
            # The workers run on without the store; the next monitor tick after the
            # backoff checks again (blocking here would leave the workers unwatched).
            delay = self._health.failed(err)
            if delay is None:
                raise self._health.give_up() from err
            self._retry_at = self._driver.now() + delay
            return None
        self._health.answered()
        return reason

    def wakeup_fd(self) -> int | None:
        return self._wake_r

    def report_failure(self, detail: str, *, reason: str = "worker_failure") -> None:
        a = self.assignment
        if a is None:
            return
        try:
            # Re-running it is safe: it bumps only the round it read, by compare-and-set.
            self._retrying(
                lambda: report_failure(
                    self.params, a, by=self.node_id, detail=detail, reason=reason
                )
            )
        except Interrupted:
            return  # a signal: the agent's loop handles it next

    def finish(self, *, succeeded: bool = True) -> None:
        a = self.assignment
        if a is None:
            return
        self._halt()  # this node is done: no more heartbeats or watching
        until = self._driver.now() + EXIT_BARRIER_TIMEOUT_S
        counted = False
        while True:
            try:
                outcome = self._driver.run(
                    conclude(self.params, a, until=until, succeeded=succeeded, counted=counted)
                )
                break
            except RendezvousConnectionError as err:
                # The count is conclude's first operation: once answered, a re-run must
                # only read it, or this member would count twice.
                counted = counted or self._driver.answered > 0
                try:
                    self._back_off(err)
                except (RendezvousConnectionError, Interrupted) as final:
                    # Our workers succeeded; a store gone at the very end must not turn
                    # that into a failure (torchrun's exit barrier logs and ignores it too).
                    log.warning("exit barrier: %s", final)
                    return
        self._health.answered()
        try:
            self._driver.run(
                goodbye(self.params, a, hosting=self._hosting, timeout_s=EXIT_BARRIER_TIMEOUT_S)
            )
        except RendezvousConnectionError as err:
            log.warning("exit barrier: %s", err)  # the job is over: not worth a retry
            return
        if outcome not in ("succeeded", FAILED):
            log.warning("exit barrier ended with %s", outcome)

    def leave(self) -> None:
        try:
            self._new_driver(self._store).run(leave(self.params, self.assignment, me=self.node_id))
        except (RendezvousConnectionError, RuntimeError, OSError) as err:
            log.warning("could not announce this node's departure: %s", err)

    def shutdown(self) -> None:
        self._halt()
        if self._hb_thread.is_alive():
            self._hb_thread.join(timeout=5)
        if self._server is not None:
            self._server.stop()
        for fd in (self._wake_r, self._wake_w, self._halt_r, self._halt_w):
            os.close(fd)

    def _halt(self) -> None:
        self._stop.set()
        with contextlib.suppress(BlockingIOError):
            os.write(self._halt_w, b"!")

    # -- internals -----------------------------------------------------------------------
    def _retrying(self, step: Callable[[], Generator[Op, Feedback, T]]) -> T:
        """Runs a protocol step, re-running it from its start while the store is out.
        Only for steps that are safe to re-run (they read before they write)."""
        while True:
            try:
                result = self._driver.run(step())
            except RendezvousConnectionError as err:
                self._back_off(err)
                continue
            self._health.answered()
            return result

    def _back_off(self, err: RendezvousConnectionError) -> None:
        """Waits before the next try (a signal ends the wait: Interrupted), or raises."""
        answered = self._driver.answered > 0
        self._health.back_off(err, answered=answered, sleep=self._driver.sleep)

    def _retire_identity(self) -> None:
        """After a join that failed half-way: this id may hold a slot, so join again under
        a new one (see state.retire); as a newcomer if peers declared it dead meanwhile."""
        old = self.node_id
        if self._retrying(lambda: retire(self.params, old)):
            self.assignment = None
        self.node_id = self._new_id()
        log.info("the store failed during a join; joining again as %s", self.node_id)

    def _serve_workers_store(self, a: Assignment, listeners: list[socket.socket]) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if a.group_rank == 0:
            self._server = self._serve_store(listeners)
            self._server.start()
        else:
            _close_all(listeners)

    def _new_driver(self, store: Store, *, interrupt_fd: int | None = None) -> Driver:
        return Driver(store, interrupt_fd=interrupt_fd, seal=self._seal)

    def _heartbeats(self) -> None:
        run_heartbeats(
            self._new_driver(self._hb_store, interrupt_fd=self._halt_r),
            self.params,
            current=self._current,
            tell=self._tell,
            health=self._health,
            stopped=self._stop.is_set,
        )

    def _current(self) -> tuple[WatchState | None, str]:
        with self._lock:
            return self._watch, self.node_id

    def _tell(self, news: str, refused: RendezvousAccessError | None = None) -> None:
        with self._lock:
            self._news = news
            self._refused = refused or self._refused
        with contextlib.suppress(BlockingIOError):  # already has a wakeup pending
            os.write(self._wake_w, b"!")
