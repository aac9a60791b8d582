"""`EtcdStore`: the rendezvous `Store` on a real etcd cluster (v3 API, etcd >= 3.4).

It speaks etcd's own HTTP/JSON gateway (`/v3/kv/range`, `/v3/kv/put`, `/v3/kv/txn`, keys and
values base64) with the standard library only:

- torch's etcd backend uses `python-etcd`, which is unmaintained and speaks only the v2 API
  that etcd 3.6 removed;
- the maintained v3 Python clients pull grpc and protobuf, with pins that fight torch's;
- the JSON gateway is part of etcd itself (every member serves it on its client port).

Atomicity: `compare_set` is one txn (compare on `value`, or `create_revision == 0` for an
absent key). `add` is a read-modify-write loop of txns comparing `mod_revision`; each txn also
writes a per-thread marker key with a fresh token, so a retried txn whose first copy was
applied (the reply was lost) is recognised and never counted twice. `multi_set` and
`multi_get` are one txn each, split into txns of at most `MAX_TXN_OPS` operations (etcd's
default `--max-txn-ops`), so they are atomic only up to that size.

Failover: each request goes to the member that answered last; on a connection error, a
timeout or an "unavailable" reply it moves to the next member, and keeps cycling (with a
short backoff) until one answers or `timeout_s` has passed, then raises
`RendezvousConnectionError` naming every endpoint and the last error. See docs/etcd.md.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from launcher.errors import ConfigError, RendezvousConnectionError, RendezvousError

log = logging.getLogger(__name__)

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
_MAX_TXN_BYTES = 512 * 1024  # well under etcd's default 1.5 MiB request limit
_CONNECT_TIMEOUT_S = 2.0  # a member that does not accept a connection in 2 s is skipped
_REPLY_TIMEOUT_S = 10.0  # longer than etcd's own proposal timeout (about 7 s)
_BACKOFF_MAX_S = 1.0
# gRPC codes worth trying on another member: DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
# UNAVAILABLE (no leader, leader changed, request timed out, member stopping).
_RETRY_CODES = frozenset({4, 8, 14})

Json = dict[str, Any]


def parse_endpoints(text: str, default_port: int = 2379) -> list[tuple[str, int]]:
    """Parses "host:port,host2:port2" (a port may be left out; IPv6 as "[::1]:2379")."""
    endpoints: list[tuple[str, int]] = []
    for raw in text.split(","):
        item = raw.strip()
        host, port = item, str(default_port)
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest:
                port = rest.removeprefix(":")
        elif item.count(":") == 1:
            host, port = item.split(":")
        if not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"bad etcd endpoint {item!r} in {text!r}",
                fix="expected host:port[,host:port...]",
                flag="--rdzv-endpoint",
            )
        endpoints.append((host, int(port)))
    return endpoints


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _kv(response: Json) -> tuple[str | None, int]:
    """(value, mod_revision) of the single key in a range response; (None, 0) if absent."""
    kvs = response.get("kvs") or []
    if not kvs:
        return None, 0
    # The gateway leaves out fields holding the zero value: an empty value has no "value".
    return base64.b64decode(kvs[0].get("value", "")).decode(), int(kvs[0]["mod_revision"])


def _chunks(ops: list[Json]) -> list[list[Json]]:
    chunks: list[list[Json]] = [[]]
    size = 0
    for op in ops:
        op_size = len(json.dumps(op))
        if chunks[-1] and (len(chunks[-1]) >= MAX_TXN_OPS or size + op_size > _MAX_TXN_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(op)
        size += op_size
    return chunks


class EtcdStore:
    """The Store protocol on etcd; thread-safe (one HTTP connection per request)."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        *,
        prefix: str = "/launcher/",
        timeout_s: float = 60.0,
        protocol: str = "http",
    ) -> None:
        if not endpoints:
            raise ConfigError("no etcd endpoint given", flag="--rdzv-endpoint")
        if protocol not in ("http", "https"):
            raise ConfigError(f"etcd protocol must be http or https, not {protocol!r}")
        if timeout_s <= 0:
            raise ConfigError(f"etcd timeout must be positive, not {timeout_s}")
        self.endpoints = tuple(endpoints)
        self.prefix = prefix
        self.timeout_s = timeout_s
        self._protocol = protocol
        self._ssl = ssl.create_default_context() if protocol == "https" else None
        self._preferred = 0  # index of the member that answered last
        self._markers = f"{prefix}_adds/{uuid.uuid4().hex}/"  # this client's add markers
        self._added = False

    # -- the Store protocol ----------------------------------------------------------------

    def get(self, key: str) -> str | None:
        return _kv(self._request("/v3/kv/range", {"key": self._key(key)}))[0]

    def multi_get(self, keys: Sequence[str]) -> list[str | None]:
        ops = [{"request_range": {"key": self._key(key)}} for key in keys]
        values: list[str | None] = []
        for chunk in _chunks(ops) if ops else []:
            reply = self._request("/v3/kv/txn", {"success": chunk})
            values.extend(_kv(r["response_range"])[0] for r in reply["responses"])
        return values

    def set(self, key: str, value: str) -> None:
        self._request("/v3/kv/put", {"key": self._key(key), "value": _b64(value)})

    def multi_set(self, items: Sequence[tuple[str, str]]) -> None:
        # etcd rejects a txn that puts one key twice; the last value wins, as with a dict.
        ops = [self._put(key, value) for key, value in dict(items).items()]
        for chunk in _chunks(ops) if ops else []:
            self._request("/v3/kv/txn", {"success": chunk})

    def compare_set(self, key: str, expected: str | None, value: str) -> str:
        k = self._key(key)
        if expected is None:
            compare = {"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        else:
            compare = {"key": k, "target": "VALUE", "result": "EQUAL", "value": _b64(expected)}
        # A retry after a lost reply re-runs this txn: if the first copy was applied, the
        # compare now fails and the failure branch reads back `value`, which is the truth.
        reply = self._request(
            "/v3/kv/txn",
            {
                "compare": [compare],
                "success": [self._put(key, value)],
                "failure": [{"request_range": {"key": k}}],
            },
        )
        if reply.get("succeeded"):
            return value
        return _kv(reply["responses"][0]["response_range"])[0] or ""

    def add(self, key: str, delta: int) -> int:
        if delta == 0:  # a plain read: the protocol polls counters this way
            current = self.get(key)
            return int(current) if current is not None else 0
        self._added = True
        k = self._key(key)
        marker = f"{self._markers}{threading.get_ident()}"  # one add at a time per thread
        value, revision = _kv(self._request("/v3/kv/range", {"key": k}))
        while True:
            total = int(value or "0") + delta
            token = uuid.uuid4().hex
            reply = self._request(
                "/v3/kv/txn",
                {
                    "compare": [
                        {"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": revision}
                    ],
                    "success": [self._put(key, str(total)), self._put(marker, token, raw=True)],
                    "failure": [
                        {"request_range": {"key": k}},
                        {"request_range": {"key": _b64(marker)}},
                    ],
                },
            )
            if reply.get("succeeded"):
                return total
            responses = reply["responses"]
            if _kv(responses[1]["response_range"])[0] == token:
                return total  # an earlier copy of this very txn was applied (lost reply)
            value, revision = _kv(responses[0]["response_range"])

    def close(self) -> None:
        """Removes this client's add markers (best effort: a crashed client leaves them)."""
        if not self._added:
            return
        start = _b64(self._markers)
        end = _b64(self._markers[:-1] + chr(ord(self._markers[-1]) + 1))
        try:
            self._request("/v3/kv/deleterange", {"key": start, "range_end": end}, timeout_s=5.0)
        except RendezvousConnectionError as err:
            log.warning("etcd: could not remove add markers under %s: %s", self._markers, err)
        self._added = False

    # -- transport -------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return _b64(self.prefix + key)

    def _put(self, key: str, value: str, *, raw: bool = False) -> Json:
        full = key if raw else self.prefix + key
        return {"request_put": {"key": _b64(full), "value": _b64(value)}}

    def _url(self, index: int) -> str:
        host, port = self.endpoints[index]
        return f"{self._protocol}://{f'[{host}]' if ':' in host else host}:{port}"

    def _request(self, path: str, body: Json, *, timeout_s: float | None = None) -> Json:
        """POSTs to the preferred member, failing over to the others until one answers."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        payload = json.dumps(body).encode()
        backoff, last_error, count = 0.05, "", len(self.endpoints)
        while True:
            first = self._preferred
            for index in [(first + offset) % count for offset in range(count)]:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                url = self._url(index)
                try:
                    status, data = self._post(index, path, payload, remaining)
                    reply: Json = json.loads(data) if data else {}
                except (OSError, http.client.HTTPException, ValueError) as err:
                    last_error = f"{url}: {type(err).__name__}: {err}"
                    continue
                if status == 200:
                    self._preferred = index
                    return reply
                message = str(reply.get("message") or reply.get("error") or data[:200])
                if status >= 500 or reply.get("code") in _RETRY_CODES:
                    last_error = f"{url}: HTTP {status}: {message}"
                    continue
                raise RendezvousError(
                    _one_line(f"etcd at {url} rejected {path}: HTTP {status}: {message}"),
                    endpoint=url,
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tried = ", ".join(self._url(i) for i in range(count))
                raise RendezvousConnectionError(
                    _one_line(
                        f"no etcd member answered within {timeout_s or self.timeout_s:g}s "
                        f"(tried {tried}); last error: {last_error}"
                    ),
                    endpoint=tried,
                )
            time.sleep(min(backoff, remaining))  # every member failed: back off, retry
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _post(self, index: int, path: str, payload: bytes, remaining: float) -> tuple[int, bytes]:
        host, port = self.endpoints[index]
        conn: http.client.HTTPConnection
        timeout = min(remaining, _CONNECT_TIMEOUT_S)
        if self._ssl is not None:
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
            conn.sock.settimeout(min(remaining, _REPLY_TIMEOUT_S))
            headers = {"Content-Type": "application/json"}
            conn.request("POST", path, body=payload, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()
