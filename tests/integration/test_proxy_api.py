"""The proxy's HTTP API against Toxiproxy's contract, driven by the real toxiproxy-python
client where it covers the call and by plain HTTP (http.client) where it does not."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from chaos.proxy.client import ProxyClient
from chaos.proxy.server import ServerHandle, running
from tests.conftest import clean_env
from tests.proxy_peers import EchoServer, connect, round_trip_s

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]


def call(
    handle: ServerHandle, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=5)
    try:
        payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, body=payload, headers=headers)
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def error_of(status: int, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    """The Toxiproxy error shape, checked: JSON + newline, text/plain, status echoed."""
    assert body.endswith(b"\n")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    value = json.loads(body)
    assert value["status"] == status
    return status, value["error"]


def test_version_and_running(proxy_server: ServerHandle) -> None:
    client = Toxiproxy()
    assert client.running()
    assert client.version() == b'{"version": "2.12.0"}\n'


def test_create_list_get_delete(proxy_server: ServerHandle, echo_upstream: EchoServer) -> None:
    client = Toxiproxy()
    proxy = client.create(upstream=echo_upstream.address, name="echo")
    host, port = proxy.listen.split(":")
    assert host == "127.0.0.1" and int(port) > 0  # port 0 reads back as the bound port
    assert set(client.proxies()) == {"echo"}
    status, headers, body = call(proxy_server, "GET", "/proxies/echo")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "name": "echo",
        "listen": proxy.listen,
        "upstream": echo_upstream.address,
        "enabled": True,
        "Logger": {},
        "toxics": [],
    }
    assert "x-toxiproxy-request-id" in headers
    with connect(proxy.listen) as sock:
        round_trip_s(sock)
    assert client.destroy(proxy)
    assert client.proxies() == {}


def test_bad_input_gets_toxiproxy_errors_and_the_server_keeps_running(
    proxy_server: ServerHandle, echo_upstream: EchoServer
) -> None:
    client = Toxiproxy()
    proxy = client.create(upstream=echo_upstream.address, name="echo")
    body = {"name": "echo", "upstream": echo_upstream.address}
    assert error_of(*call(proxy_server, "POST", "/proxies", body)) == (409, "proxy already exists")
    with pytest.raises(ProxyExists):
        client.create(upstream=echo_upstream.address, name="echo")
    taken = {"name": "other", "upstream": echo_upstream.address, "listen": proxy.listen}
    status, message = error_of(*call(proxy_server, "POST", "/proxies", taken))
    assert status == 500
    assert message == f"listen tcp {proxy.listen}: bind: address already in use"
    assert error_of(*call(proxy_server, "POST", "/proxies", {"name": "x"})) == (
        400,
        "missing required field: upstream",
    )
    assert error_of(*call(proxy_server, "POST", "/proxies", b"")) == (400, "bad request body: EOF")
    assert error_of(*call(proxy_server, "GET", "/proxies/nope")) == (404, "proxy not found")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="explode")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", stream="lolstream")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", attributes={"latency": -5})
    float_latency = {"type": "latency", "attributes": {"latency": 1.5}}
    status, message = error_of(*call(proxy_server, "POST", "/proxies/echo/toxics", float_latency))
    assert status == 400 and "cannot unmarshal number 1.5" in message
    proxy.add_toxic(type="latency", stream="upstream", name="slow")
    with pytest.raises(ProxyExists):  # names are unique across both streams
        proxy.add_toxic(type="latency", stream="downstream", name="slow")
    with pytest.raises(NotFound):
        proxy.destroy_toxic("nope")
    assert call(proxy_server, "GET", "/nowhere")[::2] == (404, b"404 page not found\n")
    assert call(proxy_server, "PUT", "/proxies")[::2] == (405, b"")
    assert call(proxy_server, "GET", "/proxies", **{"User-Agent": "Mozilla/5.0"})[0] == 403
    # Still serving, and the proxy still proxies.
    assert set(client.proxies()) == {"echo"}
    with connect(proxy.listen) as sock:
        round_trip_s(sock)


def test_toxic_crud_defaults_and_partial_update(
    proxy_server: ServerHandle, echo_upstream: EchoServer
) -> None:
    proxy = Toxiproxy().create(upstream=echo_upstream.address, name="echo")
    status, _, body = call(proxy_server, "POST", "/proxies/echo/toxics", {"type": "slicer"})
    assert status == 200  # 200, not 201, as Toxiproxy
    assert json.loads(body) == {
        "attributes": {"average_size": 0, "size_variation": 0, "delay": 0},
        "name": "slicer_downstream",
        "type": "slicer",
        "stream": "downstream",
        "toxicity": 1,
    }
    proxy.add_toxic(type="latency", stream="UPSTREAM", attributes={"latency": 5, "jitter": 1})
    assert list(proxy.toxics()) == ["latency_UPSTREAM", "slicer_downstream"]  # upstream first
    update = {"attributes": {"jitter": 2}, "toxicity": 0.5}
    status, _, body = call(proxy_server, "PATCH", "/proxies/echo/toxics/latency_UPSTREAM", update)
    assert status == 200
    toxic = json.loads(body)
    assert toxic["attributes"] == {"latency": 5, "jitter": 2} and toxic["toxicity"] == 0.5
    assert call(proxy_server, "DELETE", "/proxies/echo/toxics/slicer_downstream")[0] == 204
    assert list(proxy.toxics()) == ["latency_UPSTREAM"]


def test_reset_enables_and_strips_toxics(
    proxy_server: ServerHandle, echo_upstream: EchoServer
) -> None:
    client = Toxiproxy()
    proxy = client.create(upstream=echo_upstream.address, name="echo")
    proxy.add_toxic(type="latency", attributes={"latency": 1000})
    proxy.disable()
    assert client.reset()
    assert proxy.toxics() == {}
    with connect(proxy.listen) as sock:  # the same port again
        assert round_trip_s(sock) < 0.5


def test_populate_keeps_unchanged_and_validates_first(
    proxy_server: ServerHandle, echo_upstream: EchoServer
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    entry = {"name": "a", "listen": f"localhost:{free}", "upstream": echo_upstream.address}
    status, _, body = call(proxy_server, "POST", "/populate", [entry])
    assert status == 201
    (created,) = json.loads(body)["proxies"]
    assert created["listen"] == f"127.0.0.1:{free}"  # localhost resolved
    Toxiproxy().get_proxy("a").add_toxic(type="noop")
    call(proxy_server, "POST", "/populate", [entry])
    assert json.loads(call(proxy_server, "GET", "/proxies/a")[2])["toxics"] != []  # untouched
    bad = [entry, {"name": "b"}]
    status, message = error_of(*call(proxy_server, "POST", "/populate", bad))
    assert (status, message) == (400, "missing required field: upstream at proxy 2")
    assert set(Toxiproxy().proxies()) == {"a"}


def test_keep_alive_serves_many_requests_on_one_connection(proxy_server: ServerHandle) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy_server.port, timeout=5)
    try:
        for _ in range(5):
            conn.request("GET", "/proxies")
            reply = conn.getresponse()
            assert (reply.status, reply.read()) == (200, b"{}")
        conn.request("POST", "/reset")
        reply = conn.getresponse()
        assert (reply.status, reply.read()) == (204, b"")
    finally:
        conn.close()


def test_cli_refuses_a_port_in_use_in_one_line(proxy_server: ServerHandle) -> None:
    argv = [sys.executable, "-m", "chaos", "proxy", "serve", "--port", str(proxy_server.port)]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, check=False, env=clean_env()
    )
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "address already in use" in line and "--port" in line


def test_the_api_on_a_unix_socket_drives_a_tcp_proxy(tmp_path: Path) -> None:
    """What the harness uses for a proxy inside a node's network namespace: the API is a
    file, reached from any namespace."""
    sock = tmp_path / "api.sock"
    with running(unix=sock) as handle, socket.create_server(("127.0.0.1", 0)) as upstream:
        api = ProxyClient(handle.server.url)
        assert handle.server.url == f"unix:{sock}" and sock.exists()
        port = upstream.getsockname()[1]
        made = api.create_proxy("store", upstream=f"127.0.0.1:{port}")
        host, _, listen = made["listen"].rpartition(":")
        with socket.create_connection((host, int(listen)), timeout=5) as client:
            server_side, _ = upstream.accept()
            with server_side:
                client.sendall(b"ping")
                assert server_side.recv(4) == b"ping"
        api.add_toxic("store", "latency", attributes={"latency": 50})
        assert [t["type"] for t in api.call("GET", "/proxies/store/toxics")] == ["latency"]
    assert not sock.exists()  # stopped: the socket file is gone
