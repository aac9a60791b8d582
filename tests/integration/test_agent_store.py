"""The standard-library agent store against REAL torch 2.13 TCPStore clients.

In-process clients exercise the ops whose Python bindings release the GIL while blocked (our
server thread needs it); ``list_keys``, ``barrier`` and the queue ops hold it, so they run in a
subprocess, in a differential test that runs the same script against torch's own server.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from launcher.tcpstore.protocol import VALIDATION_MAGIC, QueryType, Request
from launcher.tcpstore.protocol import encode_request as enc
from launcher.tcpstore.server import StoreServer

dist = pytest.importorskip("torch.distributed")

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
TIMEOUT = timedelta(seconds=20)
PROC_TIMEOUT_S = 120.0


@pytest.fixture
def server() -> Iterator[StoreServer]:
    srv = StoreServer(host=HOST)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Every process a test spawns; whatever is still alive at teardown is killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def client(port: int, timeout: timedelta = TIMEOUT) -> Any:
    return dist.TCPStore(HOST, port, is_master=False, timeout=timeout)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "TORCHELASTIC_"))}
    env["OMP_NUM_THREADS"] = "1"  # four torch processes share two cores
    env.update(extra)
    return env


def run_python(procs: list[subprocess.Popen[str]], script: Path, *args: str) -> str:
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    out, err = proc.communicate(timeout=PROC_TIMEOUT_S)
    assert proc.returncode == 0, err[-3000:]
    return out


def test_basic_ops_with_a_real_client(server: StoreServer) -> None:
    store = client(server.port)
    store.set("k", "v")
    assert store.get("k") == b"v"
    assert store.add("n", 5) == 5
    assert store.add("n", -7) == -2
    assert store.get("n") == b"-2"  # counters are decimal text, as in torch
    assert store.compare_set("c", "", "a") == b"a"  # missing key + empty expectation: created
    assert store.compare_set("c", "x", "b") == b"a"  # mismatch: current value, unchanged
    assert store.compare_set("c", "a", "b") == b"b"
    assert store.compare_set("missing", "x", "y") == b"x"  # torch echoes the expectation
    assert not store.check(["missing"])
    store.multi_set(["m1", "m2"], ["v1", b"\x00\xff"])
    assert store.multi_get(["m1", "m2", "k"]) == [b"v1", b"\x00\xff", b"v"]
    assert store.check(["k", "m1"])
    assert not store.check(["k", "nope"])
    store.append("ap", "he")
    store.append("ap", "llo")
    assert store.get("ap") == b"hello"
    keys_before = store.num_keys()
    assert store.delete_key("ap")
    assert not store.delete_key("ap")
    assert store.num_keys() == keys_before - 1
    store.set("big", b"x" * (4 * 1024 * 1024))  # larger than any socket buffer
    assert store.get("big") == b"x" * (4 * 1024 * 1024)
    store.wait(["k", "m1"])  # present: returns at once
    assert server.stats().waiting_clients == 0


def test_wait_timeout_raises_and_the_connection_stays_usable(server: StoreServer) -> None:
    store = client(server.port)
    started = time.monotonic()
    with pytest.raises(dist.DistStoreError, match="wait timeout"):
        store.wait(["never"], timedelta(milliseconds=200))
    assert 0.15 < time.monotonic() - started < 5.0
    # The client sent CANCEL_WAIT and read our WAIT_CANCELED; a stray byte would corrupt this.
    assert server.stats().waiting_clients == 0
    store.set("after", "ok")
    assert store.get("after") == b"ok"
    assert store.add("after-n", 1) == 1


def test_blocking_get_is_released_by_a_set_from_another_client(server: StoreServer) -> None:
    reader, writer = client(server.port), client(server.port)
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.append(reader.get("late")), daemon=True)
    thread.start()
    assert wait_until(lambda: server.stats().waiting_clients == 1), "get never blocked"
    assert not got
    writer.set("late", "here")
    thread.join(10)
    assert got == [b"here"]


def test_64_concurrent_clients(server: StoreServer) -> None:
    n = 64
    results: list[bytes] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def rank() -> None:
        try:
            store = client(server.port)
            if store.add("arrived", 1) == n:  # the last one to arrive releases everyone
                store.set("go", "go")
            value = store.get("go")  # blocks until then
            with lock:
                results.append(value)
        except BaseException as exc:  # reported by the assertion below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=rank, daemon=True) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    assert results == [b"go"] * n
    assert client(server.port).get("arrived") == str(n).encode()


def raw_connection(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=10)
    return sock


def test_unknown_command_closes_only_that_connection(
    server: StoreServer, caplog: pytest.LogCaptureFixture
) -> None:
    good = client(server.port)
    good.set("k", "v")
    with caplog.at_level(logging.WARNING), raw_connection(server.port) as bad:
        bad.sendall(enc(Request(op=QueryType.VALIDATE, number=VALIDATION_MAGIC)) + b"\xee")
        assert bad.recv(1) == b""  # closed by the server
    assert any("unknown command" in r.getMessage() for r in caplog.records)
    assert good.get("k") == b"v"
    assert client(server.port).get("k") == b"v"


@pytest.mark.parametrize(
    "first",
    [enc(Request(op=QueryType.PING, number=1)), enc(Request(op=QueryType.VALIDATE, number=7))],
    ids=["no-validate", "bad-magic"],
)
def test_unvalidated_connection_is_closed(server: StoreServer, first: bytes) -> None:
    with raw_connection(server.port) as sock:
        sock.sendall(first)
        assert sock.recv(4) == b""


def test_raw_ping_round_trips_the_nonce(server: StoreServer) -> None:
    with raw_connection(server.port) as sock:
        validate = enc(Request(op=QueryType.VALIDATE, number=VALIDATION_MAGIC))
        sock.sendall(validate + enc(Request(op=QueryType.PING, number=0xDEADBEEF)))
        assert sock.recv(4) == (0xDEADBEEF).to_bytes(4, "little")


def test_default_binding_serves_ipv4_loopback() -> None:
    with StoreServer() as srv:  # all interfaces, dual-stack where the host has IPv6
        store = client(srv.port)
        store.set("k", "v")
        assert store.get("k") == b"v"


def test_prebound_socket_is_adopted_and_stop_closes_clients() -> None:
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]
    srv = StoreServer(listener)
    srv.start()
    try:
        assert srv.port == port
        store = client(port, timeout=timedelta(seconds=2))
        store.set("k", "v")
        assert srv.stats().clients == 1
    finally:
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 5.0
    with pytest.raises(dist.DistError):
        store.get("k")
    with pytest.raises(OSError):
        socket.create_connection((HOST, port), timeout=2).close()


def test_reset_drops_keys_and_connections(server: StoreServer) -> None:
    old = client(server.port)
    old.set("stale", "1")
    server.reset()
    assert server.stats().keys == 0
    with pytest.raises(dist.DistError):  # a straggler of the old group cannot write on
        old.set("stale", "2")
        old.get("stale")
    fresh = client(server.port)
    assert not fresh.check(["stale"])


def test_constructor_rejects_socket_and_address() -> None:
    with socket.create_server((HOST, 0)) as listener, pytest.raises(ValueError):
        StoreServer(listener, host=HOST)


OPS_SCRIPT = r"""
import json, sys
from datetime import timedelta
import torch.distributed as dist

