"""Our standard-library TCPStore client against torch 2.13's own server (what a torchrun agent
hosts) and against ours, and torch's client against ours, for every operation the c10d
rendezvous uses, including a connection that breaks (the store host restarts) in between.

torch's server runs in a subprocess where a test must kill it; in-process otherwise (its
thread is C++, so our blocking client in this process does not starve it).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from launcher.tcpstore.client import StoreClient, StoreConnectionError, StoreTimeoutError
from launcher.tcpstore.server import StoreServer
from tests.conftest import clean_env, wait_until

dist = pytest.importorskip("torch.distributed")

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


def torch_server() -> Any:
    return dist.TCPStore(
        HOST,
        0,
        is_master=True,
        wait_for_workers=False,
        multi_tenant=True,
        timeout=timedelta(seconds=10),
    )


@pytest.fixture(params=["ours", "torch"])
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    """A server of each kind, in this process."""
    if request.param == "ours":
        with StoreServer(host=HOST) as server:
            yield server.port
    else:
        master = torch_server()
        yield int(master.port)
        del master


def test_every_rendezvous_operation(port: int) -> None:
    c = StoreClient(HOST, port, timeout_s=10)
    c.set("k", "v")
    assert c.get("k") == b"v"
    assert c.get_if_present("k") == b"v"
    assert c.get_if_present("absent") is None
    assert not c.check(["absent"])  # a look that does not create it (torch's GET would)
    assert c.add("n", 5) == 5
    assert c.add("n", -7) == -2
    assert c.compare_set("c", "", "a") == b"a"  # absent + empty expectation: created
    assert c.compare_set("c", "x", "b") == b"a"  # mismatch: the current value, unchanged
    assert c.compare_set("c", "a", "b") == b"b"
    assert c.compare_set("absent2", "x", "y") == b"x"  # torch echoes the expectation
    assert not c.check(["absent2"])
    c.multi_set(["m1", "m2"], ["v1", b"\x00\xff"])
    assert c.multi_get(["m1", "m2", "k"]) == [b"v1", b"\x00\xff", b"v"]
    assert c.multi_get_if_present(["m1", "nope", "m2", "nope2"]) == [b"v1", None, b"\x00\xff", None]
    assert c.multi_get_if_present(["nope"]) == [None]
    assert c.check(["k", "m1"]) and not c.check(["k", "nope"])
    c.append("ap", "he")
    c.append("ap", "llo")
    assert c.get("ap") == b"hello"
    before = c.num_keys()
    assert c.delete_key("ap") and not c.delete_key("ap")
    assert c.num_keys() == before - 1
    c.set("big", b"x" * (4 * 1024 * 1024))  # larger than any socket buffer
    assert c.get("big") == b"x" * (4 * 1024 * 1024)
    c.wait(["k", "m1"])  # present: at once


def test_keys_are_shared_with_torchs_client(port: int) -> None:
    ours = StoreClient(HOST, port, timeout_s=10)
    theirs = dist.TCPStore(HOST, port, is_master=False, timeout=timedelta(seconds=10))
    ours.set("from-ours", "1")
    theirs.set("from-torch", b"\x00")
    assert theirs.get("from-ours") == b"1"
    assert ours.get("from-torch") == b"\x00"  # blocks until it lands: SET has no reply
    assert theirs.add("count", 1) == 1 and ours.add("count", 1) == 2
    assert theirs.compare_set("cas", "", "t") == b"t" and ours.compare_set("cas", "t", "o") == b"o"
    assert theirs.get("cas") == b"o"


def test_wait_times_out_then_the_connection_is_still_in_step(port: int) -> None:
    c = StoreClient(HOST, port, timeout_s=10)
    started = time.monotonic()
    with pytest.raises(StoreTimeoutError, match=rf"wait timeout after 0.2 s for never .*:{port}"):
        c.wait(["never"], timeout_s=0.2)
    assert 0.15 < time.monotonic() - started < 5
    c.set("after", "ok")  # a stray reply left unread would be taken as this one's
    assert c.get("after") == b"ok" and c.add("after-n", 3) == 3


def test_a_blocked_wait_is_released_by_another_clients_set(port: int) -> None:
    waiter, writer = StoreClient(HOST, port, timeout_s=10), StoreClient(HOST, port, timeout_s=10)
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.append(waiter.get("later")))
    thread.start()
    time.sleep(0.2)
    writer.set("later", "now")
    thread.join(10)
    assert got == [b"now"]


def test_nothing_listening_is_one_line_naming_the_endpoint() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        dead = sock.getsockname()[1]  # bound, never listening: connections are refused
        started = time.monotonic()
        with pytest.raises(StoreConnectionError) as err:
            StoreClient(HOST, dead, timeout_s=1.0)
    assert 0.9 < time.monotonic() - started < 4  # retried for the whole timeout
    assert str(err.value) == (
        f"cannot connect within 1 s: Connection refused (TCPStore at {HOST}:{dead})"
    )


def test_a_server_that_is_not_a_tcpstore_fails_at_once() -> None:
    with socket.create_server((HOST, 0)) as listener:
        port = listener.getsockname()[1]

        def answer_junk() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(64)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                time.sleep(0.5)

        threading.Thread(target=answer_junk, daemon=True).start()
        started = time.monotonic()
        with pytest.raises(StoreConnectionError, match="not a TCPStore server"):
            StoreClient(HOST, port, timeout_s=10)
        assert time.monotonic() - started < 5  # not retried until the timeout


# -- the store host restarts: connections break -----------------------------------------------

TORCH_HOST = r"""
import sys, time
from datetime import timedelta
import torch.distributed as dist
s = dist.TCPStore("127.0.0.1", int(sys.argv[1]), is_master=True, wait_for_workers=False,
                  multi_tenant=True, timeout=timedelta(seconds=10))
