from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.etcd_cluster import EtcdCluster, EtcdServer, etcd_binary

NO_ETCD = "etcd binary not found (apt-get install etcd-server; ci/install.sh does this)"


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """One real etcd member per test session (per xdist worker); tests use unique prefixes."""
    if etcd_binary() is None:
        pytest.skip(NO_ETCD)
    with EtcdServer() as server:
        yield server


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    """A fresh 3-member etcd cluster per test (tests kill members)."""
    if etcd_binary() is None:
        pytest.skip(NO_ETCD)
    with EtcdCluster(3) as cluster:
        yield cluster