T = timedelta(seconds=20)
if sys.argv[1] == "torch":
    master = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=T)
    port = master.port
else:
    port = int(sys.argv[1])
s = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=T)
out = []

def rec(name, fn, type_only=False):
    try:
        value = repr(fn())
    except Exception as exc:
        first = "" if type_only else str(exc).splitlines()[0]
        value = f"raised {type(exc).__name__} {first}"
    out.append([name, value])

rec("set", lambda: s.set("k", "v"))
rec("get", lambda: s.get("k"))
rec("add", lambda: s.add("n", 5))
rec("add-neg", lambda: s.add("n", -7))
rec("cas-create", lambda: s.compare_set("c", "", "a"))
rec("cas-mismatch", lambda: s.compare_set("c", "x", "b"))
rec("cas-match", lambda: s.compare_set("c", "a", "b"))
rec("cas-missing", lambda: s.compare_set("c2", "x", "y"))
rec("check-c2", lambda: s.check(["c2"]))
rec("multi_set", lambda: s.multi_set(["m1", "m2"], ["v1", b"\x00\xff"]))
rec("multi_get", lambda: s.multi_get(["m1", "m2", "k"]))
rec("check", lambda: s.check(["k", "m1"]))
rec("check-missing", lambda: s.check(["k", "nope"]))
rec("append1", lambda: s.append("ap", "he"))
rec("append2", lambda: s.append("ap", "llo"))
rec("get-ap", lambda: s.get("ap"))
rec("delete", lambda: s.delete_key("ap"))
rec("delete-again", lambda: s.delete_key("ap"))
rec("num_keys", lambda: s.num_keys())
rec("list_keys", lambda: sorted(s.list_keys()))
rec("push1", lambda: s.queue_push("q", "i1"))
rec("push2", lambda: s.queue_push("q", b"i2"))
rec("qlen", lambda: s.queue_len("q"))
rec("check-queue", lambda: s.check(["q"]))
rec("pop", lambda: s.queue_pop("q"))
rec("pop-nonblock", lambda: s.queue_pop("q", block=False))
rec("pop-empty", lambda: s.queue_pop("q", block=False))
rec("qlen-empty", lambda: s.queue_len("q"))
rec("qlen-unknown", lambda: s.queue_len("nothing"))
rec("barrier-1", lambda: s.barrier("bar", 1))
rec("barrier-timeout", lambda: s.barrier("bar2", 2, timedelta(milliseconds=200)))
rec("wait-timeout", lambda: s.wait(["never"], timedelta(milliseconds=200)))
rec("get-after-timeout", lambda: s.get("k"))
rec("set-empty", lambda: s.set("e", b""))
rec("get-empty", lambda: s.get("e"))
rec("set-binary", lambda: s.set("bin", bytes(range(256))))
rec("get-binary", lambda: s.get("bin"))
rec("num_keys-end", lambda: s.num_keys())
rec("list_keys-end", lambda: sorted(s.list_keys()))
bad = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=T)
bad.set("txt", "abc")
rec("add-on-text", lambda: bad.add("txt", 1), type_only=True)
rec("others-unaffected", lambda: s.get("txt"))
print(json.dumps(out))
"""


def test_same_answers_as_torchs_own_server(
    server: StoreServer, procs: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    script = tmp_path / "ops.py"
    script.write_text(OPS_SCRIPT)
    ours = json.loads(run_python(procs, script, str(server.port)))
    theirs = json.loads(run_python(procs, script, "torch"))
    assert ours == theirs
    assert dict(ours)["list_keys"] == repr(["c", "k", "m1", "m2", "n"])  # the script ran
    assert dict(ours)["pop-empty"].startswith("raised QueueEmptyError")


WORKER_SCRIPT = r"""
import json
from datetime import timedelta
import torch
import torch.distributed as dist

