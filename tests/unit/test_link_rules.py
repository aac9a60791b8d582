"""`toxic` and `slow_link` in scenarios: what loads, what is refused (one line naming the
field and what was expected), and the round trip through the run dir's scenario.yaml."""

from __future__ import annotations

import pytest

from chaos.scenario.loader import dump_scenario
from chaos.topology.store_links import linked_nodes
from tests.unit.test_scenario_loader import error as scenario_error
from tests.unit.test_scenario_loader import load

TOXIC = """name: t
topology: {{nodes: 3{topo}}}
faults:
  - kind: toxic
    node: {node}
    toxic: {toxic}
    {extra}
    trigger: {{at_s: 2}}
"""


def toxic(
    *, node: str = "1", kind: str = "latency", extra: str = "duration_s: 5", topo: str = ""
) -> str:
    return TOXIC.format(node=node, toxic=kind, extra=extra, topo=topo)


def error(text: str) -> str:
    return str(scenario_error(text))  # one line, asserted there


def test_a_toxic_loads_with_toxiproxys_fields_and_round_trips() -> None:
    text = toxic(extra="attributes: {latency: 300, jitter: 20}\n    stream: upstream\n"
                 "    toxicity: 0.5\n    duration_s: 5")  # fmt: skip
    [fault] = load(text).faults
    assert (fault.toxic, fault.attributes) == ("latency", (("latency", 300), ("jitter", 20)))
    assert (fault.stream, fault.toxicity, fault.duration_s) == ("upstream", 0.5, 5.0)
    again = load(dump_scenario(load(text)))
    assert again.faults == load(text).faults


def test_defaults_are_toxiproxys() -> None:
    [fault] = load(toxic(kind="reset_peer")).faults
    assert (fault.stream, fault.toxicity, fault.attributes) == ("downstream", 1.0, ())


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (toxic(kind="latncy"), "faults[0].toxic: expected a toxic type, one of latency"),
        (toxic(extra="attributes: {rate: 5}"), "attributes.rate: unknown field; expected one"),
        (toxic(extra="attributes: {latency: -3}"), "latency: an integer >= 0, got -3"),
        (toxic(extra="stream: sideways"), "stream: expected a stream (downstream: store"),
        (toxic(extra="toxicity: 2"), "toxicity: expected a toxicity (probability) between 0 and 1"),
        (toxic(node="0"), "node 0 hosts the store and its link never leaves its process"),
        (toxic(node="random"), "node 0 hosts the store"),
        (toxic(extra="rate: 1mbit"), "toxic takes no rate"),
        (toxic(extra="duration_s: 0"), "duration_s: expected a number of seconds > 0"),
    ],
)
def test_a_bad_toxic_is_one_line_naming_the_field(text: str, says: str) -> None:
    assert says in error(text)


def test_on_etcd_every_node_may_be_proxied_even_a_drawn_one() -> None:
    scenario = load(toxic(node="random", topo=", rdzv_backend: etcd"))
    assert linked_nodes(scenario) == frozenset({0, 1, 2})
    assert linked_nodes(load(toxic())) == frozenset({1})


SLOW = "name: t\ntopology: {{nodes: 2, backend: {backend}}}\nfaults:\n" \
       "  - {{kind: slow_link, node: 1, rate: {rate}, trigger: {{at_s: 2}}}}\n"  # fmt: skip


def test_slow_link_needs_a_namespace_and_a_tc_rate() -> None:
    [fault] = load(SLOW.format(backend="netns", rate="1Mbit")).faults
    assert (fault.kind, fault.node, fault.rate) == ("slow_link", 1, "1mbit")
    assert "slow_link needs topology.backend netns or docker" in error(
        SLOW.format(backend="local", rate="1mbit")
    )
    assert "expected a tc rate such as 100kbit" in error(SLOW.format(backend="netns", rate="fast"))
