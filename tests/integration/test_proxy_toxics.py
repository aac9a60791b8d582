"""Each toxic's effect on real sockets through the proxy, toxics added with the real
toxiproxy-python client: timings within a few milliseconds, rates within 10 %."""

from __future__ import annotations

import socket
import statistics
import time

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.proxy import Proxy

from chaos.proxy.server import ServerHandle
from tests.proxy_peers import EchoServer, connect, recv_exactly, round_trip_s, wait_closed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]
SLACK_S = 0.008  # timers here have ~1 ms resolution; the machine is shared


@pytest.fixture
def proxy(proxy_server: ServerHandle, echo_upstream: EchoServer) -> Proxy:
    return Toxiproxy().create(upstream=echo_upstream.address, name="echo")


def median_round_trip_s(sock: socket.socket, n: int = 5) -> float:
    return statistics.median(round_trip_s(sock) for _ in range(n))


def test_latency_adds_its_delay_to_live_connections_and_leaves_with_the_toxic(
    proxy: Proxy,
) -> None:
    with connect(proxy.listen) as sock:
        base = median_round_trip_s(sock)
        proxy.add_toxic(type="latency", attributes={"latency": 40})  # an open connection
        added = median_round_trip_s(sock) - base
        assert 0.040 - 0.001 <= added <= 0.040 + SLACK_S
        proxy.add_toxic(type="latency", stream="upstream", attributes={"latency": 20})
        assert 0.060 - 0.001 <= median_round_trip_s(sock) - base <= 0.060 + SLACK_S
        proxy.destroy_toxic("latency_downstream")
        proxy.destroy_toxic("latency_upstream")
        assert median_round_trip_s(sock) < base + SLACK_S


def test_latency_jitter_stays_in_its_band(proxy: Proxy) -> None:
    proxy.add_toxic(type="latency", attributes={"latency": 30, "jitter": 10})
    with connect(proxy.listen) as sock:
        samples = [round_trip_s(sock) for _ in range(12)]
    assert all(0.020 - 0.001 <= s <= 0.040 + SLACK_S for s in samples)
    assert max(samples) - min(samples) > 0.004  # it does jitter


def test_toxicity_zero_never_applies(proxy: Proxy) -> None:
    proxy.add_toxic(type="latency", toxicity=0.0, attributes={"latency": 500})
    proxy.add_toxic(type="timeout", stream="upstream", toxicity=0.0)
    with connect(proxy.listen) as sock:
        assert median_round_trip_s(sock) < 0.1


def test_bandwidth_within_ten_percent(proxy: Proxy) -> None:
    rate_kb_s = 4000
    size = 1_000_000
    proxy.add_toxic(type="bandwidth", attributes={"rate": rate_kb_s})
    with connect(proxy.listen) as sock:
        start = time.perf_counter()
        sock.sendall(b"x" * size)  # goes up freely, comes back throttled
        recv_exactly(sock, size)
        elapsed = time.perf_counter() - start
    measured = size / 1000 / elapsed
    assert abs(measured - rate_kb_s) / rate_kb_s < 0.10, f"{measured:.0f} KB/s"


def test_reset_peer_is_seen_as_a_reset(proxy: Proxy) -> None:
    proxy.add_toxic(type="reset_peer", stream="upstream", attributes={"timeout": 0})
    with connect(proxy.listen) as sock:
        sock.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            sock.recv(10)


def test_timeout_black_holes_then_closes_after_idle_timeout(proxy: Proxy) -> None:
    with connect(proxy.listen) as sock:
        round_trip_s(sock)
        proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 150})
        start = time.perf_counter()
        sock.sendall(b"into the void")  # dropped; restarts the idle timer
        sent = time.perf_counter()
        wait_closed(sock)  # no byte comes back before the close
        closed = time.perf_counter()
    assert 0.150 - 0.001 <= closed - sent <= 0.150 + SLACK_S + (sent - start)


def test_timeout_zero_black_holes_until_removed_which_closes(proxy: Proxy) -> None:
    with connect(proxy.listen) as sock:
        proxy.add_toxic(type="timeout", attributes={"timeout": 0})
        sock.sendall(b"anyone?")
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):  # neither data nor a close
            sock.recv(10)
        sock.settimeout(5)
        proxy.destroy_toxic("timeout_downstream")  # its stream lost bytes: it closes
        wait_closed(sock)


def test_slicer_cuts_the_stream_into_small_pieces(proxy: Proxy) -> None:
    proxy.add_toxic(
        type="slicer", attributes={"average_size": 10, "size_variation": 0, "delay": 3000}
    )
    payload = bytes(range(100))
    with connect(proxy.listen) as sock:
        sock.sendall(payload)
        reads = []
        while sum(map(len, reads)) < len(payload):
            reads.append(sock.recv(1000))
    assert b"".join(reads) == payload
    assert len(reads) >= 5 and max(map(len, reads)) < len(payload)


def test_limit_data_closes_after_n_bytes(proxy: Proxy) -> None:
    proxy.add_toxic(type="limit_data", attributes={"bytes": 1000})
    with connect(proxy.listen) as sock:
        sock.sendall(b"y" * 3000)
        received = bytearray()
        while chunk := sock.recv(4096):
            received += chunk
    assert received == b"y" * 1000


def test_slow_close_holds_the_close_back(proxy: Proxy) -> None:
    proxy.add_toxic(type="slow_close", stream="upstream", attributes={"delay": 120})
    with connect(proxy.listen) as sock:
        round_trip_s(sock)
        sock.shutdown(socket.SHUT_WR)  # EOF upstream: Toxiproxy closes the whole connection
        assert 0.120 - 0.001 <= wait_closed(sock) <= 0.120 + SLACK_S


def test_disabled_means_down(proxy: Proxy) -> None:
    with connect(proxy.listen) as sock:
        round_trip_s(sock)
        with proxy.down():
            wait_closed(sock)  # live connections are dropped
            with pytest.raises(ConnectionRefusedError):
                connect(proxy.listen)
    with connect(proxy.listen) as sock:  # back on the same port
        round_trip_s(sock)


def test_upstream_down_accepts_then_closes(proxy_server: ServerHandle) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nothing = f"127.0.0.1:{probe.getsockname()[1]}"
    proxy = Toxiproxy().create(upstream=nothing, name="dead")
    with connect(proxy.listen) as sock:  # accepted, not refused
        wait_closed(sock)


def test_reset_peer_added_to_an_open_connection_closes_it_plainly(proxy: Proxy) -> None:
    """Toxiproxy sets SO_LINGER 0 only at connection start: older connections get a FIN."""
    with connect(proxy.listen) as sock:
        round_trip_s(sock)
        proxy.add_toxic(type="reset_peer", stream="upstream", attributes={"timeout": 20})
        sock.sendall(b"dropped")
        assert wait_closed(sock) >= 0.020 - 0.001
