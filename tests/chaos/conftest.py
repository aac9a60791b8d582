"""What the root and docker tests of the harness need, skipped cleanly where it is missing,
and failed instead where CI names the backend in CHAOS_REQUIRE_BACKENDS (ci/test.sh)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


def _unavailable(backend: str, missing: str) -> None:
    if backend in os.environ.get("CHAOS_REQUIRE_BACKENDS", "").split():
        pytest.fail(f"CHAOS_REQUIRE_BACKENDS names {backend}, but {missing}")
    pytest.skip(missing)


@pytest.fixture
def netns_ready() -> None:
    """Root, `ip` and `iptables` (use it as `pytest.mark.usefixtures("netns_ready")`)."""
    from chaos.topology.netns import have_netns

    missing = have_netns()
    if missing:
        _unavailable("netns", missing)


@pytest.fixture
def docker_client() -> Iterator[Any]:
    """A Docker SDK client of a daemon that answers."""
    from chaos.topology.containers import have_docker

    missing = have_docker()
    if missing:
        _unavailable("docker", missing)
    import docker

    client = docker.from_env(timeout=30)
    yield client
    client.close()
