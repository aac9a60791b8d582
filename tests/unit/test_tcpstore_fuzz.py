"""The store server's input side under garbage, truncation and lying length prefixes, without
sockets: what a misbehaving client can make the pure core (Framer, StoreState) do and hold.

The real-socket counterpart (concurrent real clients, slow-loris, 10k garbage connections and
the server's memory) is tests/integration/test_store_abuse.py.
"""

from __future__ import annotations

import itertools
import struct
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher.tcpstore.drops import DroppedClient, DropReports
from launcher.tcpstore.limits import Limits
from launcher.tcpstore.protocol import (
    VALIDATION_MAGIC,
    Framer,
    ProtocolError,
    QueryType,
    Request,
    encode_request,
    parse_request,
)
from launcher.tcpstore.state import Session, StoreState
from tests.unit.test_tcpstore_protocol import requests

Q = QueryType
VALIDATE = encode_request(Request(op=Q.VALIDATE, number=VALIDATION_MAGIC))
# Small limits, so the fuzzer reaches them.
SMALL = Limits(
    max_key_len=64,
    max_value_len=256,
    max_key_count=16,
    max_request_len=1024,
    max_reply_len=4096,
    buffer_budget=8192,
    out_high_water=512,
)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(requests(), st.lists(st.integers(0, 10_000), max_size=8))
def test_the_framer_finds_the_end_however_the_bytes_arrive(req: Request, points: list[int]) -> None:
    wire = encode_request(req)
    framer, buf = Framer(), bytearray(b"junk")  # the request starts at offset 4
    ends = []
    for piece in cut(wire, points):
        buf += piece
        ends.append(framer.frame_end(buf, 4))
    assert ends[-1] == len(buf) and all(end is None for end in ends[:-1])
    assert parse_request(buf, 4) == (req, len(buf))


@given(st.lists(requests(), min_size=1, max_size=5), st.lists(st.integers(0, 10_000), max_size=8))
def test_a_valid_stream_split_anywhere_gets_the_same_replies(
    reqs: list[Request], points: list[int]
) -> None:
    reqs = [r for r in reqs if r.op is not Q.VALIDATE]  # a second VALIDATE is an error
    wire = VALIDATE + b"".join(encode_request(r) for r in reqs)
    whole, pieces = StoreState(), StoreState()
    a, b = Session("a"), Session("b")
    outcomes = []
    for state, session, chunks in ((whole, a, [wire]), (pieces, b, cut(wire, points))):
        try:
            for chunk in chunks:
                state.feed(session, chunk)
            outcomes.append(("ok", bytes(session.outbuf)))
        except ProtocolError as err:  # ADD on text, say: the same for both
            outcomes.append(("error", err.reason))
    assert outcomes[0] == outcomes[1]
    assert whole.data == pieces.data


@given(st.binary(min_size=1, max_size=2048), st.lists(st.integers(0, 4096), max_size=6))
def test_garbage_before_validate_is_refused_at_its_first_byte(
    garbage: bytes, points: list[int]
) -> None:
    state, session = StoreState(SMALL), Session("g", limits=SMALL)
    try:
        for chunk in cut(garbage, points):
            state.feed(session, chunk)
            # Survives only as a prefix of a VALIDATE frame, waiting for the magic.
            assert garbage[0] == Q.VALIDATE and len(session.inbuf) < len(VALIDATE)
    except ProtocolError:
        pass
    assert session.outbuf == b"" and not session.validated and not state.data


@given(st.binary(max_size=4096), st.lists(st.integers(0, 8192), max_size=8))
def test_garbage_after_validate_is_bounded_and_only_ever_a_protocol_error(
    garbage: bytes, points: list[int]
) -> None:
    state, session = StoreState(SMALL), Session("g", limits=SMALL)
    state.feed(session, VALIDATE)
    for chunk in cut(garbage, points):
        session.outbuf.clear()  # a client that reads its replies
        try:
            state.feed(session, chunk)
        except ProtocolError:
            return
        # At most one unfinished request is held, and it fits the request limit.
        assert len(session.inbuf) <= SMALL.max_request_len
        assert len(session.outbuf) <= SMALL.out_high_water + SMALL.max_reply_len
    assert all(len(k) <= SMALL.max_key_len for k in state.data)
    assert all(len(v) <= SMALL.max_reply_len for v in state.data.values())


def header(op: QueryType, *fields: bytes) -> bytes:
    return bytes([op]) + b"".join(fields)


LYING = [
    ("key", header(Q.GET, struct.pack("<Q", 2**63))),
    ("key", header(Q.SET, struct.pack("<Q", 2**64 - 1))),
    ("value", header(Q.SET, struct.pack("<Q", 1), b"k", struct.pack("<Q", 2**63))),
    ("value", header(Q.COMPARE_SET, struct.pack("<Q", 1), b"k", struct.pack("<Q", 2**40))),
    ("keys", header(Q.WAIT, struct.pack("<Q", 2**63))),
    ("keys", header(Q.MULTI_SET, struct.pack("<Q", 2**62))),
]


