"""Peers for the proxy's tests: a threaded echo server as the upstream, and socket helpers.

Every socket has a timeout, so a proxy that swallows bytes fails a test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

IO_TIMEOUT_S = 5.0


def _echo(sock: socket.socket) -> None:
    with sock:
        try:
            while data := sock.recv(256 * 1024):
                sock.sendall(data)
        except OSError:
            pass  # the proxy reset or dropped us: the test is looking at the other side


class EchoServer:
    """Echoes every byte back, one thread per connection; closes when its client closes.
    `close()` stops accepting (shutdown wakes the blocked accept) and closes every socket."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            conn.settimeout(IO_TIMEOUT_S)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.append(conn)
            thread = threading.Thread(target=_echo, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(IO_TIMEOUT_S)
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(IO_TIMEOUT_S)

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def connect(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=IO_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def round_trip_s(sock: socket.socket, payload: bytes = b"ping") -> float:
    """Seconds for `payload` to go through the proxy to the echo server and back."""
    start = time.perf_counter()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.perf_counter() - start


def wait_closed(sock: socket.socket) -> float:
    """Seconds until the peer closes (recv returns b""); bytes arriving first fail the test."""
    start = time.perf_counter()
    data = sock.recv(1024)
    assert data == b"", f"expected a close, got {data!r}"
    return time.perf_counter() - start
