"""The wire format of torch's TCPStore (2.13), as a pure codec: bytes in, requests out.

Facts relied on (torch 2.13: ``torch/include/torch/csrc/distributed/c10d/TCPStoreBackend.hpp``
for the enums and magic number; ``TCPStore.cpp`` for what the client sends and expects;
``TCPStoreLibUvBackend.cpp``, the default server, for the reply layouts and limits):

- A request is one command byte followed by its arguments; no framing, no request id.
- Integers are fixed width, in the host's byte order. Every machine torch runs on is little
  endian, so this codec is little endian explicitly.
- A key or a value is ``u64 length`` then the bytes. Keys are arbitrary bytes (the client sends
  ``std::string``), so they stay ``bytes`` here and are never decoded.
- Key counts (CHECK, WAIT, MULTI_GET, MULTI_SET) are a ``u64``; ADD's delta, BARRIER's world
  size and every integer reply are ``i64``; PING's nonce and VALIDATE's magic are ``u32``.
- A new connection must first send VALIDATE with the magic number; it gets no reply.

Nothing here touches a socket, so the unit tests can feed it any byte sequence. ``Framer``
finds where a request ends without copying it, resuming where it stopped, so a request that
arrives in many pieces is measured once in all (not re-parsed from its start per piece) and
its claimed lengths are checked against the limits before its bytes arrive.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from launcher.tcpstore.limits import DEFAULT_LIMITS, Limits

VALIDATION_MAGIC = 0x3C85F7CE

# The libuv server's limits (the defaults of limits.Limits).
MAX_KEY_LEN = DEFAULT_LIMITS.max_key_len
MAX_PAYLOAD_LEN = DEFAULT_LIMITS.max_value_len
MAX_KEY_COUNT = DEFAULT_LIMITS.max_key_count


class QueryType(enum.IntEnum):
    """The command byte; the order is the C++ enum's order, so the values are the wire values."""

    VALIDATE = 0
    SET = 1
    COMPARE_SET = 2
    GET = 3
    ADD = 4
    CHECK = 5
    WAIT = 6
    GETNUMKEYS = 7
    DELETE_KEY = 8
    APPEND = 9
    MULTI_GET = 10
    MULTI_SET = 11
    CANCEL_WAIT = 12
    PING = 13
    QUEUE_PUSH = 14
    QUEUE_POP = 15
    QUEUE_LEN = 16
    LIST_KEYS = 17
    BARRIER = 18


class CheckResponse(enum.IntEnum):
    READY = 0
    NOT_READY = 1


class WaitResponse(enum.IntEnum):
    STOP_WAITING = 0
    WAIT_CANCELED = 1


