"""The partition fault's pure parts: which peers each node is cut from, and the iptables rules
of each mode (the rules themselves are exercised in tests/chaos/test_partitions.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from chaos.faults.partition import _cuts, _etcd_members, _store_cuts, rules_for
from chaos.scenario.schema import Fault, Trigger

AT = Trigger(kind="at_s", at_s=1.0)
EVERYONE = [0, 1, 2, 3]


def part(**fields: object) -> Fault:
    return Fault(kind="partition", trigger=AT, **fields)  # type: ignore[arg-type]


def test_a_node_is_cut_from_every_other_node() -> None:
    assert _cuts(part(node=2), EVERYONE, 0) == {2: [0, 1, 3]}


def test_from_store_cuts_only_the_store_host() -> None:
    assert _cuts(part(node=2, from_store=True), EVERYONE, 0) == {2: [0]}
    assert _cuts(part(node=0, from_store=True), EVERYONE, 1) == {0: [1]}


def test_from_store_cannot_cut_the_host_or_a_hostless_store() -> None:
    assert "cannot be cut from a store it hosts" in str(
        _cuts(part(node=0, from_store=True), EVERYONE, 0)
    )
    assert isinstance(_cuts(part(node=1, from_store=True), EVERYONE, None), str)


def test_groups_cut_each_node_from_the_other_groups_only() -> None:
    cuts = _cuts(part(groups=((0, 1), (2,))), EVERYONE, 0)
    # Node 3 is in no group: it keeps every link, and nobody is cut from it.
    assert cuts == {0: [2], 1: [2], 2: [0, 1]}
    three = _cuts(part(groups=((0,), (1, 2), (3,))), EVERYONE, 0)
    assert three == {0: [1, 2, 3], 1: [0, 3], 2: [0, 3], 3: [0, 1, 2]}


def test_cuts_that_cannot_apply_say_why() -> None:
    assert _cuts(part(), EVERYONE, 0) == "partition needs a node or groups"
    assert _cuts(part(node=7), EVERYONE, 0) == "node 7 is not in the topology"
    assert _cuts(part(groups=((0,), (5, 6))), EVERYONE, 0) == "nodes [5, 6] are not in the topology"


def test_drop_rules_are_two_silent_drops() -> None:
    assert rules_for("10.0.0.2", "drop") == [
        ["INPUT", "-s", "10.0.0.2", "-j", "DROP"],
        ["OUTPUT", "-d", "10.0.0.2", "-j", "DROP"],
    ]


def test_reject_rules_reset_tcp_both_ways_spare_lo_and_resets_and_drop_the_rest() -> None:
    refuse = "-p tcp ! --tcp-flags RST RST"
    reset = "-j REJECT --reject-with tcp-reset"
    assert [" ".join(rule) for rule in rules_for("10.0.0.2", "reject")] == [
        f"INPUT ! -i lo {refuse} -s 10.0.0.2 {reset}",
        f"OUTPUT ! -o lo {refuse} -d 10.0.0.2 {reset}",
        "INPUT ! -p tcp -s 10.0.0.2 -j DROP",
        "OUTPUT ! -p tcp -d 10.0.0.2 -j DROP",
    ]


def test_an_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="drop or reject"):
        rules_for("10.0.0.2", "delay")


def test_with_etcd_from_store_cuts_no_node_only_the_members() -> None:
    members = ["10.0.0.200", "10.0.0.201"]
    fault = part(node=2, from_store=True)
    assert _cuts(fault, EVERYONE, None, etcd=True) == {2: []}
    assert _store_cuts(fault, members) == {2: members}


def test_with_etcd_a_cut_node_loses_every_node_and_every_member() -> None:
    members = ["10.0.0.200", "10.0.0.201", "10.0.0.202"]
    assert _cuts(part(node=0), EVERYONE, None, etcd=True) == {0: [1, 2, 3]}
    assert _store_cuts(part(node=0), members) == {0: members}


def test_groups_and_c10d_cut_no_etcd_member() -> None:
    assert _store_cuts(part(groups=((0, 1), (2,))), ["10.0.0.200"]) == {}
    assert _store_cuts(part(node=1), []) == {}  # c10d: no members


def test_etcd_member_addresses_come_from_the_endpoint() -> None:
    etcd = SimpleNamespace(kind="etcd", endpoint="10.0.0.200:2379,10.0.0.201:2379")
    c10d = SimpleNamespace(kind="c10d", endpoint="10.0.0.10:29400")
    assert _etcd_members(etcd) == ["10.0.0.200", "10.0.0.201"]  # type: ignore[arg-type]
    assert _etcd_members(c10d) == []  # type: ignore[arg-type]