dist.init_process_group("gloo", timeout=timedelta(seconds=60))
rank = dist.get_rank()
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
dist.barrier()
print(json.dumps({"rank": rank, "world": dist.get_world_size(), "sum": value.item()}))
dist.destroy_process_group()
"""


def run_group(
    procs: list[subprocess.Popen[str]], script: Path, port: int, attempt: int, world: int
) -> list[dict[str, Any]]:
    group = []
    for rank in range(world):
        env = child_env(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR=HOST,
            MASTER_PORT=str(port),
            TORCHELASTIC_USE_AGENT_STORE="True",
            TORCHELASTIC_RESTART_COUNT=str(attempt),
        )
        proc = subprocess.Popen(
            [sys.executable, str(script)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        group.append(proc)
    deadline = time.monotonic() + PROC_TIMEOUT_S
    results = []
    for proc in group:
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert proc.returncode == 0, f"attempt {attempt}: {err[-3000:]}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_gloo_workers_init_against_the_agent_store_across_two_attempts(
    server: StoreServer, procs: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    world = 4
    expected_sum = float(sum(range(1, world + 1)))
    for attempt in (0, 1):
        if attempt:
            # torch 2.13 reuses gloo's keys verbatim; without this the new ranks would read
            # the dead ranks' addresses (observed with torch's own server as well).
            server.reset()
        results = run_group(procs, script, server.port, attempt, world)
        assert sorted(r["rank"] for r in results) == list(range(world))
        assert all(r["world"] == world and r["sum"] == expected_sum for r in results)
