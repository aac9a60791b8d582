"""Toxic specs, Go-like body decoding, addresses and the slicer's cuts: the proxy's pure parts."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaos.proxy import address, decode
from chaos.proxy.errors import ApiError
from chaos.proxy.stages import Slicer
from chaos.proxy.toxics import new_toxic, updated_toxic


def refused(body: object, existing: frozenset[str] = frozenset()) -> tuple[int, str]:
    with pytest.raises(ApiError) as info:
        new_toxic(body, existing)
    return info.value.status, info.value.message


def test_defaults_and_full_attribute_echo() -> None:
    spec = new_toxic({"type": "latency", "attributes": {"latency": 5}}, set())
    assert spec.to_json() == {
        "attributes": {"latency": 5, "jitter": 0},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
    }


def test_keys_match_case_insensitively_and_the_stream_is_echoed_as_sent() -> None:
    spec = new_toxic({"Type": "bandwidth", "STREAM": "UpStream", "Attributes": {"RATE": 9}}, [])
    assert (spec.name, spec.stream) == ("bandwidth_UpStream", "UpStream")
    assert spec.direction == "upstream"
    assert spec.attributes == {"rate": 9}


def test_an_empty_name_is_the_default_name_and_null_attributes_are_zeros() -> None:
    spec = new_toxic({"type": "slicer", "name": "", "attributes": None}, [])
    assert spec.name == "slicer_downstream"
    assert spec.attributes == {"average_size": 0, "size_variation": 0, "delay": 0}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"type": "explode"}, (400, "invalid toxic type")),
        ({"type": "explode", "stream": "sideways"}, (400, "stream was invalid, can be either")),
        ({"type": "latency", "attributes": {"latency": -1}}, (400, "invalid attribute latency")),
        ({"type": "latency", "attributes": {"latency": 1.5}}, (400, "bad request body: json: ")),
        ({"type": "latency", "attributes": {"latency": True}}, (400, "bad request body: json: ")),
        ({"type": "latency", "attributes": {"latency": "5"}}, (400, "bad request body: json: ")),
        ({"type": 3}, (400, "bad request body: json: cannot unmarshal number 3 into Go struct")),
        ([], (400, "bad request body: json: cannot unmarshal array into Go value")),
    ],
)
def test_refusals_in_toxiproxys_order(body: object, expected: tuple[int, str]) -> None:
    status, message = refused(body)
    assert status == expected[0] and message.startswith(expected[1])


def test_names_are_unique_across_streams() -> None:
    assert refused({"type": "noop", "name": "n"}, frozenset({"n"})) == (409, "toxic already exists")


def test_update_keeps_what_it_does_not_mention() -> None:
    spec = new_toxic({"type": "latency", "attributes": {"latency": 5, "jitter": 1}}, [])
    updated = updated_toxic(spec, {"attributes": {"jitter": 3}, "name": "ignored"})
    assert (updated.name, updated.toxicity, dict(updated.attributes)) == (
        "latency_downstream",
        1.0,
        {"latency": 5, "jitter": 3},
    )
    assert updated_toxic(updated, {"toxicity": 0.25}).toxicity == 0.25


def test_body_decoding_reads_the_first_value_only() -> None:
    assert decode.first_value(b'  {"a": 1} trailing junk') == {"a": 1}
    with pytest.raises(ApiError, match="bad request body: EOF"):
        decode.first_value(b"   ")
    with pytest.raises(ApiError, match="bad request body"):
        decode.first_value(b"{nope")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("local373", "listen tcp: address local373: missing port in address"),
        ("127.0.0.1:70000", "listen tcp: address 127.0.0.1:70000: invalid port"),
        ("::1:80", "listen tcp: address ::1:80: too many colons in address"),
    ],
)
def test_bad_listen_addresses_get_gos_messages(text: str, message: str) -> None:
    with pytest.raises(ApiError) as info:
        address.split(text)
    assert (info.value.status, info.value.message) == (500, message)


def test_resolve_reads_back_as_go_does() -> None:
    assert address.resolve("localhost:7070") == "127.0.0.1:7070"
    assert address.resolve("[::1]:80") == "[::1]:80"
    assert address.resolve(":0") in ("[::]:0", "0.0.0.0:0")


class _NoConn:
    def close(self) -> None:
        raise AssertionError("the slicer never closes")


@given(
    size=st.integers(0, 5000),
    average=st.integers(0, 300),
    variation=st.integers(0, 300),
    seed=st.integers(0, 2**16),
)
def test_slicer_cuts_cover_the_chunk_with_nonempty_bounded_pieces(
    size: int, average: int, variation: int, seed: int
) -> None:
    attributes = {"average_size": average, "size_variation": variation, "delay": 0}
    spec = new_toxic({"type": "slicer", "attributes": attributes}, [])
    bounds = Slicer(spec, _NoConn(), random.Random(seed)).cuts(size)
    assert bounds[0] == 0 and bounds[-1] == size
    pieces = [b - a for a, b in itertools.pairwise(bounds)]
    assert all(piece > 0 for piece in pieces) or size == 0
    assert all(piece <= max(average + variation, 1) for piece in pieces)
