"""Where the store servers listen (launcher/rendezvous/addresses.py), with the resolver and
the interfaces faked: the address the job reaches them by, or every interface and why."""

from __future__ import annotations

import re

import pytest

from launcher import events as ev
from launcher.config import parse_rdzv_conf
from launcher.errors import ConfigError
from launcher.rendezvous.addresses import plan_binding
from launcher.rendezvous.health import drop_events
from launcher.tcpstore.drops import DroppedClient

# This machine, as the fakes see it: loopback, one NIC, IPv6 loopback.
MINE = {"127.0.0.1", "127.0.1.1", "127.0.0.2", "::1", "10.0.0.5"}
NAMES = {
    "localhost": ["127.0.0.1", "::1"],
    "node1": ["10.0.0.5"],
    "debian-host": ["127.0.1.1"],  # /etc/hosts maps the host's own name to 127.0.1.1
    "both": ["127.0.1.1", "10.0.0.5"],
    "elsewhere": ["203.0.113.9"],
}


def lookup(host: str) -> list[str]:
    return NAMES.get(host, [host] if host[0].isdigit() or ":" in host else [])


def plan(host: str, *, remote: bool = True, bind: str = "auto") -> tuple[tuple[str, ...], bool]:
    found = plan_binding(
        host, store_bind=bind, remote_peers=remote, lookup=lookup, can_bind=MINE.__contains__
    )
    return found.addresses, found.warn


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.2", ("127.0.0.2",)),  # a literal is taken at its word, loopback or not
        ("10.0.0.5", ("10.0.0.5",)),
        ("[::1]", ("::1",)),
        ("localhost", ("127.0.0.1", "::1")),  # every address of the name
        ("node1", ("10.0.0.5",)),
        ("both", ("127.0.1.1", "10.0.0.5")),
    ],
)
def test_the_address_the_job_uses_and_nothing_else(host: str, expected: tuple[str, ...]) -> None:
    assert plan(host) == (expected, False)


def test_a_name_that_is_loopback_only_here_listens_everywhere_when_others_connect() -> None:
    # Peers resolve debian-host to its real address, which this machine cannot name.
    assert plan("debian-host", remote=True) == ((), True)
    assert plan("debian-host", remote=False) == (("127.0.1.1",), False)


def test_an_address_this_machine_lacks_listens_everywhere_as_before() -> None:
    assert plan("elsewhere") == ((), True)  # NAT, a load balancer, a stale hosts file
    assert plan("no-such-host") == ((), True)


def test_store_bind_all_is_every_interface_whatever_the_name() -> None:
    assert plan("127.0.0.2", bind="all") == ((), False)


@pytest.mark.parametrize(
    ("text", "value"),
    [("", "auto"), ("store_bind=auto", "auto"), ("store_bind=all", "all")]
    + [(f"store_bind={v}", "all") for v in ("0.0.0.0", "::", "ALL")],
)
def test_store_bind_is_parsed(text: str, value: str) -> None:
    assert parse_rdzv_conf(text).store_bind == value


def test_a_bad_store_bind_is_one_line() -> None:
    with pytest.raises(ConfigError, match=re.escape("must be auto or all, got '10.0.0.5'")):
        parse_rdzv_conf("store_bind=10.0.0.5")


def test_a_dropped_client_is_an_event() -> None:
    log = ev.EventLog(run_id="r", node_id="n")
    report = drop_events(log, store="workers")
    report(DroppedClient(port=29500, peer="10.0.0.9:4242", reason="garbage", suppressed=3))
    (event,) = log.history
    assert event.name == ev.STORE_CLIENT_DROPPED
    assert dict(event.fields) == {
        "store": "workers",
        "port": 29500,
        "peer": "10.0.0.9:4242",
        "reason": "garbage",
        "suppressed": 3,
    }
