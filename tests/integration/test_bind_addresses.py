"""The stores listen on the address the job uses, on real loopback addresses: the c10d host on
the endpoint's, the workers' store on MASTER_ADDR's (end to end, from a worker), every
interface with store_bind=all; the rule itself is tests/unit/test_store_binding.py."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.rendezvous.addresses import BindPlan, bindable, listen, plan_binding
from launcher.rendezvous.backends.c10d import C10dStore
from launcher.tcpstore.client import StoreClient
from launcher.tcpstore.server import StoreServer
from tests.conftest import Procs
from tests.integration.test_c10d_hosting import free_port

pytestmark = pytest.mark.integration


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return False
    return True


@pytest.fixture
def hosted() -> Iterator[list[C10dStore]]:
    opened: list[C10dStore] = []
    yield opened
    for store in opened:
        store.close()


@pytest.mark.parametrize(("bind", "elsewhere"), [("auto", False), ("all", True)])
def test_the_c10d_host_listens_on_the_endpoint_address(
    hosted: list[C10dStore], bind: str, elsewhere: bool
) -> None:
    port = free_port()
    store = C10dStore.open(
        "127.0.0.2", port, is_host=None, timeout_s=5, run_id="bind", store_bind=bind
    )
    hosted.append(store)
    assert store.hosting
    assert reachable("127.0.0.2", port)
    assert reachable("127.0.0.3", port) is elsewhere


def test_one_port_on_every_address_of_the_name() -> None:
    plan = BindPlan(addresses=("127.0.0.4", "127.0.0.5"), reason="test")
    listeners = listen(plan, 0)
    ports = {sock.getsockname()[1] for sock in listeners}
    assert len(ports) == 1
    port = ports.pop()
    with StoreServer(listeners) as server:
        for host in ("127.0.0.4", "127.0.0.5"):
            client = StoreClient(host, port, timeout_s=5)
            client.set("k", host)
            assert client.get("k") == host.encode()
            client.close()
        assert not reachable("127.0.0.6", port)
        assert server.addresses == ["127.0.0.4", "127.0.0.5"]


def test_localhost_binds_each_loopback_family_it_names() -> None:
    plan = plan_binding("localhost", remote_peers=True)
    found = set(plan.addresses)
    assert "127.0.0.1" in found and found <= {"127.0.0.1", "::1"}
    if "::1" in found:
        assert bindable("::1")


WORKER = r"""
import json, os, socket, sys
port = int(os.environ["MASTER_PORT"])
def reaches(host):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except ConnectionRefusedError:
        return False
record = {"addr": os.environ["MASTER_ADDR"], "own": reaches(os.environ["MASTER_ADDR"]),
          "other": reaches("127.0.0.1")}
with open(sys.argv[1], "w") as out:
    json.dump(record, out)
"""


def test_workers_find_their_store_at_master_addr_and_only_there(
    procs: Procs, tmp_path: Path
) -> None:
    script, out = tmp_path / "worker.py", tmp_path / "seen.json"
    script.write_text(WORKER)
    args = ["--standalone", "--nproc-per-node", "1", "--local-addr", "127.0.0.7"]
    args += ["--log-dir", str(tmp_path / "logs"), str(script), str(out)]
    agent = procs.launcher(*args)
    _, err = agent.communicate(timeout=60)
    assert agent.returncode == 0, err
    assert json.loads(out.read_text()) == {"addr": "127.0.0.7", "own": True, "other": False}
