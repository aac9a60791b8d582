from __future__ import annotations

from collections.abc import Iterator

import pytest

from chaos.proxy.server import ServerHandle, running
from chaos.topology.etcd import EtcdCluster, etcd_binary
from tests.proxy_peers import EchoServer

NO_ETCD = "etcd binary not found (apt-get install etcd-server; ci/install.sh does this)"


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdCluster]:
    """One real etcd member per test session (per xdist worker); tests use unique prefixes."""
    if etcd_binary() is None:
        pytest.skip(NO_ETCD)
    with EtcdCluster(1) as server:
        yield server


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    """A fresh 3-member etcd cluster per test (tests kill members)."""
    if etcd_binary() is None:
        pytest.skip(NO_ETCD)
    with EtcdCluster(3) as cluster:
        yield cluster


@pytest.fixture
def echo_upstream() -> Iterator[EchoServer]:
    """An echo server on loopback: the upstream the proxy tests put a proxy in front of."""
    with EchoServer() as server:
        yield server


@pytest.fixture
def proxy_server() -> Iterator[ServerHandle]:
    """A chaos.proxy server on a free port, and toxiproxy-python pointed at it."""
    from toxiproxy.api import APIConsumer

    saved = (APIConsumer.host, APIConsumer.port)
    with running(port=0, seed=7) as handle:
        APIConsumer.host, APIConsumer.port = "127.0.0.1", handle.port
        try:
            yield handle
        finally:
            APIConsumer.host, APIConsumer.port = saved
