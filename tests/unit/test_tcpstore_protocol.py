"""The TCPStore wire codec, and the store semantics behind it, without sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher.tcpstore.protocol import (
    MAX_KEY_COUNT,
    MAX_KEY_LEN,
    MAX_PAYLOAD_LEN,
    VALIDATION_MAGIC,
    ProtocolError,
    QueryType,
    Request,
    encode_blob,
    encode_i64,
    encode_request,
    parse_request,
)
from launcher.tcpstore.state import Session, StoreState

Q = QueryType


def test_command_bytes_are_torch_2_13s() -> None:
    # c10d::detail::QueryType in torch/csrc/distributed/c10d/TCPStoreBackend.hpp (2.13).
    order = "VALIDATE SET COMPARE_SET GET ADD CHECK WAIT GETNUMKEYS DELETE_KEY APPEND MULTI_GET"
    order += " MULTI_SET CANCEL_WAIT PING QUEUE_PUSH QUEUE_POP QUEUE_LEN LIST_KEYS BARRIER"
    assert [q.name for q in QueryType] == order.split()
    assert [q.value for q in QueryType] == list(range(19))
    assert VALIDATION_MAGIC == 0x3C85F7CE


def test_handshake_bytes_match_a_captured_torch_client() -> None:
    # What torch 2.13's client sent on connect, captured with a raw socket (nonce = its pid).
    captured = bytes.fromhex("00cef7853c0d60270000")
    validate, end = parse_request(captured) or pytest.fail("incomplete")
    assert validate == Request(op=Q.VALIDATE, number=VALIDATION_MAGIC)
    ping, end = parse_request(captured, end) or pytest.fail("incomplete")
    assert ping == Request(op=Q.PING, number=0x2760)
    assert end == len(captured)


def test_layout_is_little_endian_with_u64_lengths() -> None:
    wire = encode_request(Request(op=Q.ADD, keys=(b"/n",), number=-2))
    assert wire == b"\x04" + struct.pack("<Q", 2) + b"/n" + struct.pack("<q", -2)
    wire = encode_request(Request(op=Q.WAIT, keys=(b"a", b"bc")))
    assert wire == b"\x06" + struct.pack("<QQ", 2, 1) + b"a" + struct.pack("<Q", 2) + b"bc"
    assert encode_blob(b"xy") == b"\x02" + b"\x00" * 7 + b"xy"
    assert encode_i64(-1) == b"\xff" * 8


keys = st.binary(max_size=40)
values = st.binary(max_size=200)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    op = draw(st.sampled_from(list(QueryType)))
    if op in (Q.VALIDATE, Q.PING):
        return Request(op=op, number=draw(st.integers(0, 2**32 - 1)))
    if op in (Q.GETNUMKEYS, Q.CANCEL_WAIT, Q.LIST_KEYS):
        return Request(op=op)
    if op in (Q.GET, Q.DELETE_KEY, Q.QUEUE_POP, Q.QUEUE_LEN):
        return Request(op=op, keys=(draw(keys),))
    if op in (Q.SET, Q.APPEND, Q.QUEUE_PUSH):
        return Request(op=op, keys=(draw(keys),), values=(draw(values),))
    if op is Q.COMPARE_SET:
        return Request(op=op, keys=(draw(keys),), values=(draw(values), draw(values)))
    if op in (Q.ADD, Q.BARRIER):
        return Request(op=op, keys=(draw(keys),), number=draw(st.integers(-(2**63), 2**63 - 1)))
    many = tuple(draw(st.lists(keys, max_size=5)))
    if op is Q.MULTI_SET:
        return Request(op=op, keys=many, values=tuple(draw(values) for _ in many))
    return Request(op=op, keys=many)


@given(st.lists(requests(), min_size=1, max_size=4))
def test_pipelined_requests_round_trip_and_every_prefix_is_incomplete(
    reqs: list[Request],
) -> None:
    wire = b"".join(encode_request(r) for r in reqs)
    first_len = len(encode_request(reqs[0]))
    for cut in range(first_len):
        assert parse_request(wire[:cut]) is None
    parsed, pos = [], 0
    while (item := parse_request(bytearray(wire), pos)) is not None:
        request, pos = item
        parsed.append(request)
    assert parsed == reqs
    assert pos == len(wire)


def test_unknown_command_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="unknown command") as info:
        parse_request(b"\x63rest")
    assert info.value.command == 0x63


@pytest.mark.parametrize(
    ("wire", "what"),
    [
        (b"\x03" + struct.pack("<Q", MAX_KEY_LEN + 1), "key"),
        (b"\x01" + encode_blob(b"k") + struct.pack("<Q", MAX_PAYLOAD_LEN + 1), "value"),
        (b"\x06" + struct.pack("<Q", MAX_KEY_COUNT + 1), "keys"),
    ],
)
def test_limits_fail_before_the_bytes_arrive(wire: bytes, what: str) -> None:
    with pytest.raises(ProtocolError, match=what):
        parse_request(wire)


def validated(state: StoreState, name: str = "c") -> Session:
    session = Session(name)
    state.feed(session, encode_request(Request(op=Q.VALIDATE, number=VALIDATION_MAGIC)))
    assert session.outbuf == b""  # VALIDATE has no reply
    return session


def run(state: StoreState, session: Session, request: Request) -> bytes:
    state.feed(session, encode_request(request))
    out = bytes(session.outbuf)
    session.outbuf.clear()
    return out


STOP, CANCELED = b"\x00", b"\x01"


def test_first_request_must_validate() -> None:
    state = StoreState()
    with pytest.raises(ProtocolError, match="VALIDATE"):
        state.feed(Session("c"), encode_request(Request(op=Q.GETNUMKEYS)))
    session = validated(state)
    with pytest.raises(ProtocolError, match="already validated"):
        state.feed(session, encode_request(Request(op=Q.VALIDATE, number=VALIDATION_MAGIC)))


def test_a_bad_command_in_a_stream_raises_protocol_error_not_buffer_error() -> None:
    # The session's bytearray is trimmed after the error; a lingering buffer export from the
    # parser would turn this into BufferError and take down the server loop's handler.
    state = StoreState()
    session = validated(state)
    with pytest.raises(ProtocolError, match="unknown command"):
        state.feed(session, encode_request(Request(op=Q.GETNUMKEYS)) + b"\xee")
    assert session.outbuf == encode_i64(0)  # requests before the bad byte were served


def test_wait_is_released_only_when_every_key_exists() -> None:
    state = StoreState()
    waiter, writer = validated(state, "w"), validated(state, "s")
    assert run(state, waiter, Request(op=Q.WAIT, keys=(b"a", b"b"))) == b""
    run(state, writer, Request(op=Q.SET, keys=(b"a",), values=(b"1",)))
    assert waiter.outbuf == b""
    run(state, writer, Request(op=Q.SET, keys=(b"b",), values=(b"2",)))
    assert waiter.outbuf == STOP and waiter in state.outbox


def test_cancel_wait_unregisters_so_a_later_set_sends_nothing() -> None:
    state = StoreState()
    waiter, writer = validated(state, "w"), validated(state, "s")
    run(state, waiter, Request(op=Q.WAIT, keys=(b"a",)))
    assert run(state, waiter, Request(op=Q.CANCEL_WAIT)) == CANCELED
    run(state, writer, Request(op=Q.SET, keys=(b"a",), values=(b"1",)))
    assert waiter.outbuf == b"" and not state.waiters


def test_barrier_releases_everyone_at_the_last_arrival() -> None:
    state = StoreState()
    first, second, third = (validated(state, n) for n in "abc")
    barrier = Request(op=Q.BARRIER, keys=(b"bar",), number=3)
    assert run(state, first, barrier) == b""
    assert run(state, second, barrier) == b""
    assert first.outbuf == b""  # the second arrival must not release the first
    assert run(state, third, barrier) == STOP
    assert first.outbuf == STOP and second.outbuf == STOP


def test_queue_push_releases_exactly_one_blocked_pop() -> None:
    state = StoreState()
    a, b, pusher = validated(state, "a"), validated(state, "b"), validated(state, "p")
    run(state, a, Request(op=Q.WAIT, keys=(b"q",)))
    run(state, b, Request(op=Q.WAIT, keys=(b"q",)))
    run(state, pusher, Request(op=Q.QUEUE_PUSH, keys=(b"q",), values=(b"item",)))
    assert (bytes(a.outbuf), bytes(b.outbuf)) == (STOP, b"")
    a.outbuf.clear()
    popped = run(state, a, Request(op=Q.QUEUE_POP, keys=(b"q",)))
    assert popped == encode_i64(1) + encode_blob(b"item")
    run(state, pusher, Request(op=Q.QUEUE_PUSH, keys=(b"q",), values=(b"next",)))
    assert (bytes(a.outbuf), bytes(b.outbuf)) == (b"", STOP)


def test_add_on_text_closes_the_connection_like_torch() -> None:
    state = StoreState()
    session = validated(state)
    run(state, session, Request(op=Q.SET, keys=(b"t",), values=(b"abc",)))
    with pytest.raises(ProtocolError, match="not an integer"):
        run(state, session, Request(op=Q.ADD, keys=(b"t",), number=1))
    assert run(state, session, Request(op=Q.ADD, keys=(b"n",), number=2)) == encode_i64(2)
    run(state, session, Request(op=Q.SET, keys=(b"s",), values=(b" 7 apples",)))
    assert run(state, session, Request(op=Q.ADD, keys=(b"s",), number=1)) == encode_i64(8)
