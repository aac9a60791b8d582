"""etcd's v3 JSON gateway as data: endpoints, base64 keys and values, range replies, txn
chunks, error replies (pure functions, used by EtcdStore in etcd.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

from launcher.errors import ConfigError

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
_MAX_TXN_BYTES = 512 * 1024  # well under etcd's default 1.5 MiB request limit

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
    # surrogateescape: a value read back from bytes that are not UTF-8 (an intruder's) is
    # written back as those very bytes (a compare-and-set against it must match).
    return base64.b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def first_kv(response: Json) -> Json | None:
    """The single kv of a range response; None if the key is absent."""
    kvs = response.get("kvs") or []
    return kvs[0] if kvs else None


def kv_text(kv: Json) -> str:
    # The gateway leaves out fields holding the zero value: an empty value has no "value".
    return base64.b64decode(kv.get("value", "")).decode("utf-8", "surrogateescape")


def _kv(response: Json) -> tuple[str | None, int]:
    """(value, mod_revision) of the single key in a range response; (None, 0) if absent."""
    kv = first_kv(response)
    return (None, 0) if kv is None else (kv_text(kv), int(kv["mod_revision"]))


def _chunks(ops: list[Json]) -> list[list[Json]]:
    """Splits ops into txns etcd accepts (operation count and request size)."""
    chunks: list[list[Json]] = []
    size = 0
    for op in ops:
        op_size = len(json.dumps(op))
        if not chunks or len(chunks[-1]) >= MAX_TXN_OPS or size + op_size > _MAX_TXN_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(op)
        size += op_size
    return chunks


def _message(reply: Json) -> str:
    return _one_line(str(reply.get("message") or reply.get("error")))


def _token_rejected(reply: Json) -> bool:
    """etcd no longer takes the token: it expired (`--auth-token-ttl` of idleness), the member
    restarted (simple tokens live in memory), or users and roles changed since it was issued."""
    message = _message(reply)
    return reply.get("code") == 16 or "invalid auth token" in message or "store is old" in message


def _decode(data: bytes) -> Json:
    """A reply body as JSON; anything else (a proxy's error page) as {"message": text}."""
    try:
        reply = json.loads(data)
    except ValueError:
        reply = None
    if isinstance(reply, dict):
        return reply
    return {"message": data[:200].decode(errors="replace")}


def revision_of(reply: Json) -> int:
    """The store's revision as of a reply (its header's), 0 if it has none."""
    try:
        return int(reply.get("header", {}).get("revision", 0))
    except (TypeError, ValueError, AttributeError):
        return 0