class ProtocolError(Exception):
    """The peer sent something no torch client sends; the connection cannot be trusted."""

    def __init__(self, reason: str, *, command: int | None = None) -> None:
        self.reason = reason
        self.command = command
        where = "" if command is None else f" (command byte {command})"
        super().__init__(f"TCPStore protocol error{where}: {reason}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """One decoded request. Which fields are used depends on ``op``:

    - ``keys``: the key(s); one for single-key ops, all of them for CHECK/WAIT/MULTI_*.
    - ``values``: SET/APPEND/QUEUE_PUSH: (value,); COMPARE_SET: (expected, desired);
      MULTI_SET: one value per key.
    - ``number``: ADD's delta, BARRIER's world size, PING's nonce, VALIDATE's magic.
    """

    op: QueryType
    keys: tuple[bytes, ...] = ()
    values: tuple[bytes, ...] = ()
    number: int = 0


_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")


class _Incomplete(Exception):
    """Not enough bytes yet; the caller keeps the buffer and waits for more."""


class _Reader:
    # No memoryview: an export left alive by an exception's traceback would stop the caller
    # from trimming its bytearray. unpack_from and slicing hold the buffer only briefly.
    def __init__(self, data: bytes | bytearray, start: int, limits: Limits) -> None:
        self._data = data
        self.pos = start
        self._limits = limits

    def _need(self, size: int) -> int:
        start, end = self.pos, self.pos + size
        if end > len(self._data):
            raise _Incomplete
        self.pos = end
        return start

    def _unpack(self, fmt: struct.Struct) -> int:
        value: int = fmt.unpack_from(self._data, self._need(fmt.size))[0]
        return value

    def u8(self) -> int:
        return self._data[self._need(1)]

    def u32(self) -> int:
        return self._unpack(_U32)

    def u64(self) -> int:
        return self._unpack(_U64)

    def i64(self) -> int:
        return self._unpack(_I64)

    def blob(self, limit: int, what: str) -> bytes:
        size = self.u64()
        # Checked before waiting for the bytes, so a bogus length fails now instead of
        # making us buffer up to 2**64 bytes.
        if size > limit:
            raise ProtocolError(f"{what} of {size} bytes exceeds the limit of {limit}")
        start = self._need(size)
        return bytes(self._data[start : start + size])

    def key(self) -> bytes:
        return self.blob(self._limits.max_key_len, "key")

    def value(self) -> bytes:
        return self.blob(self._limits.max_value_len, "value")

    def count(self) -> int:
        return _checked_count(self.u64(), self._limits)


def _checked_count(count: int, limits: Limits) -> int:
    if count > limits.max_key_count:
        raise ProtocolError(f"{count} keys exceeds the limit of {limits.max_key_count}")
    return count


def _parse_body(op: QueryType, r: _Reader) -> Request:
    if op in (QueryType.VALIDATE, QueryType.PING):
        return Request(op=op, number=r.u32())
    if op in (QueryType.GETNUMKEYS, QueryType.CANCEL_WAIT, QueryType.LIST_KEYS):
        return Request(op=op)
    if op in (QueryType.GET, QueryType.DELETE_KEY, QueryType.QUEUE_POP, QueryType.QUEUE_LEN):
        return Request(op=op, keys=(r.key(),))
    if op in (QueryType.SET, QueryType.APPEND, QueryType.QUEUE_PUSH):
        key = r.key()
        return Request(op=op, keys=(key,), values=(r.value(),))
    if op is QueryType.COMPARE_SET:
        key = r.key()
        expected = r.value()
        return Request(op=op, keys=(key,), values=(expected, r.value()))
    if op in (QueryType.ADD, QueryType.BARRIER):
        key = r.key()
        return Request(op=op, keys=(key,), number=r.i64())
    if op in (QueryType.CHECK, QueryType.WAIT, QueryType.MULTI_GET):
        count = r.count()
        return Request(op=op, keys=tuple(r.key() for _ in range(count)))
    # MULTI_SET: the only op left; its count is sent as i64 but read as u64 by the server.
    count = r.count()
    keys: list[bytes] = []
    values: list[bytes] = []
    for _ in range(count):
        keys.append(r.key())
        values.append(r.value())
    return Request(op=op, keys=tuple(keys), values=tuple(values))


def _query_type(command: int) -> QueryType:
    try:
        return QueryType(command)
    except ValueError:
        raise ProtocolError("unknown command", command=command) from None


def parse_request(
    data: bytes | bytearray, start: int = 0, limits: Limits = DEFAULT_LIMITS
) -> tuple[Request, int] | None:
    """Decode the request at ``data[start:]``.

    Returns the request and the offset just past it, or None when the request is not complete
    yet. Raises ProtocolError for an unknown command byte or an argument over the limits.
    """
    r = _Reader(data, start, limits)
    try:
        request = _parse_body(_query_type(r.u8()), r)
    except _Incomplete:
        return None
    return request, r.pos


# What follows the command byte, for the Framer: fixed-size fields (their size in bytes),
# a key or a value (u64 length + bytes), or a key count; then, for the ops that take a
# count, the items repeated once per key.
_KEY, _VALUE, _COUNT = -1, -2, -3
_SHAPES: dict[QueryType, tuple[tuple[int, ...], tuple[int, ...]]] = {
    QueryType.VALIDATE: ((4,), ()),
    QueryType.PING: ((4,), ()),
    QueryType.GETNUMKEYS: ((), ()),
    QueryType.CANCEL_WAIT: ((), ()),
    QueryType.LIST_KEYS: ((), ()),
    QueryType.GET: ((_KEY,), ()),
    QueryType.DELETE_KEY: ((_KEY,), ()),
    QueryType.QUEUE_POP: ((_KEY,), ()),
    QueryType.QUEUE_LEN: ((_KEY,), ()),
    QueryType.SET: ((_KEY, _VALUE), ()),
    QueryType.APPEND: ((_KEY, _VALUE), ()),
    QueryType.QUEUE_PUSH: ((_KEY, _VALUE), ()),
    QueryType.COMPARE_SET: ((_KEY, _VALUE, _VALUE), ()),
    QueryType.ADD: ((_KEY, 8), ()),
    QueryType.BARRIER: ((_KEY, 8), ()),
    QueryType.CHECK: ((_COUNT,), (_KEY,)),
    QueryType.WAIT: ((_COUNT,), (_KEY,)),
    QueryType.MULTI_GET: ((_COUNT,), (_KEY,)),
    QueryType.MULTI_SET: ((_COUNT,), (_KEY, _VALUE)),
}


class Framer:
    """Where the request at ``data[start:]`` ends, measured without copying it.

    Resumable: a call that runs out of bytes keeps its progress, and the next call (with the
    same ``start``, more bytes after it) continues from there, so the work is linear in the
    request's size however it is split. A length is checked against the limits as soon as
    its 8 bytes are in, and a blob is stepped over before its bytes arrive: a claimed 2**63
    byte key fails at once and nothing is ever allocated for a length. ``reset()`` once the
    request has been consumed.
    """

    __slots__ = ("_items", "_limits", "_op", "_pos", "_step")
    _op: QueryType | None
    _pos: int  # relative to the request's start
    _step: int  # items consumed
    _items: int  # items in the request (grows once a count is read)

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self.reset()

    def reset(self) -> None:
        self._op, self._pos, self._step, self._items = None, 0, 0, 0

    @property
    def started(self) -> bool:
        return self._op is not None

    @staticmethod
    def _item(op: QueryType, step: int) -> int:
        head, repeat = _SHAPES[op]
        if step < len(head):
            return head[step]
        return repeat[(step - len(head)) % len(repeat)]

    def _check_size(self, at_least: int) -> None:
        if at_least > self._limits.max_request_len:
            raise ProtocolError(
                f"a request of at least {at_least} bytes exceeds the limit of "
                f"{self._limits.max_request_len}",
                command=self._op,
            )

    def frame_end(self, data: bytes | bytearray, start: int) -> int | None:
        """The offset just past the request, or None until all of its bytes are in."""
        avail = len(data) - start
        limits = self._limits
        op = self._op
        if op is None:
            if avail < 1:
                return None
            self._op = op = _query_type(data[start])
            self._pos, self._step, self._items = 1, 0, len(_SHAPES[op][0])
        while self._step < self._items:
            kind = self._item(op, self._step)
            field = 8 if kind < 0 else kind
            if self._pos + field > avail:
                return None
            number: int = _U64.unpack_from(data, start + self._pos)[0] if field == 8 else 0
            self._pos += field
            if kind == _COUNT:
                count = _checked_count(number, limits)
                per_key = len(_SHAPES[op][1])
                self._items += count * per_key
                # Their length fields alone must fit: a claimed count fails before its keys.
                self._check_size(self._pos + 8 * count * per_key)
            elif kind in (_KEY, _VALUE):
                limit, what = (
                    (limits.max_key_len, "key") if kind == _KEY else (limits.max_value_len, "value")
                )
                if number > limit:
                    raise ProtocolError(
                        f"{what} of {number} bytes exceeds the limit of {limit}", command=op
                    )
                self._pos += number
            self._check_size(self._pos)
            self._step += 1
        return start + self._pos if self._pos <= avail else None


# Replies. The server answers with these and nothing else.


def encode_blob(data: bytes) -> bytes:
    return _U64.pack(len(data)) + data


def encode_i64(value: int) -> bytes:
    return _I64.pack(value)


def encode_u32(value: int) -> bytes:
    return _U32.pack(value)


def encode_u8(value: int) -> bytes:
    return bytes((value,))


def encode_request(request: Request) -> bytes:
    """The bytes a torch client sends for ``request``; the inverse of parse_request.

    The server never needs this; tests and diagnostic clients do.
    """
    op = request.op
    out = bytearray(encode_u8(op))
    if op in (QueryType.VALIDATE, QueryType.PING):
        out += encode_u32(request.number)
    elif op in (QueryType.CHECK, QueryType.WAIT, QueryType.MULTI_GET):
        out += _U64.pack(len(request.keys))
        for key in request.keys:
            out += encode_blob(key)
    elif op is QueryType.MULTI_SET:
        out += _U64.pack(len(request.keys))
        for key, value in zip(request.keys, request.values, strict=True):
            out += encode_blob(key) + encode_blob(value)
    else:
        for key in request.keys:
            out += encode_blob(key)
        for value in request.values:
            out += encode_blob(value)
        if op in (QueryType.ADD, QueryType.BARRIER):
            out += encode_i64(request.number)
    return bytes(out)
