"""What torch's TCPStore server does with each request, with no sockets: bytes in, bytes out.

A ``Session`` is one client connection's protocol state; ``StoreState.feed`` takes the bytes that
connection sent, runs every complete request and leaves the replies in the sessions' ``outbuf``
(a WAIT, BARRIER or QUEUE_POP released by another client's write answers on *that* session).
The server loop only moves bytes; everything here runs on its one thread, so nothing is locked.

Semantics follow torch 2.13's default (libuv) server, ``TCPStoreLibUvBackend.cpp``, except two of
its bugs: a COMPARE_SET on a missing key does not wake waiters (the key still does not exist),
and a QUEUE_PUSH releases one blocked pop exactly once. Stricter than it on purpose: a client
whose first request is not VALIDATE with the magic number is closed (torch's ignores its
requests but keeps it, buffering what it sends), and so is one that goes over
``limits.Limits`` (a whole request or reply, an APPEND's result; docs/security.md).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable

from launcher.tcpstore.limits import DEFAULT_LIMITS, Limits
from launcher.tcpstore.protocol import (
    VALIDATION_MAGIC,
    CheckResponse,
    Framer,
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
_NOT_VALIDATED = "the first request must be VALIDATE with the magic number"


class Session:
    """One connection: unparsed input, unsent output, and what it is blocked on.

    The times are the server's (monotonic seconds); nothing here reads a clock.
    """

    __slots__ = (
        "framer",
        "held",
        "inbuf",
        "last_active_at",
        "name",
        "opened_at",
        "outbuf",
        "validated",
        "wait_keys",
    )

    def __init__(self, name: str, *, limits: Limits = DEFAULT_LIMITS, now: float = 0.0) -> None:
        self.name = name
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.framer = Framer(limits)
        self.validated = False
        self.wait_keys: set[bytes] = set()  # still missing for this session's WAIT or BARRIER
        self.opened_at = now
        self.last_active_at = now  # bytes in or out
        self.held = 0  # bytes of inbuf + outbuf the server last counted against its budget

    @property
    def awaiting(self) -> int:
        return len(self.wait_keys)

    @property
    def mid_request(self) -> bool:
        """Part of a request is in and the rest is not."""
        return self.framer.started or bool(self.inbuf)


class StoreState:
    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.data: dict[bytes, bytes] = {}
        self.queues: dict[bytes, deque[bytes]] = {}
        # Insertion-ordered sets: removing a session that gives up is O(1) however many
        # wait on the key, and a QUEUE_PUSH still releases the earliest waiter.
        self.waiters: dict[bytes, dict[Session, None]] = {}
        # Sessions with new output since the loop last flushed.
        self.outbox: set[Session] = set()

    def feed(self, session: Session, data: bytes) -> None:
        """Run every complete request in ``data`` (and earlier leftovers) for ``session``.

        Stops early, leaving requests in ``inbuf``, while the session has ``out_high_water``
        bytes of replies unsent: call again (``data=b""``) once they have drained.
        Raises ProtocolError when the session must be closed: unknown command, limits, a first
        request that is not VALIDATE with the magic number, ADD on a non-integer value.
        """
        inbuf, framer = session.inbuf, session.framer
        inbuf += data
        pos = 0
        try:
            while len(session.outbuf) < self.limits.out_high_water:
                # Refused at its first byte, not once a (maybe huge) request is in.
                fresh = not (session.validated or framer.started) and pos < len(inbuf)
                if fresh and inbuf[pos] != QueryType.VALIDATE:
                    raise ProtocolError(_NOT_VALIDATED, command=inbuf[pos])
                end = framer.frame_end(inbuf, pos)
                if end is None:
                    break
                parsed = parse_request(inbuf, pos, self.limits)
                assert parsed is not None and parsed[1] == end  # the framer measured it whole
                request = parsed[0]
                framer.reset()
                pos = end
                if session.validated:
                    self.handle(session, request)
                elif request.number == VALIDATION_MAGIC:
                    session.validated = True
                else:
                    raise ProtocolError(_NOT_VALIDATED)
        finally:
            del inbuf[:pos]

    def close(self, session: Session) -> None:
        self.clear_wait(session)
        self.outbox.discard(session)

    def reply(self, session: Session, data: bytes) -> None:
        session.outbuf += data
        self.outbox.add(session)

    def present(self, key: bytes) -> bool:
        return key in self.data or bool(self.queues.get(key))

    def reply_blobs(self, session: Session, blobs: list[bytes], head: bytes = b"") -> None:
        """Replies ``head`` then each blob, if the whole reply is within the limit."""
        size = len(head) + sum(8 + len(blob) for blob in blobs)
        if size > self.limits.max_reply_len:
            raise ProtocolError(
                f"a reply of {size} bytes exceeds the limit of {self.limits.max_reply_len}"
            )
        self.reply(session, head + b"".join(encode_blob(blob) for blob in blobs))

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value
        for session in self.waiters.pop(key, {}):
            session.wait_keys.discard(key)
            if not session.wait_keys:
                self.reply(session, _STOP)

    def wait(self, session: Session, keys: Iterable[bytes]) -> None:
        self.clear_wait(session)  # a torch client waits for one thing at a time
        missing = {key for key in keys if not self.present(key)}
        if not missing:
            self.reply(session, _STOP)
            return
        for key in missing:
            self.waiters.setdefault(key, {})[session] = None
        session.wait_keys = missing

    def clear_wait(self, session: Session) -> None:
        for key in session.wait_keys:
            waiting = self.waiters.get(key)
            if waiting is not None:
                waiting.pop(session, None)
                if not waiting:
                    del self.waiters[key]
        session.wait_keys = set()

    def wake_one(self, key: bytes) -> None:
        """A pushed item satisfies one blocked QUEUE_POP: release the first waiter for which
        it was the last missing key; those before it just stop waiting for this key."""
        sessions = self.waiters.get(key)
        while sessions:
            session = next(iter(sessions))
            del sessions[session]
            session.wait_keys.discard(key)
            if not session.wait_keys:
                self.reply(session, _STOP)
                break
        if sessions is not None and not sessions:
            del self.waiters[key]

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
            self.reply_blobs(session, [self.data.get(k, b"") for k in keys])
        elif op is QueryType.COMPARE_SET:
            expected, desired = values
            current = self.data.get(keys[0])
            if (current is None and not expected) or current == expected:
                self.put(keys[0], desired)
                current = desired
            # torch answers a failed CAS on a missing key with the caller's own expectation.
            self.reply_blobs(session, [expected if current is None else current])
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
            old = self.data.get(keys[0], b"")
            if len(old) + len(values[0]) > self.limits.max_reply_len:  # nobody could read it
                raise ProtocolError(f"APPEND would grow {keys[0]!r} past the reply limit")
            self.put(keys[0], old + values[0])
        elif op is QueryType.PING:
            self.reply(session, encode_u32(req.number))
        elif op is QueryType.QUEUE_PUSH:
            self.queues.setdefault(keys[0], deque()).append(values[0])
            self.wake_one(keys[0])
        elif op is QueryType.QUEUE_POP:
            # The length before the pop, then the item only if there was one.
            queue = self.queues.get(keys[0])
            size = len(queue) if queue else 0
            self.reply_blobs(session, [queue.popleft()] if queue else [], encode_i64(size))
        elif op is QueryType.QUEUE_LEN:
            self.reply(session, encode_i64(len(self.queues.get(keys[0], ()))))
        elif op is QueryType.LIST_KEYS:
            self.reply_blobs(session, list(self.data), encode_i64(len(self.data)))
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
                self.waiters.setdefault(keys[0], {})[session] = None
                session.wait_keys = {keys[0]}
        else:  # VALIDATE again: torch's server drops such a client too.
            raise ProtocolError("VALIDATE on an already validated connection", command=op)
