"""Toxic specifications: the types, their attributes, and how API bodies become specs.

Pure: no sockets, no clock. A spec is what the API stores and echoes; `chaos.proxy.stages`
turns it into behaviour on a live link. The validation order is Toxiproxy's (body, stream,
default name, type, duplicate name, attributes), so a body with several faults gets the
same error from both servers.

| type         | attributes (integers)                       | unit         |
|--------------|---------------------------------------------|--------------|
| latency      | latency, jitter                             | ms           |
| bandwidth    | rate                                        | KB/s (1000 B)|
| slow_close   | delay                                       | ms           |
| timeout      | timeout                                     | ms           |
| reset_peer   | timeout                                     | ms           |
| slicer       | average_size, size_variation (bytes), delay | µs           |
| limit_data   | bytes                                       | bytes        |
| noop         | none                                        |              |

One deliberate difference: a negative attribute is refused with 400 (Go accepts it and then
treats it as 0, or panics for bandwidth).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from chaos.proxy import decode
from chaos.proxy.errors import (
    BAD_REQUEST,
    CONFLICT,
    INVALID_STREAM,
    INVALID_TOXIC_TYPE,
    TOXIC_EXISTS,
    ApiError,
)

UPSTREAM = "upstream"  # client -> server
DOWNSTREAM = "downstream"  # server -> client

# Attribute names in Go's struct order (the order the JSON echoes them in), and the Go
# struct's name for error messages.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "latency": ("latency", "jitter"),
    "bandwidth": ("rate",),
    "slow_close": ("delay",),
    "timeout": ("timeout",),
    "reset_peer": ("timeout",),
    "slicer": ("average_size", "size_variation", "delay"),
    "limit_data": ("bytes",),
    "noop": (),
}
_GO_STRUCT = {
    "latency": "LatencyToxic",
    "bandwidth": "BandwidthToxic",
    "slow_close": "SlowCloseToxic",
    "timeout": "TimeoutToxic",
    "reset_peer": "ResetToxic",
    "slicer": "SlicerToxic",
    "limit_data": "LimitDataToxic",
    "noop": "NoopToxic",
}


@dataclass(frozen=True, kw_only=True)
class ToxicSpec:
    name: str
    type: str  # a key of ATTRIBUTES
    stream: str  # as the client sent it (Toxiproxy echoes it unchanged); see `direction`
    toxicity: float  # probability, drawn per connection and direction; not range-checked
    attributes: Mapping[str, int]  # every attribute of the type, missing ones 0

    @property
    def direction(self) -> str:
        return self.stream.lower()

    def to_json(self) -> dict[str, Any]:
        # Go prints a float32 1.0 as `1`.
        toxicity: float | int = int(self.toxicity) if self.toxicity.is_integer() else self.toxicity
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": toxicity,
        }


def parse_stream(stream: str) -> str:
    if stream.lower() not in (UPSTREAM, DOWNSTREAM):
        raise ApiError(BAD_REQUEST, INVALID_STREAM)
    return stream


def _attributes(kind: str, raw: Any, base: Mapping[str, int]) -> dict[str, int]:
    """`raw` decoded onto `base`: missing keys keep their value, unknown keys are ignored."""
    where = _GO_STRUCT[kind]
    fields = decode.struct(raw, f"toxics.{where}")
    values = {key: decode.integer(fields, key, where, base[key]) for key in ATTRIBUTES[kind]}
    for key, value in values.items():
        if value < 0:
            raise ApiError(BAD_REQUEST, f"invalid attribute {key}: {value} is negative")
    return values


def new_toxic(body: Any, existing: Collection[str]) -> ToxicSpec:
    """A toxic from a create body (already JSON-decoded); `existing` are the proxy's names."""
    fields = decode.struct(body, "toxics.ToxicWrapper")
    kind = decode.string(fields, "type", "ToxicWrapper", "")
    stream = parse_stream(decode.string(fields, "stream", "ToxicWrapper", DOWNSTREAM))
    name = decode.string(fields, "name", "ToxicWrapper", "") or f"{kind}_{stream}"
    toxicity = decode.number(fields, "toxicity", "ToxicWrapper", 1.0)
    if kind not in ATTRIBUTES:
        raise ApiError(BAD_REQUEST, INVALID_TOXIC_TYPE)
    if name in existing:
        raise ApiError(CONFLICT, TOXIC_EXISTS)
    zeros = dict.fromkeys(ATTRIBUTES[kind], 0)
    attributes = _attributes(kind, fields.get("attributes"), zeros)
    return ToxicSpec(name=name, type=kind, stream=stream, toxicity=toxicity, attributes=attributes)


def updated_toxic(spec: ToxicSpec, body: Any) -> ToxicSpec:
    """An update: attributes decoded onto the current ones, toxicity only when present;
    name, type and stream in the body are ignored."""
    fields = decode.struct(body, "toxics.ToxicWrapper")
    toxicity = decode.number(fields, "toxicity", "ToxicWrapper", spec.toxicity)
    attributes = _attributes(spec.type, fields.get("attributes"), spec.attributes)
    return replace(spec, toxicity=toxicity, attributes=attributes)
