"""How the intruder reaches a job's store: as an outside program would, with torch's own
TCPStore client (c10d) or etcd's JSON gateway (etcd), not with the launcher's code (chaos
runs the launcher only as a user does; docs/design.md, dependency rule 2).

Values are text; bytes that are not UTF-8 travel as lone surrogates (surrogateescape), as the
launcher's own clients carry them.
"""

from __future__ import annotations

import base64
import urllib.error
from datetime import timedelta
from typing import Any, Protocol

from chaos.topology.etcd import http_json


class IntruderStoreError(RuntimeError):
    """The store turned a write away (etcd's request size limit, a refused connection)."""


class IntruderStore(Protocol):
    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...

    def compare_set(self, key: str, expected: str | None, value: str) -> None: ...

    def add(self, key: str, delta: int) -> int: ...

    def close(self) -> None: ...


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class TorchTCPStore:
    """torch.distributed.TCPStore as a client of the job's c10d store."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        from torch.distributed import TCPStore  # type: ignore[attr-defined]  # only here

        self._store = TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout_s))

    def get(self, key: str) -> str | None:
        return _text(self._store.get(key)) if self._store.check([key]) else None

    def set(self, key: str, value: str) -> None:
        self._store.set(key, _raw(value))  # type: ignore[arg-type]  # (see compare_set)

    def compare_set(self, key: str, expected: str | None, value: str) -> None:
        # pybind takes bytes for std::string; torch's stub says str only.
        self._store.compare_set(key, _raw(expected or ""), _raw(value))  # type: ignore[arg-type]

    def add(self, key: str, delta: int) -> int:
        return int(self._store.add(key, delta))

    def close(self) -> None:
        del self._store


_COUNTER_TAG = "\x00c"


class EtcdGateway:
    """etcd's v3 JSON gateway; the job's keys are under the launcher's default prefix."""

    def __init__(self, endpoint: str, timeout_s: float, prefix: str = "/launcher/") -> None:
        self._url = f"http://{endpoint.split(',', maxsplit=1)[0]}"
        self._timeout_s, self._prefix = timeout_s, prefix

    def _key(self, key: str) -> str:
        return base64.b64encode(_raw(self._prefix + key)).decode("ascii")

    def _call(self, path: str, body: dict[str, Any]) -> Any:
        try:
            return http_json(self._url + path, body, timeout_s=self._timeout_s)
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:200]
            raise IntruderStoreError(f"etcd refused {path}: HTTP {err.code}: {detail}") from None
        except OSError as err:
            raise IntruderStoreError(f"etcd at {self._url}: {err}") from None

    def get(self, key: str) -> str | None:
        kvs = self._call("/v3/kv/range", {"key": self._key(key)}).get("kvs")
        return _text(base64.b64decode(kvs[0].get("value", ""))) if kvs else None

    def set(self, key: str, value: str) -> None:
        value_b64 = base64.b64encode(_raw(value)).decode("ascii")
        self._call("/v3/kv/put", {"key": self._key(key), "value": value_b64})

    def compare_set(self, key: str, expected: str | None, value: str) -> None:
        if expected is None:
            compare = {"key": self._key(key), "target": "CREATE", "create_revision": "0"}
        else:
            raw = base64.b64encode(_raw(expected)).decode("ascii")
            compare = {"key": self._key(key), "target": "VALUE", "value": raw}
        put = {"request_put": {"key": self._key(key)}}
        put["request_put"]["value"] = base64.b64encode(_raw(value)).decode("ascii")
        self._call("/v3/kv/txn", {"compare": [{**compare, "result": "EQUAL"}], "success": [put]})

    def add(self, key: str, delta: int) -> int:
        # Not atomic: an intruder need not be. The launcher keeps a counter as "\0c<offset>",
        # its count version + offset (docs/etcd.md); the put raises the version by one.
        kvs = self._call("/v3/kv/range", {"key": self._key(key)}).get("kvs")
        text = _text(base64.b64decode(kvs[0].get("value", ""))) if kvs else ""
        version = int(kvs[0].get("version", 0)) if kvs else 0
        counted = text.startswith(_COUNTER_TAG)
        total = (version + int(text[2:]) if counted else int(text or "0")) + delta
        self.set(key, f"{_COUNTER_TAG}{total - version - 1}")
        return total

    def close(self) -> None:
        return None
