"""The store server on loopback against clients that misbehave, while real ones work:
garbage, lying length prefixes, truncated and stalled frames (slow-loris), unread replies,
a flood of 10k garbage connections (the server's RSS before and after), the memory budget.

The real clients are a torch 2.13 ``TCPStore`` and the project's ``StoreClient``, both at once.
The pure-core counterpart (hypothesis over the framer and the state) is
tests/unit/test_tcpstore_fuzz.py.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from launcher.tcpstore.client import StoreClient
from launcher.tcpstore.drops import DroppedClient
from launcher.tcpstore.limits import KiB, Limits, MiB
from launcher.tcpstore.protocol import VALIDATION_MAGIC, QueryType, Request, encode_request
from launcher.tcpstore.server import StoreServer
from tests.conftest import clean_env, wait_until

dist = pytest.importorskip("torch.distributed")

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
Q = QueryType
VALIDATE = encode_request(Request(op=Q.VALIDATE, number=VALIDATION_MAGIC))
# Short timeouts so a stalled client is dropped within the test.
QUICK = Limits(handshake_timeout_s=0.5, frame_idle_timeout_s=0.5)


class Served:
    def __init__(self, limits: Limits) -> None:
        self.drops: list[DroppedClient] = []
        self.server = StoreServer(host=HOST, limits=limits, on_drop=self.drops.append)
        self.port = self.server.port


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    served = Served(getattr(request, "param", QUICK))
    served.server.start()
    yield served
    served.server.stop()


def raw(port: int, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=5)
    if first:
        sock.sendall(first)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Waits (up to the socket's timeout) for the server to close this connection."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def ours(port: int) -> StoreClient:
    return StoreClient(HOST, port, timeout_s=10)


def theirs(port: int) -> Any:
    return dist.TCPStore(HOST, port, is_master=False, timeout=timedelta(seconds=10))


def garbage(rng: random.Random) -> bytes:
    """One misbehaving client's bytes: noise, a lying length, or a cut-off handshake (the
    only kind the server need not drop: the client hangs up first)."""
    kind = rng.randrange(5)
    if kind == 0:
        return bytes([rng.randrange(1, 256)]) + rng.randbytes(rng.randrange(64))
    if kind == 1:  # a key of 2**63 bytes
        return VALIDATE + bytes([Q.GET]) + struct.pack("<Q", 2**63)
    if kind == 2:  # a count of 2**62 keys
        return VALIDATE + bytes([Q.MULTI_SET]) + struct.pack("<Q", 2**62)
    if kind == 3:  # an unknown command after a good handshake
        return VALIDATE + bytes([rng.randrange(19, 256)])
    return VALIDATE[:3]  # a truncated handshake, then gone


def hammer(stop: threading.Event, work: Callable[[int], None], log: list[float]) -> None:
    """Runs `work` until told to stop, recording each call's latency; an error propagates
    to the test through `log` as a negative entry."""
    i = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            work(i)
        except Exception:
            log.append(-1.0)
            raise
        log.append(time.monotonic() - started)
        i += 1


def test_real_clients_are_served_while_garbage_pours_in(served: Served) -> None:
    torch_store, our_store = theirs(served.port), ours(served.port)

    def torch_work(i: int) -> None:
        torch_store.set(f"t{i}", str(i))
        assert torch_store.get(f"t{i}") == str(i).encode()
        assert torch_store.add("tn", 1) == i + 1

    def our_work(i: int) -> None:
        our_store.set(f"o{i}", str(i))
        assert our_store.get(f"o{i}") == str(i).encode()
        assert our_store.add("on", 1) == i + 1

    stop = threading.Event()
    logs: list[list[float]] = [[], []]
    threads = [
        threading.Thread(target=hammer, args=(stop, work, log), daemon=True)
        for work, log in zip((torch_work, our_work), logs, strict=True)
    ]
    for thread in threads:
        thread.start()
    rng = random.Random(7)
    loris = [raw(served.port, VALIDATE + bytes([Q.SET]) + struct.pack("<Q", 5) + b"ke")]
    try:
        for _ in range(300):
            with raw(served.port, garbage(rng)):
                pass
        loris.append(raw(served.port))  # never says a word
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    for log in logs:
        assert log and min(log) >= 0, "a real client's operation failed"
        assert max(log) < 2.0, f"a real client waited {max(log):.2f} s"
    for sock in loris:  # the stalled ones are dropped after their timeouts
        assert closed_by_server(sock)
        sock.close()
    stats = served.server.stats()
    assert stats.dropped >= 200 and stats.clients == 2
    assert served.drops and len(served.drops) <= QUICK.drop_reports_per_window + 1
    reasons = " | ".join(d.reason for d in served.drops)
    assert "VALIDATE" in reasons or "exceeds" in reasons or "unknown command" in reasons


def test_a_slow_loris_delays_nobody_and_is_dropped_once_idle(served: Served) -> None:
    loris = raw(served.port, VALIDATE + bytes([Q.SET]) + struct.pack("<Q", 100) + b"half")
    store = theirs(served.port)
    started = time.monotonic()
    store.set("k", "v")
    assert store.get("k") == b"v"
    assert time.monotonic() - started < 0.5
    assert closed_by_server(loris)
    loris.close()
    assert wait_until(lambda: served.drops, timeout_s=5)
    assert "unfinished" in served.drops[0].reason
    assert store.get("k") == b"v"  # the idle (between requests) client was left alone


def test_a_connection_that_never_validates_is_dropped(served: Served) -> None:
    with raw(served.port) as silent:
        assert closed_by_server(silent)
    assert wait_until(lambda: served.drops, timeout_s=5)
    assert "no VALIDATE within 0.5 s" in served.drops[0].reason


TIGHT = Limits(
    max_value_len=256 * KiB, max_request_len=300 * KiB, max_reply_len=300 * KiB, buffer_budget=MiB
)


@pytest.mark.parametrize("served", [TIGHT], indirect=True)
def test_over_the_budget_the_biggest_holders_are_shed(served: Served) -> None:
    # Five clients, each 250 KiB into a 256 KiB value: 1.25 MiB held, over the 1 MiB budget.
    filler = b"x" * (250 * KiB)
    hogs = []
    for i in range(5):
        hog = raw(served.port, VALIDATE + bytes([Q.SET]) + struct.pack("<Q", 1) + b"k")
        hog.sendall(struct.pack("<Q", 256 * KiB) + filler[: 200 * KiB + i * 10 * KiB])
        hogs.append(hog)
    assert wait_until(lambda: served.drops, timeout_s=5)
    assert "with the store over" in served.drops[0].reason
    assert served.server.stats().held_bytes <= 1 * MiB
    store = ours(served.port)
    store.set("k", "v")
    assert store.get("k") == b"v"
    for hog in hogs:
        hog.close()


def test_pipelined_gets_stop_being_read_until_their_replies_are(served: Served) -> None:
    store = ours(served.port)
    store.set("big", b"v" * (64 * KiB))
    sock = raw(served.port, VALIDATE)
    get = encode_request(Request(op=Q.GET, keys=(b"/big",)))
    count = 300  # 19 MiB of replies if the server ran them all at once
    sender = threading.Thread(target=sock.sendall, args=(get * count,), daemon=True)
    sender.start()
    assert wait_until(lambda: served.server.stats().held_bytes > 0, timeout_s=5)
    held = max(served.server.stats().held_bytes for _ in range(20))
    assert held < 2 * MiB  # the high-water mark, a reply and a receive's worth of requests
    reply = 8 + 64 * KiB
    received = 0
    while received < count * reply:
        chunk = sock.recv(1024 * 1024)
        assert chunk, "the server closed a client that was reading"
        received += len(chunk)
    sender.join(timeout=10)
    assert received == count * reply
    sock.close()


SERVER = r"""
import json, logging, sys
from launcher.tcpstore.server import StoreServer
logging.basicConfig(level=logging.WARNING, format="%(message)s")
srv = StoreServer(host="127.0.0.1")
srv.start()
print(srv.port, flush=True)
for line in sys.stdin:
    s = srv.stats()
    print(json.dumps({"clients": s.clients, "dropped": s.dropped}), flush=True)
