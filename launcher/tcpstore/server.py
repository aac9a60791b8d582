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
does in ``state``; this module only moves bytes.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from launcher.tcpstore.protocol import ProtocolError
from launcher.tcpstore.state import Session, StoreState

log = logging.getLogger(__name__)

_RECV_CHUNK = 256 * 1024
# The kernel caps this at net.core.somaxconn; like torch, ask for as much as it allows, so a
# few hundred ranks connecting at once are not refused.
_BACKLOG = 65535


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreStats:
    keys: int
    clients: int
    waiting_clients: int  # blocked in WAIT (so also in GET), BARRIER or a blocking QUEUE_POP


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

    Pass either a bound (or listening) socket, which the server then owns and closes, so the
    agent can bind first and publish the port with no close-and-rebind race; or ``host`` and
    ``port`` (``host=None``: all interfaces; ``port=0``: an ephemeral port).
    """

    def __init__(
        self, listener: socket.socket | None = None, *, host: str | None = None, port: int = 0
    ) -> None:
        if listener is not None and (host is not None or port != 0):
            raise ValueError("pass either a listening socket or host and port, not both")
        self._listener = listener if listener is not None else _bind(host, port)
        self._listener.listen(_BACKLOG)
        self._listener.setblocking(False)
        self._port: int = self._listener.getsockname()[1]  # still known after stop()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
        self._state = StoreState()
        self._socks: dict[Session, socket.socket] = {}
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
            self._state = StoreState()

        self._call_in_loop(clear, timeout_s)

    def stats(self, timeout_s: float = 5.0) -> StoreStats:
        """Counts taken inside the loop, so they are consistent with each other."""
        found: list[StoreStats] = []

        def count() -> None:
            waiting = sum(1 for session in self._socks if session.awaiting > 0)
            keys, clients = len(self._state.data), len(self._socks)
            found.append(StoreStats(keys=keys, clients=clients, waiting_clients=waiting))

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
                for key, mask in self._selector.select():
                    if key.data is None:
                        self._accept()
                    elif key.data is self._wake_r:
                        self._drain_wake()
                    elif isinstance(key.data, Session):
                        self._serve(key.data, mask)
                self._flush_outbox()
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

    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. out of file descriptors: keep serving the others
                log.warning("store server cannot accept a connection: %s", exc)
                return
            sock.setblocking(False)
            # A client waits for each small reply before sending again: no Nagle delay.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = Session(f"{addr[0]}:{addr[1]}")
            self._socks[session] = sock
            self._selector.register(sock, selectors.EVENT_READ, session)

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
                self._state.feed(session, chunk)
            if mask & selectors.EVENT_WRITE:
                self._flush(session, sock)
        except BlockingIOError:
            return
        except ProtocolError as exc:
            log.warning("store server: closing connection from %s: %s", session.name, exc)
            self._close(session)
        except OSError as exc:
            log.debug("store server: connection from %s failed: %s", session.name, exc)
            self._close(session)
        except Exception:  # a bug here must cost one connection, not the whole store
            log.exception("store server: error serving %s; closing it", session.name)
            self._close(session)

    def _flush_outbox(self) -> None:
        outbox, self._state.outbox = self._state.outbox, set()
        for session in outbox:
            sock = self._socks.get(session)
            if sock is None:
                continue
            try:
                self._flush(session, sock)
            except OSError as exc:
                log.debug("store server: cannot write to %s: %s", session.name, exc)
                self._close(session)

    def _flush(self, session: Session, sock: socket.socket) -> None:
        if session.outbuf:
            try:
                sent = sock.send(session.outbuf)
            except BlockingIOError:
                sent = 0
            del session.outbuf[:sent]
        # Ask for writability only while bytes are left over, or the loop would spin.
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if session.outbuf else 0)
        if self._selector.get_key(sock).events != events:
            self._selector.modify(sock, events, session)

    def _close(self, session: Session) -> None:
        sock = self._socks.pop(session, None)
        if sock is None:
            return
        self._state.close(session)
        self._selector.unregister(sock)
        sock.close()

    def _shutdown(self) -> None:
        for session in list(self._socks):
            self._close(session)
        self._run_calls()  # release anyone blocked in reset() or stats()
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
