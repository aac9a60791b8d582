"""chaos.proxy's cost and its toxics' accuracy, against a direct connection, in one run.

    python3 bench/proxy.py                    # 512 MiB per throughput rep, 3 reps
    python3 bench/proxy.py --mib 128 --reps 1 --pings 1000

Three processes, so no GIL is shared: this bench (the client), a peer (`--peer`: per
connection an echo, or a sink that reads N bytes and answers "ok"), and the proxy
(`python3 -m chaos proxy serve --port 0`), whose proxy forwards to the peer. Rows:
- throughput: N bytes sent then "ok" received, MB/s (10^6), best of the reps, direct and
  through the proxy with no toxic (target >= 300 MB/s);
- round trip of a 64-byte echo, p50 and p99 over --pings, direct and through the proxy,
  interleaved in blocks; "added" is proxy minus direct (target: added p50 < 0.2 ms);
- latency toxic accuracy: configured vs measured added round trip (median of 20);
- bandwidth toxic accuracy (upstream): configured rate vs N/elapsed of a one-second upload.
Exit 1 when a target is missed, 2 when the bench itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chaos.proxy.client import ProxyClient  # noqa: E402

THROUGHPUT_TARGET_MB_S = 300.0
ADDED_P50_TARGET_MS = 0.2
BLOCK = 1024 * 1024


# The peer: a separate process.
def _serve_one(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = conn.recv(1)
        if mode == b"E":
            while data := conn.recv(65536):
                conn.sendall(data)
        elif mode == b"S":
            (left,) = struct.unpack("!Q", _exactly(conn, 8))
            buffer = memoryview(bytearray(BLOCK))
            while left > 0:
                got = conn.recv_into(buffer, min(left, BLOCK))
                if not got:
                    return
                left -= got
            conn.sendall(b"ok")


def peer() -> int:
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"peer closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


# The client side.
def _connect(port: int, mode: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(mode)
    return sock


def upload_s(port: int, size: int) -> float:
    payload = memoryview(bytes(BLOCK))
    with _connect(port, b"S") as sock:
        start = time.perf_counter()
        sock.sendall(struct.pack("!Q", size))
        left = size
        while left > 0:
            sock.sendall(payload[: min(left, BLOCK)])
            left -= min(left, BLOCK)
        if _exactly(sock, 2) != b"ok":
            raise RuntimeError("sink did not answer ok")
        return time.perf_counter() - start


def round_trips_s(sock: socket.socket, n: int) -> list[float]:
    message = b"m" * 64
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        sock.sendall(message)
        _exactly(sock, 64)
        samples.append(time.perf_counter() - start)
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def process(argv: list[str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A child and the first line it printed (stdout, or stderr for the proxy)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    peer = "--peer" in argv
    pipe, rest = subprocess.PIPE, subprocess.DEVNULL
    proc = subprocess.Popen(
        argv, env=env, stdout=pipe if peer else rest, stderr=rest if peer else pipe, text=True
    )
    try:
        stream = proc.stdout if peer else proc.stderr
        assert stream is not None
        line = stream.readline().strip()
        if not line:
            raise RuntimeError(f"{argv} printed nothing (exit {proc.wait(5)})")
        yield proc, line
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(args: argparse.Namespace) -> int:
    peer_argv = [sys.executable, __file__, "--peer"]
    proxy_argv = [sys.executable, "-m", "chaos", "proxy", "serve", "--port", "0", "--seed", "1"]
    with process(peer_argv) as (_, peer_port), process(proxy_argv) as (_, banner):
        api = ProxyClient(banner.split()[-1])
        direct = int(peer_port)
        listen = api.create_proxy("bench", upstream=f"127.0.0.1:{direct}")["listen"]
        proxied = int(listen.rpartition(":")[2])
        size = args.mib * BLOCK

        upload_s(direct, 16 * BLOCK)  # warm-up
        upload_s(proxied, 16 * BLOCK)
        rates: dict[int, list[float]] = {direct: [], proxied: []}
        for _ in range(args.reps):
            for port in (direct, proxied):
                rates[port].append(size / upload_s(port, size) / 1e6)
        through = {port: max(values) for port, values in rates.items()}

        pings: dict[int, list[float]] = {direct: [], proxied: []}
        with _connect(direct, b"E") as d_sock, _connect(proxied, b"E") as p_sock:
            round_trips_s(d_sock, 200)
            round_trips_s(p_sock, 200)
            for _ in range(max(1, args.pings // 500)):
                pings[direct] += round_trips_s(d_sock, 500)
                pings[proxied] += round_trips_s(p_sock, 500)
        p50 = {port: percentile(s, 0.5) * 1e3 for port, s in pings.items()}
        p99 = {port: percentile(s, 0.99) * 1e3 for port, s in pings.items()}
        added50, added99 = p50[proxied] - p50[direct], p99[proxied] - p99[direct]

        latency_rows = []
        with _connect(proxied, b"E") as sock:
            base = statistics.median(round_trips_s(sock, 20))
            for latency_ms in (10, 50, 100):
                api.add_toxic("bench", "latency", attributes={"latency": latency_ms})
                added = (statistics.median(round_trips_s(sock, 20)) - base) * 1e3
                api.remove_toxic("bench", "latency_downstream")
                latency_rows.append(("latency", latency_ms, added, "ms"))

        bandwidth_rows = []
        for rate in (1000, 10_000, 50_000):
            api.add_toxic("bench", "bandwidth", stream="upstream", attributes={"rate": rate})
            measured = rate * 1000 / upload_s(proxied, rate * 1000) / 1000
            api.remove_toxic("bench", "bandwidth_upstream")
            bandwidth_rows.append(("bandwidth", rate, measured, "KB/s"))

    ok_through = through[proxied] >= THROUGHPUT_TARGET_MB_S
    ok_latency = added50 < ADDED_P50_TARGET_MS
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, loopback")
    print(f"{'metric':34s} {'direct':>10s} {'proxy':>10s} {'target':>10s} {'result':>7s}")
    print(
        f"{f'throughput MB/s ({args.mib} MiB, best of {args.reps})':34s} "
        f"{through[direct]:10.0f} {through[proxied]:10.0f} {'>= 300':>10s} "
        f"{'PASS' if ok_through else 'FAIL':>7s}"
    )
    print(f"{'round trip p50 ms (64 B)':34s} {p50[direct]:10.3f} {p50[proxied]:10.3f}")
    print(f"{'round trip p99 ms (64 B)':34s} {p99[direct]:10.3f} {p99[proxied]:10.3f}")
    print(
        f"{'added p50 ms':34s} {'':10s} {added50:10.3f} {'< 0.2':>10s} "
        f"{'PASS' if ok_latency else 'FAIL':>7s}"
    )
    print(f"{'added p99 ms':34s} {'':10s} {added99:10.3f}")
    print()
    print(f"{'toxic':12s} {'unit':>5s} {'configured':>11s} {'measured':>11s} {'error':>8s}")
    for kind, configured, measured_value, unit in latency_rows + bandwidth_rows:
        error = (measured_value - configured) / configured * 100
        print(f"{kind:12s} {unit:>5s} {configured:11d} {measured_value:11.1f} {error:+7.1f}%")
    return 0 if ok_through and ok_latency else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="MiB per throughput run")
    parser.add_argument("--reps", type=int, default=3, help="throughput runs per path")
    parser.add_argument("--pings", type=int, default=5000, help="round trips per path")
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        return peer()
    try:
        return measure(args)
    except (OSError, RuntimeError, EOFError) as exc:
        print(f"bench/proxy.py: failed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