srv.stop()
"""


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1])


@pytest.fixture
def server_process() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def flood(port: int, count: int, rng: random.Random) -> int:
    """`count` garbage connections; returns how many of them the server must drop (the
    others just hang up half-way through their handshake)."""
    must_drop = 0
    for _ in range(count):
        data = garbage(rng)
        must_drop += data != VALIDATE[:3]
        with socket.create_connection((HOST, port), timeout=5) as sock:
            sock.sendall(data)
    return must_drop


def test_ten_thousand_garbage_connections_leave_the_server_where_it_was(
    server_process: subprocess.Popen[str],
) -> None:
    proc = server_process
    assert proc.stdin is not None and proc.stdout is not None
    port = int(proc.stdout.readline())

    def stats() -> dict[str, int]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("?\n")
        proc.stdin.flush()
        found: dict[str, int] = json.loads(proc.stdout.readline())
        return found

    rng = random.Random(11)
    dropped = flood(port, 500, rng)  # warm up: the first allocations are not a leak
    assert wait_until(lambda: stats() == {"clients": 0, "dropped": dropped}, timeout_s=30)
    before = rss_kib(proc.pid)
    started = time.monotonic()
    dropped += flood(port, 10_000, rng)
    assert wait_until(lambda: stats() == {"clients": 0, "dropped": dropped}, timeout_s=60)
    after = rss_kib(proc.pid)
    elapsed = time.monotonic() - started
    store = ours(port)
    store.set("still", "serving")
    assert store.get("still") == b"serving"
    store.close()
    print(f"server RSS {before} KiB -> {after} KiB after 10k garbage connections ({elapsed:.1f} s)")
    # Loose: the allocator moves RSS by up to ~6 MiB either way here (the server before
    # this limit work did the same); a leak of a connection's state would be 10+ MiB.
    assert after - before < 12 * 1024
    proc.stdin.close()  # the server's signal to stop
    assert proc.wait(timeout=10) == 0
    assert proc.stderr is not None
    err = proc.stderr.read()
    reports = [line for line in err.splitlines() if "dropped client" in line]
    assert 1 <= len(reports) <= Limits().drop_reports_per_window + 1, err[-2000:]
