"""The c10d backend's store without torch: who hosts it (torchrun's rule, is_host explicit),
one-line errors, and a multi-node job whose agents cannot import torch at all.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.errors import RendezvousConnectionError
from launcher.rendezvous.addresses import machine_owns
from launcher.rendezvous.backends.c10d import C10dStore
from tests.conftest import Procs, clean_env

pytestmark = pytest.mark.integration


def free_port() -> int:
    """A port free on every local address (a test's store may listen on any of them)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def stores() -> Iterator[list[C10dStore]]:
    opened: list[C10dStore] = []
    yield opened
    for store in reversed(opened):  # clients first, the host last
        store.close()


def open_store(
    stores: list[C10dStore], host: str, port: int, is_host: bool | None, timeout_s: float = 5
) -> C10dStore:
    store = C10dStore.open(host, port, is_host=is_host, timeout_s=timeout_s, run_id="job")
    stores.append(store)
    return store


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.9", "::1", "[::1]"])
def test_loopback_and_localhost_are_this_machine(host: str) -> None:
    assert machine_owns(host)


def test_this_hosts_name_is_this_machine() -> None:
    assert machine_owns(socket.gethostname())


@pytest.mark.parametrize("host", ["203.0.113.9", "no-such-host.invalid"])
def test_a_foreign_or_unknown_address_is_not(host: str) -> None:
    assert not machine_owns(host)


def test_the_first_agent_to_bind_hosts_and_the_next_joins_it(stores: list[C10dStore]) -> None:
    # The case that never formed before: endpoint 127.0.0.1, agents anywhere on this machine.
    port = free_port()
    first = open_store(stores, "127.0.0.1", port, None)
    second = open_store(stores, "127.0.0.1", port, None)
    assert first.hosting and not second.hosting
    # SET has no reply (as in torch): a read on the same connection orders it before the
    # other connection's reads.
    first.set("k", "v")
    assert first.get("k") == "v"
    assert second.get("k") == "v" and second.get("absent") is None
    assert second.multi_get(["k", "absent"]) == ["v", None]
    assert second.add("n", 2) == 2 and first.add("n", 1) == 3
    assert second.compare_set("c", None, "a") == "a" and first.compare_set("c", "a", "b") == "b"
    second.multi_set([("m1", "1"), ("m2", "2")])
    assert second.get("m2") == "2"
    assert first.clone().multi_get(["m1", "m2"]) == ["1", "2"]


def test_is_host_0_never_hosts(stores: list[C10dStore]) -> None:
    port = free_port()
    with pytest.raises(RendezvousConnectionError) as err:
        open_store(stores, "127.0.0.1", port, False, timeout_s=0.5)
    text = str(err.value)
    assert "\n" not in text and f"127.0.0.1:{port}" in text
    assert "Connection refused" in text and "is_host=1" in text


def test_an_explicit_host_on_a_taken_port_is_one_line(stores: list[C10dStore]) -> None:
    port = free_port()
    open_store(stores, "127.0.0.1", port, True)
    with pytest.raises(RendezvousConnectionError) as err:
        open_store(stores, "127.0.0.1", port, True)
    text = str(err.value)
    assert "\n" not in text
    assert f"cannot host the rendezvous store on port {port}: Address already in use" in text
    assert "pick another --rdzv-endpoint port" in text


def test_torchs_client_reaches_the_hosted_store(stores: list[C10dStore]) -> None:
    dist = pytest.importorskip("torch.distributed")
    from datetime import timedelta

    port = free_port()
    ours = open_store(stores, "127.0.0.2", port, True)
    ours.set("k", "v")
    theirs = dist.TCPStore("127.0.0.2", port, is_master=False, timeout=timedelta(seconds=5))
    assert theirs.get("k") == b"v"


# -- a multi-node job with torch hidden from every agent ---------------------------------------

HIDE_TORCH = 'raise ImportError("torch is hidden from this test (the agent must not need it)")\n'

WORKER = r"""
import json, os, sys
try:
    import torch  # noqa: F401
    hidden = False
except ImportError:
    hidden = True
keys = ("RANK", "WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")
record = {k: os.environ[k] for k in keys}
record["torch_hidden"] = hidden
with open(sys.argv[1], "a") as out:
    out.write(json.dumps(record) + "\n")
"""


def test_a_multi_node_job_forms_with_torch_hidden(procs: Procs, tmp_path: Path) -> None:
    """Two agents at 127.0.0.2 and 127.0.0.3, endpoint 127.0.0.1 (no agent's --local-addr):
    both may host by torchrun's rule; whichever binds first does, and the round forms."""
    shim = tmp_path / "hide" / "torch"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(HIDE_TORCH)
    script, out = tmp_path / "worker.py", tmp_path / "starts.jsonl"
    script.write_text(WORKER)
    env = clean_env()
    env["PYTHONPATH"] = f"{shim.parent}:{env['PYTHONPATH']}"
    endpoint = f"127.0.0.1:{free_port()}"
    agents = []
    for addr in ("127.0.0.2", "127.0.0.3"):
        args = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d"]
        args += ["--rdzv-endpoint", endpoint, "--rdzv-id", f"hidden-{tmp_path.name[:20]}"]
        args += ["--local-addr", addr, "--log-dir", str(tmp_path / f"logs-{addr}")]
        agents.append(procs.launcher(*args, str(script), str(out), env=env))
    started = time.monotonic()
    errors = []
    for agent in agents:
        _, err = agent.communicate(timeout=60)
        errors.append(err)
        assert agent.returncode == 0, err
    assert time.monotonic() - started < 30
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(int(r["RANK"]) for r in records) == [0, 1]
    assert all(r["WORLD_SIZE"] == "2" and r["torch_hidden"] for r in records)
    assert len({(r["MASTER_ADDR"], r["MASTER_PORT"]) for r in records}) == 1
    assert not any("Traceback" in err or "socket.cpp" in err for err in errors), errors


def test_the_hidden_torch_shim_really_hides_it(tmp_path: Path) -> None:
    shim = tmp_path / "torch"
    shim.mkdir()
    (shim / "__init__.py").write_text(HIDE_TORCH)
    env = clean_env(PYTHONPATH=str(tmp_path))
    argv = [sys.executable, "-c", "import torch.distributed"]
    probe = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert probe.returncode == 1 and "torch is hidden" in probe.stderr
