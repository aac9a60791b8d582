"""What torch's TCPStore server does with each request, with no sockets: bytes in, bytes out.

A ``Session`` is one client connection's protocol state; ``StoreState.feed`` takes the bytes that
connection sent, runs every complete request and leaves the replies in the sessions' ``outbuf``
(a WAIT, BARRIER or QUEUE_POP released by another client's write answers on *that* session).
The server loop only moves bytes; everything here runs on its one thread, so nothing is locked.

Semantics follow torch 2.13's default (libuv) server, ``TCPStoreLibUvBackend.cpp``, except two of
its bugs: a COMPARE_SET on a missing key does not wake waiters (the key still does not exist),
and a QUEUE_PUSH releases one blocked pop exactly once.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable

from launcher.tcpstore.protocol import (
    VALIDATION_MAGIC,
    CheckResponse,
    ProtocolError,
    QueryType,
    Request,
    WaitResponse,
    encode_blob,
    encode_i64,
    encode_u8,
    encode_u32,
    parse_request,
)

# What std::stoll accepts as the start of a counter's value (ADD and BARRIER parse it so).
_LEADING_INT = re.compile(rb"\s*([+-]?\d+)")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_STOP = encode_u8(WaitResponse.STOP_WAITING)


class Session:
    """One connection: unparsed input, unsent output, and what it is blocked on."""

    __slots__ = ("awaiting", "inbuf", "name", "outbuf", "validated", "wait_keys")

    def __init__(self, name: str) -> None:
        self.name = name
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.validated = False
        self.awaiting = 0  # keys still missing for this session's WAIT (or BARRIER)
        self.wait_keys: list[bytes] = []


class StoreState:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.queues: dict[bytes, deque[bytes]] = {}
        self.waiters: dict[bytes, list[Session]] = {}
        # Sessions with new output since the loop last flushed.
        self.outbox: set[Session] = set()

    def feed(self, session: Session, data: bytes) -> None:
        """Run every complete request in ``data`` (and earlier leftovers) for ``session``.

        Raises ProtocolError when the session must be closed: unknown command, limits, a first
        request that is not VALIDATE with the magic number, ADD on a non-integer value.
        """
        session.inbuf += data
        pos = 0
        try:
            while (parsed := parse_request(session.inbuf, pos)) is not None:
                request, pos = parsed
                if session.validated:
                    self.handle(session, request)
                elif request.op is QueryType.VALIDATE and request.number == VALIDATION_MAGIC:
                    session.validated = True
                else:
                    raise ProtocolError("the first request must be VALIDATE with the magic number")
        finally:
            del session.inbuf[:pos]

    def close(self, session: Session) -> None:
        self.clear_wait(session)
        self.outbox.discard(session)

    def reply(self, session: Session, data: bytes) -> None:
        session.outbuf += data
        self.outbox.add(session)

    def present(self, key: bytes) -> bool:
        return key in self.data or bool(self.queues.get(key))

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value
        for session in self.waiters.pop(key, ()):
            session.awaiting -= 1
            if session.awaiting == 0:
                session.wait_keys.clear()
                self.reply(session, _STOP)

    def wait(self, session: Session, keys: Iterable[bytes]) -> None:
        self.clear_wait(session)  # a torch client waits for one thing at a time
        missing = [key for key in keys if not self.present(key)]
        if not missing:
            self.reply(session, _STOP)
            return
        for key in missing:
            self.waiters.setdefault(key, []).append(session)
        session.awaiting = len(missing)
        session.wait_keys = missing

    def clear_wait(self, session: Session) -> None:
        for key in session.wait_keys:
            rest = [s for s in self.waiters.get(key, ()) if s is not session]
            if rest:
                self.waiters[key] = rest
            else:
                self.waiters.pop(key, None)
        session.wait_keys = []
        session.awaiting = 0

    def wake_one(self, key: bytes) -> None:
        """A pushed item satisfies one blocked QUEUE_POP: release the first waiter for which
        it was the last missing key; those before it just stop waiting for this key."""
        sessions = self.waiters.get(key, [])
        while sessions:
            session = sessions.pop(0)
            session.wait_keys.remove(key)
            session.awaiting -= 1
            if session.awaiting == 0:
                self.reply(session, _STOP)
                break
        if not sessions:
            self.waiters.pop(key, None)

    def counter(self, key: bytes, delta: int) -> int:
        match = _LEADING_INT.match(self.data.get(key, b"0"))
        if match is None:
            raise ProtocolError(f"counter {key!r} holds a value that is not an integer")
        total = int(match.group(1)) + delta
        if not _I64_MIN <= total <= _I64_MAX:
            raise ProtocolError(f"counter {key!r} overflows int64")
        return total

    def handle(self, session: Session, req: Request) -> None:
        op, keys, values = req.op, req.keys, req.values
        if op is QueryType.SET or op is QueryType.MULTI_SET:
            for key, value in zip(keys, values, strict=True):
                self.put(key, value)
        elif op is QueryType.GET or op is QueryType.MULTI_GET:
            # A missing key reads as empty, as in torch: its client WAITs before every GET, so
            # the blocking happens in WAIT, which the client can time out and cancel.
            self.reply(session, b"".join(encode_blob(self.data.get(k, b"")) for k in keys))
        elif op is QueryType.COMPARE_SET:
            expected, desired = values
            current = self.data.get(keys[0])
            if (current is None and not expected) or current == expected:
                self.put(keys[0], desired)
                current = desired
            # torch answers a failed CAS on a missing key with the caller's own expectation.
            self.reply(session, encode_blob(expected if current is None else current))
        elif op is QueryType.ADD:
            total = self.counter(keys[0], req.number)
            self.put(keys[0], str(total).encode())
            self.reply(session, encode_i64(total))
        elif op is QueryType.CHECK:
            ready = all(self.present(key) for key in keys)
            self.reply(
                session, encode_u8(CheckResponse.READY if ready else CheckResponse.NOT_READY)
            )
        elif op is QueryType.WAIT:
            self.wait(session, keys)
        elif op is QueryType.CANCEL_WAIT:
            self.clear_wait(session)
            self.reply(session, encode_u8(WaitResponse.WAIT_CANCELED))
        elif op is QueryType.GETNUMKEYS:
            self.reply(session, encode_i64(len(self.data)))
        elif op is QueryType.DELETE_KEY:
            self.reply(session, encode_i64(int(self.data.pop(keys[0], None) is not None)))
        elif op is QueryType.APPEND:
            self.put(keys[0], self.data.get(keys[0], b"") + values[0])
        elif op is QueryType.PING:
            self.reply(session, encode_u32(req.number))
        elif op is QueryType.QUEUE_PUSH:
            self.queues.setdefault(keys[0], deque()).append(values[0])
            self.wake_one(keys[0])
        elif op is QueryType.QUEUE_POP:
            # The length before the pop, then the item only if there was one.
            queue = self.queues.get(keys[0])
            size = len(queue) if queue else 0
            head = encode_blob(queue.popleft()) if queue else b""
            self.reply(session, encode_i64(size) + head)
        elif op is QueryType.QUEUE_LEN:
            self.reply(session, encode_i64(len(self.queues.get(keys[0], ()))))
        elif op is QueryType.LIST_KEYS:
            listing = b"".join(encode_blob(key) for key in self.data)
            self.reply(session, encode_i64(len(self.data)) + listing)
        elif op is QueryType.BARRIER:
            # The count is stored without waking anyone: earlier arrivals wait on this key and
            # only the last arrival may release them.
            count = self.counter(keys[0], 1)
            self.data[keys[0]] = str(count).encode()
            if count >= req.number:
                self.put(keys[0], self.data[keys[0]])
                self.reply(session, _STOP)
            else:
                self.clear_wait(session)
                self.waiters.setdefault(keys[0], []).append(session)
                session.awaiting, session.wait_keys = 1, [keys[0]]
        else:  # VALIDATE again: torch's server drops such a client too.
            raise ProtocolError("VALIDATE on an already validated connection", command=op)
