"""A TCPStore server in the standard library: the rendezvous store of the c10d backend, and
the workers' bootstrap store the agent serves, with no torch import.

As the workers' store: workers started with ``TORCHELASTIC_USE_AGENT_STORE=True`` make every
rank, rank 0 included, a *client* of a store at ``MASTER_ADDR:MASTER_PORT``
(``torch.distributed.rendezvous._create_c10d_store``). torch 2.13 adds no per-attempt key prefix
there, so the agent calls ``reset()`` between worker groups: gloo publishes each rank's address
under a fixed key, and a stale one from the previous attempt sends the new ranks to a dead port.

One daemon thread runs a selector loop over non-blocking sockets and owns all store state, so
nothing is locked. Other threads reach it only through ``reset()``, ``stats()`` and ``stop()``,
which hand it work over a socketpair. The wire format is in ``protocol``, what each request
does in ``state``; this module only moves bytes, and keeps what a client can make it hold
within ``limits.Limits`` (docs/security.md):

- a client is served one receive per loop turn, so a slow or stalled one delays nobody;
- a connection whose first byte is not VALIDATE is closed at that byte; one that never
  validates, or stops half-way through a request, is closed once its timeout passes (a tick
  of the loop checks, at least once a second);
- a client with ``out_high_water`` of replies unsent is not read until they drain;
- past ``buffer_budget`` held for all connections, the one holding most is closed;
- out of file descriptors, it stops accepting for a second instead of spinning.

Each such drop is logged and reported through ``on_drop``, rate-limited (``drops``).
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from launcher.tcpstore.drops import DropReports, OnDrop
from launcher.tcpstore.limits import DEFAULT_LIMITS, Limits
from launcher.tcpstore.protocol import ProtocolError
from launcher.tcpstore.state import Session, StoreState

log = logging.getLogger(__name__)

_RECV_CHUNK = 256 * 1024
# The kernel caps this at net.core.somaxconn; like torch, ask for as much as it allows, so a
# few hundred ranks connecting at once are not refused.
_BACKLOG = 65535
_ACCEPT_PAUSE_S = 1.0
_LISTENER, _WAKE = "listener", "wake"  # selector tags besides a Session


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreStats:
    """What the server holds now."""

    keys: int
    clients: int
    waiting_clients: int  # blocked in WAIT (so also in GET), BARRIER or a blocking QUEUE_POP
    dropped: int = 0  # clients closed for misbehaving, since the server started
    held_bytes: int = 0  # unparsed requests and unsent replies, all connections together


def _bind(host: str | None, port: int) -> socket.socket:
    if host is None:  # every interface, IPv6 and IPv4, as torch's server does
        try:
            return socket.create_server(
                ("", port), family=socket.AF_INET6, backlog=_BACKLOG, dualstack_ipv6=True
            )
        except (OSError, ValueError):  # no IPv6 on this host
            return socket.create_server(("", port), backlog=_BACKLOG)
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=_BACKLOG)


class StoreServer:
    """A TCPStore server for torch 2.13 clients (``TCPStore(..., is_master=False)``, and
    ``init_process_group`` under torchrun's environment) and for ours (``client.StoreClient``).

    Pass either bound (or listening) sockets, all on one port, which the server then owns and
    closes, so the agent can bind first and publish the port with no close-and-rebind race;
    or ``host`` and ``port`` (``host=None``: all interfaces; ``port=0``: an ephemeral port).
    ``label`` names the store in log lines; ``on_drop`` hears of every client dropped for
    misbehaving (rate-limited), on the server's thread.
    """

    def __init__(
        self,
        listeners: socket.socket | Sequence[socket.socket] | None = None,
        *,
        host: str | None = None,
        port: int = 0,
        limits: Limits = DEFAULT_LIMITS,
        label: str = "store server",
        on_drop: OnDrop | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if listeners is not None and (host is not None or port != 0):
            raise ValueError("pass either listening sockets or host and port, not both")
        if listeners is None:
            listeners = [_bind(host, port)]
        elif isinstance(listeners, socket.socket):
            listeners = [listeners]
        if not listeners:
            raise ValueError("no listening socket")
        self._listeners = list(listeners)
        self._port: int = self._listeners[0].getsockname()[1]  # still known after stop()
        self.addresses = [str(sock.getsockname()[0]) for sock in self._listeners]
        self._limits = limits
        self._label = label
        self._clock = clock
        # Wake at least once a second, sooner with short timeouts (tests): idle checks and
        # delayed drop reports run on these ticks.
        self._tick_s = max(0.05, min(1.0, limits.handshake_timeout_s / 4))
        self._tick_s = min(self._tick_s, max(0.05, limits.frame_idle_timeout_s / 4))
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        for sock in self._listeners:
            sock.listen(_BACKLOG)
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, _LISTENER)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._state = StoreState(limits)
        self._socks: dict[Session, socket.socket] = {}
        self._held = 0  # the sum of every session's `held`
        self._reports = DropReports(label=label, port=self._port, limits=limits, on_drop=on_drop)
        self._accept_paused_until: float | None = None
        self._next_sweep = 0.0
        self._calls: list[tuple[Callable[[], None], threading.Event]] = []
        self._calls_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("StoreServer.start() called twice")
        self._thread = threading.Thread(target=self._run, name="tcpstore-server", daemon=True)
        self._thread.start()

    def reset(self, timeout_s: float = 5.0) -> None:
        """Drop every key, queue and connection: the next worker group starts from nothing.

        Closing the connections too means a straggler of the previous group cannot write
        stale keys after the reset.
        """

        def clear() -> None:
            for session in list(self._socks):
                self._close(session)
            self._state = StoreState(self._limits)

        self._call_in_loop(clear, timeout_s)

    def stats(self, timeout_s: float = 5.0) -> StoreStats:
        """Counts taken inside the loop, so they are consistent with each other."""
        found: list[StoreStats] = []

        def count() -> None:
            found.append(
                StoreStats(
                    keys=len(self._state.data),
                    clients=len(self._socks),
                    waiting_clients=sum(1 for session in self._socks if session.awaiting > 0),
                    dropped=self._reports.total,
                    held_bytes=self._held,
                )
            )

        self._call_in_loop(count, timeout_s)
        return found[0]

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close the listener and every connection, within ``timeout_s``; idempotent."""
        self._stopping.set()
        if self._thread is None:
            self._shutdown()
            return
        self._wake()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("store server thread did not stop within %.1f s", timeout_s)

    def __enter__(self) -> StoreServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except BlockingIOError:  # the socketpair is full, so a wake-up is already pending
            pass
        except OSError as exc:  # closed: the loop is gone and there is nothing to wake
            log.debug("store server wake-up after shutdown: %s", exc)

    def _call_in_loop(self, fn: Callable[[], None], timeout_s: float) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            fn()
            return
        done = threading.Event()
        with self._calls_lock:
            self._calls.append((fn, done))
        self._wake()
        if not done.wait(timeout_s):
            raise TimeoutError(f"store server loop did not answer within {timeout_s} s")

    def _run_calls(self) -> None:
        with self._calls_lock:
            calls, self._calls = self._calls, []
        for fn, done in calls:
            try:
                fn()
            finally:
                done.set()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                for key, mask in self._selector.select(self._tick_s):
                    if key.data is _LISTENER:
                        if self._accept_paused_until is None:  # paused earlier in this batch
                            self._accept(key.fileobj)  # type: ignore[arg-type]
                    elif key.data is _WAKE:
                        self._drain_wake()
                    elif isinstance(key.data, Session):
                        self._serve(key.data, mask)
                self._flush_outbox()
                if self._held > self._limits.buffer_budget:
                    self._shed()
                now = self._clock()
                if now >= self._next_sweep:
                    self._sweep(now)
        except Exception:
            log.exception("store server loop failed; closing the store")
            raise
        finally:
            self._shutdown()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:  # drained
            pass
        self._run_calls()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, addr = listener.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:  # the client gave up while queued
                continue
            except OSError as exc:  # out of file descriptors: stop accepting for a while
                self._pause_accepting(exc)
                return
            sock.setblocking(False)
            # A client waits for each small reply before sending again: no Nagle delay.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = Session(f"{addr[0]}:{addr[1]}", limits=self._limits, now=self._clock())
            self._socks[session] = sock
            self._selector.register(sock, selectors.EVENT_READ, session)

    def _pause_accepting(self, exc: OSError) -> None:
        """The listener stays readable while the backlog holds connections we cannot take,
        so retrying at once would spin; pending clients wait in the backlog meanwhile."""
        why = exc.strerror or str(exc)
        log.warning("%s on port %d cannot accept: %s; pausing", self._label, self._port, why)
        for sock in self._listeners:
            self._selector.unregister(sock)
        self._accept_paused_until = self._clock() + _ACCEPT_PAUSE_S

    def _serve(self, session: Session, mask: int) -> None:
        sock = self._socks.get(session)
        if sock is None:  # closed earlier in this batch of events
            return
        try:
            if mask & selectors.EVENT_READ:
                chunk = sock.recv(_RECV_CHUNK)
                if not chunk:
                    self._close(session)
                    return
                session.last_active_at = self._clock()
                self._state.feed(session, chunk)
            self._flush(session, sock)
        except ProtocolError as exc:
            self._close(session, str(exc))
            return
        except OSError as exc:
            log.debug("store server: connection from %s failed: %s", session.name, exc)
            self._close(session)
            return
        except Exception:  # a bug here must cost one connection, not the whole store
            log.exception("store server: error serving %s; closing it", session.name)
            self._close(session)
            return
        held = len(session.inbuf) + len(session.outbuf)
        self._held += held - session.held
        session.held = held

    def _flush_outbox(self) -> None:
        outbox, self._state.outbox = self._state.outbox, set()
        for session in outbox:
            self._serve(session, 0)

    def _flush(self, session: Session, sock: socket.socket) -> None:
        """Sends what it can; then, once the replies are below the high-water mark again,
        runs the requests that waited for that."""
        high = self._limits.out_high_water
        if session.outbuf:
            was_full = len(session.outbuf) >= high
            try:
                sent = sock.send(session.outbuf)
            except BlockingIOError:
                sent = 0
            if sent:
                del session.outbuf[:sent]
                session.last_active_at = self._clock()
            if was_full and len(session.outbuf) < high and session.inbuf:
                self._state.feed(session, b"")
        # Read only below the mark; ask for writability only while bytes are left over, or
        # the loop would spin.
        events = selectors.EVENT_READ if len(session.outbuf) < high else 0
        events |= selectors.EVENT_WRITE if session.outbuf else 0
        if self._selector.get_key(sock).events != events:
            self._selector.modify(sock, events, session)

    def _shed(self) -> None:
        """Over the budget: close the connections holding most until it fits."""
        while self._held > self._limits.buffer_budget and self._socks:
            biggest = max(self._socks, key=lambda session: session.held)
            budget = self._limits.buffer_budget
            self._close(biggest, f"holding {biggest.held} bytes with the store over {budget}")

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self._tick_s
        limits = self._limits
        for session in list(self._socks):
            idle = now - session.last_active_at
            if not session.validated and now - session.opened_at > limits.handshake_timeout_s:
                self._close(session, f"no VALIDATE within {limits.handshake_timeout_s:g} s")
            elif idle > limits.frame_idle_timeout_s and session.mid_request:
                self._close(session, f"a request left unfinished for {idle:.0f} s")
            elif (
                idle > limits.frame_idle_timeout_s and len(session.outbuf) >= limits.out_high_water
            ):
                self._close(session, f"replies left unread for {idle:.0f} s")
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            for sock in self._listeners:
                self._selector.register(sock, selectors.EVENT_READ, _LISTENER)
        self._reports.flush(now)

    def _close(self, session: Session, reason: str | None = None) -> None:
        """``reason``: the client misbehaved, and the drop is reported."""
        sock = self._socks.pop(session, None)
        if sock is None:
            return
        if reason is not None:  # before the close, which the client may be waiting on
            self._reports.dropped(session.name, reason, self._clock())
        self._state.close(session)
        self._selector.unregister(sock)
        sock.close()
        self._held -= session.held
        session.held = 0

    def _shutdown(self) -> None:
        for session in list(self._socks):
            self._close(session)
        self._run_calls()  # release anyone blocked in reset() or stats()
        self._selector.close()
        for sock in (*self._listeners, self._wake_r, self._wake_w):
            sock.close()
