from __future__ import annotations

import signal

import pytest

from launcher.config import (
    Std,
    parse_endpoint,
    parse_nnodes,
    parse_rdzv_conf,
    parse_signals,
    parse_std_spec,
)
from launcher.errors import ConfigError


def test_nnodes() -> None:
    assert parse_nnodes("2") == (2, 2)
    assert parse_nnodes("1:4") == (1, 4)
    for bad in ("0", "3:2", "1:2:3", "a:b", "0:1"):
        with pytest.raises(ConfigError):
            parse_nnodes(bad)


def test_endpoint_forms() -> None:
    assert parse_endpoint("", default_port=29400) == ("localhost", 29400)
    assert parse_endpoint(" node1 ", default_port=29400) == ("node1", 29400)
    assert parse_endpoint("node1:123", default_port=29400) == ("node1", 123)
    assert parse_endpoint("[::1]:99", default_port=None) == ("::1", 99)
    with pytest.raises(ConfigError):
        parse_endpoint("node1:99999", default_port=None)
    with pytest.raises(ConfigError):
        parse_endpoint("bad host!", default_port=None)


def test_rdzv_conf_typed() -> None:
    opts = parse_rdzv_conf(
        "join_timeout=5, last_call_timeout=0.5,is_host=yes,keep_alive_max_attempt=2"
    )
    assert (opts.join_timeout_s, opts.last_call_timeout_s) == (5.0, 0.5)
    assert opts.is_host is True and opts.keep_alive_max_attempt == 2
    assert parse_rdzv_conf("").join_timeout_s == 600.0
    assert parse_rdzv_conf("protocol=https").etcd.protocol == "https"


def test_std_spec() -> None:
    assert parse_std_spec("3", flag="-r").for_rank(5) == Std.ALL
    spec = parse_std_spec("0:1,12:2", flag="-r")
    assert (spec.for_rank(0), spec.for_rank(12), spec.for_rank(1)) == (Std.OUT, Std.ERR, Std.NONE)


def test_signals() -> None:
    assert parse_signals("SIGTERM,INT") == (signal.SIGTERM, signal.SIGINT)
    with pytest.raises(ConfigError):
        parse_signals("SIGKILL")
