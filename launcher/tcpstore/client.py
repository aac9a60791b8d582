"""A TCPStore client in the standard library: what ``torch.distributed.TCPStore(is_master=False)``
sends and expects, so the agent reaches a c10d rendezvous store (ours, or one torchrun hosts)
without importing torch.

What torch 2.13's client does (``TCPStore.cpp``), and so this one:

- connect, retrying a refused or unreachable endpoint until the timeout (the host may start
  later), then VALIDATE with the magic number (no reply) and PING with a nonce it must echo;
- every key goes on the wire behind a ``/`` (torch's ``keyPrefix_``), so torch's clients and
  this one see the same keys;
- GET and MULTI_GET are sent only for keys known to exist: torch's client WAITs first, and
  torch's libuv server answers a GET of a missing key by *creating* it empty;
- a WAIT that times out sends CANCEL_WAIT, then reads STOP_WAITING (if the keys came just
  before the cancel) and WAIT_CANCELED, so the connection stays in step.

Different on purpose: torch's client never reconnects (once its connection breaks, every call
fails, and its connect failures print pages of C++ warnings). This one drops the connection on
any error, since a reply may be half read, and connects again on the next call, waiting at most
``reconnect_timeout_s``. The failed call is never replayed: it may have been applied. A
connection the server closed while idle (nothing ever arrives unasked) is noticed before a
request is sent, and that request goes on a new connection: nothing was sent, so nothing can
be applied twice, and a SET (which has no reply) is not lost in a dead socket. Errors are one
line naming the endpoint.

One connection, not thread-safe: one client per thread (``clone()``).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from launcher.tcpstore.protocol import (
    VALIDATION_MAGIC,
    CheckResponse,
    QueryType,
    Request,
    WaitResponse,
    encode_request,
)

T = TypeVar("T")
Q = QueryType

_KEY_PREFIX = b"/"
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_RECV_CHUNK = 64 * 1024
# The expectation of a read-only COMPARE_SET: no value the launcher writes (see get_if_present).
_ABSENT = b"\x00launcher:absent\x00"
# Between connect attempts: quick at first (the host is usually a moment away), then at most
# a second, as torch's kConnectRetryDelay.
_FIRST_RETRY_S, _MAX_RETRY_S = 0.05, 1.0


class StoreConnectionError(ConnectionError):
    """The store could not be reached, or the connection broke during a call."""

    def __init__(self, reason: str, *, endpoint: str) -> None:
        self.reason = reason
        self.endpoint = endpoint
        super().__init__(f"{reason} (TCPStore at {endpoint})")


class StoreTimeoutError(TimeoutError):
    """WAIT ended at its timeout with keys still missing (the connection stays usable)."""

    def __init__(self, keys: Sequence[str], *, timeout_s: float, endpoint: str) -> None:
        self.keys = tuple(keys)
        self.timeout_s = timeout_s
        self.endpoint = endpoint
        shown = ", ".join(self.keys[:3]) + (", ..." if len(self.keys) > 3 else "")
        super().__init__(f"wait timeout after {timeout_s:g} s for {shown} (TCPStore at {endpoint})")


class _NotAStore(StoreConnectionError):
    """Something listens there, but it does not answer as a TCPStore: not worth a retry."""


def _reason(err: BaseException) -> str:
    if isinstance(err, socket.gaierror):
        return f"cannot resolve the host: {err.strerror}"
    if isinstance(err, TimeoutError):
        return "no answer in time"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def _wire(key: str) -> bytes:
    return _KEY_PREFIX + key.encode()


def _bytes(value: str | bytes) -> bytes:
    # surrogateescape: a value read back from bytes that are not UTF-8 (an intruder's) goes
    # out as the very bytes it came in as, so a compare-and-set against it can match.
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


class StoreClient:
    """One connection to a TCPStore server at ``host:port``.

    ``timeout_s`` bounds the first connect (retried until then), every reply, and a WAIT
    without its own timeout, as torch's ``timeout``; ``reply_timeout_s``, when given, bounds
    every reply instead (a caller whose operations never wait for keys: a server that holds
    a reply that long is not answering). Values are bytes; keys are text.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout_s: float,
        reconnect_timeout_s: float = 2.0,
        reply_timeout_s: float | None = None,
        connect: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.timeout_s = timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.reply_timeout_s = timeout_s if reply_timeout_s is None else reply_timeout_s
        self._sock: socket.socket | None = None
        self._idle = select.poll()  # readable between requests: the server hung up
        self._buf = bytearray()
        self._connected_once = False
        if connect:
            self._connect(timeout_s)

    # -- connection ------------------------------------------------------------------------
    def _connect(self, within_s: float) -> socket.socket:
        deadline = time.monotonic() + within_s
        delay = _FIRST_RETRY_S
        while True:
            try:
                sock = self._handshake(max(0.01, deadline - time.monotonic()))
            except (OSError, StoreConnectionError) as err:
                left = deadline - time.monotonic()
                if left <= 0 or not _worth_retrying(err):
                    reason = err.reason if isinstance(err, StoreConnectionError) else _reason(err)
                    raise StoreConnectionError(
                        f"cannot connect within {within_s:g} s: {reason}", endpoint=self.endpoint
                    ) from err
                time.sleep(min(delay, left))
                delay = min(delay * 2, _MAX_RETRY_S)
                continue
            self._sock, self._buf = sock, bytearray()
            self._idle = select.poll()
            self._idle.register(sock, select.POLLIN)
            self._connected_once = True
            return sock

    def _handshake(self, timeout_s: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        try:
            # Each request waits for the previous reply: no Nagle delay on small writes.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nonce = os.getpid() & 0xFFFFFFFF
            sock.sendall(
                encode_request(Request(op=Q.VALIDATE, number=VALIDATION_MAGIC))
                + encode_request(Request(op=Q.PING, number=nonce))
            )
            echoed = _recv_exact(sock, _U32.size)
            if _U32.unpack(echoed)[0] != nonce:
                raise _NotAStore(
                    "not a TCPStore server (its answer to PING is wrong)", endpoint=self.endpoint
                )
            sock.settimeout(self.reply_timeout_s)
        except BaseException:
            sock.close()
            raise
        return sock

    def _connection(self) -> socket.socket:
        if self._sock is not None and not self._idle.poll(0):
            return self._sock
        self._drop()  # closed (or reset) by the server since the last reply
        # Broken earlier: connect again, briefly, since the caller retries with backoff.
        return self._connect(self.reconnect_timeout_s if self._connected_once else self.timeout_s)

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._buf = None, bytearray()

    def close(self) -> None:
        self._drop()

    def clone(self) -> StoreClient:
        """Another connection to the same store (for another thread)."""
        return StoreClient(
            self.host,
            self.port,
            timeout_s=self.timeout_s,
            reconnect_timeout_s=self.reconnect_timeout_s,
            reply_timeout_s=self.reply_timeout_s,
        )

    # -- one exchange ----------------------------------------------------------------------
    def _call(self, what: str, payload: bytes, read: Callable[[], T]) -> T:
        """Sends ``payload`` and reads the reply with ``read``; any failure drops the
        connection (it may be out of step) and raises one line naming the endpoint."""
        sock = self._connection()
        try:
            sock.sendall(payload)
            return read()
        except StoreTimeoutError:
            raise
        except (OSError, StoreConnectionError) as err:
            self._drop()
            if isinstance(err, StoreConnectionError):
                raise
            raise StoreConnectionError(
                f"{what} failed: {_reason(err)}", endpoint=self.endpoint
            ) from err

    def _take(self, size: int) -> bytes:
        sock = self._sock
        assert sock is not None  # only called inside _call, after _connection()
        while len(self._buf) < size:
            chunk = sock.recv(max(_RECV_CHUNK, size - len(self._buf)))
            if not chunk:
                raise StoreConnectionError(
                    "the store closed the connection", endpoint=self.endpoint
                )
            self._buf += chunk
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def _u8(self) -> int:
        return self._take(1)[0]

    def _i64(self) -> int:
        value: int = _I64.unpack(self._take(_I64.size))[0]
        return value

    def _blob(self) -> bytes:
        size: int = _U64.unpack(self._take(_U64.size))[0]
        return self._take(size)

    # -- operations ------------------------------------------------------------------------
    def set(self, key: str, value: str | bytes) -> None:
        request = Request(op=Q.SET, keys=(_wire(key),), values=(_bytes(value),))
        self._call("set", encode_request(request), lambda: None)

    def multi_set(self, keys: Sequence[str], values: Sequence[str | bytes]) -> None:
        if len(keys) != len(values):
            raise ValueError(f"multi_set: {len(keys)} keys but {len(values)} values")
        wire = tuple(_wire(k) for k in keys)
        request = Request(op=Q.MULTI_SET, keys=wire, values=tuple(_bytes(v) for v in values))
        self._call("multi_set", encode_request(request), lambda: None)

    def compare_set(self, key: str, expected: str | bytes, desired: str | bytes) -> bytes:
        """Sets ``desired`` if the key holds ``expected`` (b"": the key is absent); returns
        what the key holds after. On a missing key with a non-empty ``expected``, torch's
        server answers ``expected`` itself and sets nothing."""
        values = (_bytes(expected), _bytes(desired))
        request = Request(op=Q.COMPARE_SET, keys=(_wire(key),), values=values)
        return self._call("compare_set", encode_request(request), self._blob)

    def add(self, key: str, delta: int) -> int:
        request = Request(op=Q.ADD, keys=(_wire(key),), number=delta)
        return self._call("add", encode_request(request), self._i64)

    def check(self, keys: Sequence[str]) -> bool:
        request = Request(op=Q.CHECK, keys=tuple(_wire(k) for k in keys))
        return self._call("check", encode_request(request), self._u8) == CheckResponse.READY

    def wait(self, keys: Sequence[str], timeout_s: float | None = None) -> None:
        """Blocks until every key exists; StoreTimeoutError after ``timeout_s`` (default:
        the client's timeout), with the connection still usable."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        request = Request(op=Q.WAIT, keys=tuple(_wire(k) for k in keys))
        self._call("wait", encode_request(request), lambda: self._await_stop(keys, limit))

    def _await_stop(self, keys: Sequence[str], timeout_s: float) -> None:
        sock = self._sock
        assert sock is not None
        sock.settimeout(timeout_s)
        try:
            reply = self._u8()
        except TimeoutError:
            reply = None
        finally:
            sock.settimeout(self.reply_timeout_s)
        if reply is None:
            sock.sendall(encode_request(Request(op=Q.CANCEL_WAIT)))
            reply = self._u8()
            if reply == WaitResponse.STOP_WAITING:  # the keys came just before the cancel
                self._expect(self._u8(), WaitResponse.WAIT_CANCELED, "CANCEL_WAIT")
                return
            self._expect(reply, WaitResponse.WAIT_CANCELED, "CANCEL_WAIT")
            raise StoreTimeoutError(keys, timeout_s=timeout_s, endpoint=self.endpoint)
        self._expect(reply, WaitResponse.STOP_WAITING, "WAIT")

    def _expect(self, got: int, want: int, what: str) -> None:
        if got != want:
            raise _NotAStore(
                f"unexpected answer {got} to {what} (not a TCPStore server?)",
                endpoint=self.endpoint,
            )

    def get(self, key: str) -> bytes:
        """The value, waiting for the key as torch's ``get`` does."""
        self.wait([key])
        request = Request(op=Q.GET, keys=(_wire(key),))
        return self._call("get", encode_request(request), self._blob)

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        """The values, waiting for every key as torch's ``multi_get`` does."""
        if not keys:
            return []
        self.wait(keys)
        return self._multi_get(keys)

    def _multi_get(self, keys: Sequence[str]) -> list[bytes]:
        request = Request(op=Q.MULTI_GET, keys=tuple(_wire(k) for k in keys))
        return self._call(
            "multi_get", encode_request(request), lambda: [self._blob() for _ in keys]
        )

    def get_if_present(self, key: str) -> bytes | None:
        """The value, or None at once if the key is absent (one round trip)."""
        return self.multi_get_if_present([key])[0]

    def multi_get_if_present(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values, None for absent keys, in one round trip: a COMPARE_SET per key
        expecting `_ABSENT`, sent together (replies come in order).

        TCPStore has no read that answers "absent": a GET of a missing key blocks in torch's
        client and reads as empty in its server. A compare-and-set whose expected value is
        no value the launcher writes changes nothing and answers with the current value,
        or, for a missing key, with the expectation itself (torch's servers, and ours)."""
        if not keys:
            return []
        probe = (_ABSENT, _ABSENT)
        reads = b"".join(
            encode_request(Request(op=Q.COMPARE_SET, keys=(_wire(k),), values=probe)) for k in keys
        )
        found = self._call("get", reads, lambda: [self._blob() for _ in keys])
        return [None if value == _ABSENT else value for value in found]

    def delete_key(self, key: str) -> bool:
        request = Request(op=Q.DELETE_KEY, keys=(_wire(key),))
        return self._call("delete_key", encode_request(request), self._i64) == 1

    def num_keys(self) -> int:
        return self._call("num_keys", encode_request(Request(op=Q.GETNUMKEYS)), self._i64)

    def append(self, key: str, value: str | bytes) -> None:
        request = Request(op=Q.APPEND, keys=(_wire(key),), values=(_bytes(value),))
        self._call("append", encode_request(request), lambda: None)


def _worth_retrying(err: BaseException) -> bool:
    """Whether a failed connect may succeed later: the host not up yet, or not reachable yet
    (a container still starting), or busy; not a handshake that got a wrong answer."""
    if isinstance(err, _NotAStore):
        return False
    if isinstance(err, ConnectionError | TimeoutError | socket.gaierror):
        return True  # refused, reset; DNS for a starting container or pod may come later
    return isinstance(err, OSError) and err.errno in (
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.EADDRNOTAVAIL,
    )


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError(errno.ECONNRESET, "the store closed the connection")
        data += chunk
    return bytes(data)
