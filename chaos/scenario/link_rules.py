"""The rules of the link faults, `toxic` and `slow_link` (pure; see docs/scenarios.md).

    - kind: toxic                 a Toxiproxy toxic on node 1's link to the store
      node: 1
      toxic: latency              latency, bandwidth, slow_close, timeout, reset_peer,
      attributes: {latency: 300}  slicer, limit_data (Toxiproxy's attributes and units)
      stream: downstream          downstream (store -> node, default) or upstream
      toxicity: 1.0               the chance it applies to a connection (default 1)
      duration_s: 15              removed after this long (default: until the run ends)
      trigger: {at_s: 5}
    - kind: slow_link             node 2's outgoing traffic capped at 1 Mbit/s (tc tbf)
      node: 2
      rate: 1mbit
      duration_s: 10
      trigger: {after_step: 5}

The attribute names and their checks come from chaos.proxy.toxics, the server's own table,
so a scenario cannot ask for a toxic the proxy would refuse when the fault fires.
"""

from __future__ import annotations

import re
from typing import Any

from chaos.proxy.toxics import ATTRIBUTES, DOWNSTREAM, UPSTREAM
from chaos.scenario.document import Fields, Value

TOXIC_TYPES = tuple(kind for kind in ATTRIBUTES if kind != "noop")
_RATE = re.compile(r"^[1-9][0-9]*(\.[0-9]+)?(bit|kbit|mbit|gbit)$")
RATE_HELP = "a tc rate such as 100kbit, 1mbit or 1gbit (bits per second)"


def toxic_fields(f: Fields, out: dict[str, Any]) -> None:
    """`toxic`, `attributes`, `stream`, `toxicity` of a toxic fault, into `out`."""
    kind = f.need("toxic", "a toxic type, one of " + ", ".join(TOXIC_TYPES)).choice(
        TOXIC_TYPES, what="a toxic type, one of"
    )
    out["toxic"] = kind
    names = ATTRIBUTES[kind]
    attributes: list[tuple[str, int]] = []
    if (attrs_v := f.get("attributes")) is not None:
        what = f"{kind}'s attributes: a mapping of " + ", ".join(names)
        fields = attrs_v.fields(names, what=what)
        for name in fields:
            value = fields.get(name)
            if value is not None:
                attributes.append((name, value.integer(low=0, what=f"{name}: an integer")))
    out["attributes"] = tuple(attributes)
    if (stream_v := f.get("stream")) is not None:
        out["stream"] = stream_v.choice(
            (DOWNSTREAM, UPSTREAM), what="a stream (downstream: store -> node), one of"
        )
    if (toxicity_v := f.get("toxicity")) is not None:
        out["toxicity"] = toxicity_v.number(low=0.0, high=1.0, what="a toxicity (probability)")


def rate(value: Value) -> str:
    text = value.text(what=RATE_HELP).lower()
    if not _RATE.match(text):
        value.fail(RATE_HELP)
    return text
