"""A standard-library client of the proxy's API, for the harness (which cannot rely on the
`requests`-based toxiproxy-python outside the test extra). Speaks to any Toxiproxy 2.x.

    api = ProxyClient("http://127.0.0.1:8474")
    proxy = api.create_proxy("store", upstream="127.0.0.1:29500")   # proxy["listen"]
    api.add_toxic("store", "latency", attributes={"latency": 300})
    api.remove_toxic("store", "latency_downstream")
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import quote, urlsplit


class ProxyApiError(RuntimeError):
    """The server refused a call: Toxiproxy's status and message."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        super().__init__(f"{method} {path}: {status} {message}")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, *, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ProxyClient:
    """`url`: http://HOST:PORT, or unix:PATH for a server started with `--unix PATH`."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.unix = url[len("unix:") :] if url.startswith("unix:") else None
        parts = urlsplit(url if self.unix is None else "http://localhost")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 8474
        self.timeout_s = timeout_s

    def _connection(self) -> http.client.HTTPConnection:
        if self.unix is not None:
            return _UnixConnection(self.unix, timeout=self.timeout_s)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; the decoded JSON reply (None for 204). Raises ProxyApiError."""
        conn = self._connection()
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
        finally:
            conn.close()
        if reply.status >= 400:
            try:
                message = json.loads(data)["error"]
            except (ValueError, KeyError, TypeError):
                message = data.decode(errors="replace").strip()
            raise ProxyApiError(method, path, reply.status, message)
        return json.loads(data) if data else None

    def create_proxy(
        self, name: str, *, upstream: str, listen: str = "127.0.0.1:0", enabled: bool = True
    ) -> dict[str, Any]:
        body = {"name": name, "upstream": upstream, "listen": listen, "enabled": enabled}
        result: dict[str, Any] = self.call("POST", "/proxies", body)
        return result

    def proxy(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/proxies/{quote(name, safe='')}")
        return result

    def set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        path = f"/proxies/{quote(name, safe='')}"
        result: dict[str, Any] = self.call("POST", path, {"enabled": enabled})
        return result

    def delete_proxy(self, name: str) -> None:
        self.call("DELETE", f"/proxies/{quote(name, safe='')}")

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        name: str = "",
        stream: str = "downstream",
        toxicity: float = 1.0,
        attributes: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        body = {
            "name": name,
            "type": type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes or {},
        }
        result: dict[str, Any] = self.call("POST", f"/proxies/{quote(proxy, safe='')}/toxics", body)
        return result

    def update_toxic(
        self,
        proxy: str,
        name: str,
        *,
        attributes: dict[str, int] | None = None,
        toxicity: float | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if attributes is not None:
            body["attributes"] = attributes
        if toxicity is not None:
            body["toxicity"] = toxicity
        path = f"/proxies/{quote(proxy, safe='')}/toxics/{quote(name, safe='')}"
        result: dict[str, Any] = self.call("POST", path, body)
        return result

    def remove_toxic(self, proxy: str, name: str) -> None:
        self.call("DELETE", f"/proxies/{quote(proxy, safe='')}/toxics/{quote(name, safe='')}")

    def reset(self) -> None:
        self.call("POST", "/reset")