print(s.port, flush=True)
time.sleep(600)
"""


class Host:
    """A store server on a fixed port that a test can kill and start again."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.server: StoreServer | None = None

    def start(self) -> None:
        if self.kind == "ours":
            self.server = StoreServer(host=HOST, port=self.port)
            self.server.start()
            self.port = self.server.port
            return
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TORCH_HOST, str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=clean_env(),
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def kill(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(params=["ours", "torch"])
def host(request: pytest.FixtureRequest) -> Iterator[Host]:
    made = Host(request.param)
    made.start()
    yield made
    made.kill()


def fails_then_reconnects(op: Callable[[], object], host: Host) -> None:
    host.kill()
    for _ in range(2):
        # Broken, then still down: one line naming the endpoint, after at most
        # reconnect_timeout_s; never replayed, never a C++ trace.
        started = time.monotonic()
        with pytest.raises(StoreConnectionError) as err:
            op()
        assert time.monotonic() - started < 3
        assert f"{HOST}:{host.port}" in str(err.value) and "\n" not in str(err.value)
    host.start()  # same port, empty store
    assert wait_until(lambda: _answers(op), 10, 0.1)


def _answers(op: Callable[[], object]) -> bool:
    try:
        op()
    except StoreConnectionError:
        return False
    return True


def test_our_client_reconnects_after_the_host_restarts(host: Host) -> None:
    c = StoreClient(HOST, host.port, timeout_s=10, reconnect_timeout_s=0.5)
    c.set("k", "v")
    fails_then_reconnects(lambda: c.add("n", 1), host)
    assert c.get_if_present("k") is None  # a new store: the old keys are gone
    assert c.add("n", 1) in (1, 2)  # 2 if the probe's add landed
    for op in (
        lambda: c.get_if_present("k"),
        lambda: c.multi_get_if_present(["a", "b"]),
        lambda: c.set("k", "v"),
        lambda: c.multi_set(["a"], ["b"]),
        lambda: c.compare_set("k", "v", "w"),
        lambda: c.check(["k"]),
        lambda: (c.set("w", "1"), c.wait(["w"], timeout_s=1)),
    ):
        fails_then_reconnects(op, host)


def test_torchs_client_against_our_restarted_server_never_reconnects() -> None:
    # The oddity our client avoids: a torch client whose connection broke stays broken, so
    # the c10d backend used to build a new TCPStore after every failure. Our server serves
    # the fresh one as torch's own would.
    host = Host("ours")
    host.start()
    try:
        client = dist.TCPStore(HOST, host.port, is_master=False, timeout=timedelta(seconds=5))
        client.set("k", "v")
        host.kill()
        host.start()
        for _ in range(2):
            with pytest.raises((RuntimeError, dist.DistNetworkError)):
                client.add("n", 1)
        fresh = dist.TCPStore(HOST, host.port, is_master=False, timeout=timedelta(seconds=5))
        assert fresh.add("n", 1) == 1 and not fresh.check(["k"])
    finally:
        host.kill()