@pytest.mark.parametrize(("what", "wire"), LYING)
def test_a_lying_length_fails_before_anything_is_allocated_for_it(what: str, wire: bytes) -> None:
    state, session = StoreState(), Session("liar")
    state.feed(session, VALIDATE)
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match=what):
            state.feed(session, wire)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_a_request_over_the_size_limit_fails_before_it_is_all_in() -> None:
    # Each key and value within its own limit; together over max_request_len (1024).
    req = Request(
        op=Q.MULTI_SET, keys=tuple(b"k%d" % i for i in range(8)), values=(b"v" * 250,) * 8
    )
    wire = encode_request(req)
    assert len(wire) > 2 * SMALL.max_request_len
    state, session = StoreState(SMALL), Session("big", limits=SMALL)
    state.feed(session, VALIDATE)
    fed = 0
    with pytest.raises(ProtocolError, match="request of at least"):
        for piece in cut(wire, list(range(0, len(wire), 100))):
            state.feed(session, piece)
            fed += len(piece)
            assert len(session.inbuf) <= SMALL.max_request_len
    assert fed < SMALL.max_request_len + 300


def test_a_count_whose_length_fields_alone_are_too_long_fails_at_the_count() -> None:
    limits = Limits(max_request_len=1024 * 1024, max_reply_len=1, buffer_budget=2 * 1024 * 1024)
    framer = Framer(limits)
    with pytest.raises(ProtocolError, match="request of at least"):
        framer.frame_end(header(Q.MULTI_SET, struct.pack("<Q", 128 * 1024)), 0)


def test_replies_over_the_limit_close_the_connection_instead_of_being_built() -> None:
    state = StoreState(SMALL)
    session = Session("r", limits=SMALL)
    state.feed(session, VALIDATE)
    state.feed(session, encode_request(Request(op=Q.SET, keys=(b"k",), values=(b"v" * 256,))))
    # 16 copies of a 256-byte value: 4224 bytes of reply, over the 4096 limit.
    with pytest.raises(ProtocolError, match="reply of 4224 bytes"):
        state.feed(session, encode_request(Request(op=Q.MULTI_GET, keys=(b"k",) * 16)))
    assert session.outbuf == b""


def test_append_cannot_grow_a_value_past_what_a_reply_may_carry() -> None:
    state, session = StoreState(SMALL), Session("a", limits=SMALL)
    state.feed(session, VALIDATE)
    chunk = encode_request(Request(op=Q.APPEND, keys=(b"k",), values=(b"x" * 256,)))
    with pytest.raises(ProtocolError, match="APPEND"):
        for _ in range(17):
            state.feed(session, chunk)
    assert len(state.data[b"k"]) == 4096


def test_pipelined_requests_wait_while_replies_are_unread() -> None:
    state, session = StoreState(SMALL), Session("p", limits=SMALL)
    state.feed(session, VALIDATE)
    state.feed(session, encode_request(Request(op=Q.SET, keys=(b"k",), values=(b"v" * 200,))))
    get = encode_request(Request(op=Q.GET, keys=(b"k",)))
    state.feed(session, get * 100)  # 100 replies of 208 bytes: 20800 if all were run
    assert SMALL.out_high_water <= len(session.outbuf) < SMALL.out_high_water + 208
    assert len(session.inbuf) == len(get) * (100 - len(session.outbuf) // 208)
    served = len(session.outbuf) // 208
    while session.inbuf:  # the server's loop: drain, then run what waited
        session.outbuf.clear()
        state.feed(session, b"")
        served += len(session.outbuf) // 208
    assert served == 100


def test_wait_on_a_repeated_key_is_released_once_it_is_set() -> None:
    state = StoreState()
    waiter, writer = Session("w"), Session("s")
    for session in (waiter, writer):
        state.feed(session, VALIDATE)
    state.feed(waiter, encode_request(Request(op=Q.WAIT, keys=(b"a", b"a", b"b"))))
    state.feed(writer, encode_request(Request(op=Q.SET, keys=(b"a",), values=(b"1",))))
    assert waiter.outbuf == b""
    state.feed(writer, encode_request(Request(op=Q.SET, keys=(b"b",), values=(b"2",))))
    assert waiter.outbuf == b"\x00" and not state.waiters


def test_drop_reports_are_rate_limited_and_the_rest_counted() -> None:
    seen: list[DroppedClient] = []
    limits = Limits(drop_reports_per_window=2, drop_report_window_s=10.0)
    reports = DropReports(label="s", port=1, limits=limits, on_drop=seen.append)
    for i in range(5):
        reports.dropped(f"p{i}", "garbage", now=100.0 + i)
    assert [d.peer for d in seen] == ["p0", "p1"]
    reports.flush(now=105.0)  # the window has not ended: nothing yet
    assert len(seen) == 2
    reports.flush(now=110.0)  # it has: the last unreported drop, counting the two before it
    assert (seen[-1].peer, seen[-1].suppressed) == ("p4", 2)
    reports.dropped("p5", "garbage", now=111.0)
    assert (seen[-1].peer, seen[-1].suppressed) == ("p5", 0)
    assert reports.total == 6


def test_a_failing_drop_sink_does_not_raise() -> None:
    def broken(drop: DroppedClient) -> None:
        raise OSError("disk full")

    reports = DropReports(label="s", port=1, limits=Limits(), on_drop=broken)
    reports.dropped("p", "garbage", now=0.0)
    assert reports.total == 1


def test_limits_must_leave_room_for_one_request_and_one_reply() -> None:
    with pytest.raises(ValueError, match="buffer_budget"):
        Limits(buffer_budget=1024)
