"""`EtcdStore`: the rendezvous `Store` on a real etcd cluster (v3 API, etcd >= 3.4).

It speaks etcd's own HTTP/JSON gateway (`/v3/kv/range`, `/v3/kv/put`, `/v3/kv/txn`, keys and
values base64) with the standard library only:

- torch's etcd backend uses `python-etcd`, which is unmaintained and speaks only the v2 API
  that etcd 3.6 removed;
- the maintained v3 Python clients pull grpc and protobuf, with pins that fight torch's;
- the JSON gateway is part of etcd itself (every member serves it on its client port).

`compare_set` is one txn; `add(key, 1)` one txn however many clients add at once, any other
`add` a loop of txns on `mod_revision` (etcd_counters.py); both also write a per-thread
marker token, so a retried txn whose reply was lost never counts twice; `multi_get` and
`multi_set` are one txn per `MAX_TXN_OPS` keys. Each request goes to the member that answered
last and fails over to the others until `timeout_s`, on connections kept alive per thread and
member, with TLS and etcd's user/password authentication where configured (etcd_transport.py).
What no retry can fix (a certificate, a password, a permission) raises RendezvousAccessError
at once. Details: docs/etcd.md.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence

from launcher.errors import (
    ConfigError,
    RendezvousAccessError,
    RendezvousConnectionError,
    RendezvousError,
)
from launcher.rendezvous.backends.etcd_counters import (
    count_of,
    increment_outcome,
    increment_txn,
    rewrite,
    visible,
)
from launcher.rendezvous.backends.etcd_transport import (
    ClientTls,
    Connections,
    Credentials,
    tls_refusal,
)
from launcher.rendezvous.backends.etcd_watch import KeptWatches, KeyWatch
from launcher.rendezvous.backends.etcd_wire import (
    Json,
    _b64,
    _chunks,
    _decode,
    _kv,
    _message,
    _one_line,
    _token_rejected,
    first_kv,
    revision_of,
)

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 2.0  # a member that does not accept a connection in 2 s is skipped
# A follower whose proposal went to a leader that just died answers only after etcd's own
# 7 s request timeout, while another member answers right after the election (~1 s): the
# first pass over the members waits 2 s for a reply, each later pass twice as long.
_REPLY_TIMEOUT_S = 2.0
_REPLY_TIMEOUT_MAX_S = 16.0
_BACKOFF_MAX_S = 1.0
_WATCH_S = 5.0  # at most, to open a watch and read (never more than the sleep it is in)
# gRPC codes worth trying on another member: DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
# UNAVAILABLE (no leader, leader changed, request timed out, member stopping).
_RETRY_CODES = frozenset({4, 8, 14})
_PERMISSION_DENIED = 7
_AUTHENTICATE = "/v3/auth/authenticate"


class EtcdStore:
    """The Store protocol on etcd; thread-safe (each thread keeps its own connections)."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        *,
        prefix: str = "/launcher/",
        timeout_s: float = 60.0,
        protocol: str = "http",
        tls: ClientTls | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        if not endpoints:
            raise ConfigError("no etcd endpoint given", flag="--rdzv-endpoint")
        if protocol not in ("http", "https"):
            raise ConfigError(f"etcd protocol must be http or https, not {protocol!r}")
        if tls is not None and protocol != "https":
            raise ConfigError("TLS settings need protocol=https", flag="--rdzv-conf")
        if timeout_s <= 0:
            raise ConfigError(f"etcd timeout must be positive, not {timeout_s}")
        self.endpoints = tuple(endpoints)
        self.prefix = prefix
        self.timeout_s = timeout_s
        self._protocol = protocol
        self._tls = tls if tls is not None or protocol == "http" else ClientTls.load()
        self._credentials = credentials
        self._connections = Connections(self.endpoints, self._tls)
        self._preferred = 0  # index of the member that answered last
        self._markers = f"_adds/{_token_hex()}/"  # this client's add markers (keys)
        self._added = False
        self._seen = threading.local()  # .revision: the store's, as of this thread's last reply
        self._watches = KeptWatches()

    def get(self, key: str) -> str | None:
        return _value(self._request("/v3/kv/range", {"key": self._key(key)}))

    def multi_get(self, keys: Sequence[str]) -> list[str | None]:
        ops = [{"request_range": {"key": self._key(key)}} for key in keys]
        values: list[str | None] = []
        for chunk in _chunks(ops):
            reply = self._request("/v3/kv/txn", {"success": chunk})
            values.extend(_value(r["response_range"]) for r in reply["responses"])
        return values

    def set(self, key: str, value: str) -> None:
        self._request("/v3/kv/put", {"key": self._key(key), "value": _b64(value)})

    def multi_set(self, items: Sequence[tuple[str, str]]) -> None:
        # etcd rejects a txn that puts one key twice; the last value wins, as with a dict.
        ops = [self._put(key, value) for key, value in dict(items).items()]
        for chunk in _chunks(ops):
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
        marker = self._key(f"{self._markers}{threading.get_ident()}")  # one add per thread
        kv: Json | None = None
        if delta == 1:  # one txn however many others add (etcd_counters.py)
            outcome, kv = increment_outcome(
                self._request("/v3/kv/txn", increment_txn(k, marker, _token_hex()))
            )
            if outcome == "counted":
                return count_of(kv)
            if outcome == "applied":  # a lost reply: read the count as of that copy's put
                at = str(kv["mod_revision"]) if kv else "0"
                return count_of(first_kv(self._request("/v3/kv/range", {"key": k, "revision": at})))
        else:
            kv = first_kv(self._request("/v3/kv/range", {"key": k}))
        while True:  # any other delta, or a counter in plain decimal text
            value, revision, total = rewrite(kv, delta)
            token = _token_hex()
            reply = self._request(
                "/v3/kv/txn",
                {
                    "compare": [
                        {"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": revision}
                    ],
                    "success": [
                        {"request_put": {"key": k, "value": _b64(value)}},
                        {"request_put": {"key": marker, "value": _b64(token)}},
                    ],
                    "failure": [
                        {"request_range": {"key": k}},
                        {"request_range": {"key": marker}},
                    ],
                },
            )
            if reply.get("succeeded"):
                return total
            responses = reply["responses"]
            if _kv(responses[1]["response_range"])[0] == token:
                return total  # an earlier copy of this very txn was applied (lost reply)
            kv = first_kv(responses[0]["response_range"])

    def watch(self, key: str, within_s: float) -> KeyWatch | None:
        """A watch that fires once `key` is written after this thread's last reply (see
        etcd_watch.py), opened within `within_s`; None if not: the caller just sleeps."""
        kept = self._watches.take(self._key(key))
        if kept is not None:
            return kept  # open since before the last read: it reports any write since
        after, headers = getattr(self._seen, "revision", 0), {"Content-Type": "application/json"}
        deadline = time.monotonic() + min(within_s, _WATCH_S)
        watch: KeyWatch | None = None
        try:
            if self._credentials is not None:
                headers["Authorization"] = self._token(self._credentials, deadline)
            context = self._tls.context if self._tls is not None else None
            address, k = self.endpoints[self._preferred], self._key(key)
            watch = KeyWatch.open(address, k, headers, deadline - time.monotonic(), context)
            # From now, not `after`: etcd serves a watch from the past in a catch-up loop
            # (every 100 ms, under load much later); one read covers the gap instead.
            left = deadline - time.monotonic()
            reply = self._request("/v3/kv/range", {"key": k}, timeout_s=max(left, 0.001))
        except (OSError, ValueError, RendezvousError) as err:
            log.debug("etcd: no watch on %s: %s", key, err)
            if watch is not None:
                watch.close()
            return None
        kv = first_kv(reply)
        if kv is not None and int(kv.get("mod_revision", 0)) > after:
            watch.value = visible(kv)  # written since the last read: fired already
        return self._watches.lend(watch)

    def close(self) -> None:
        """Removes this client's add markers (best effort: a crashed client leaves them) and
        closes its connections."""
        try:
            if self._added:
                start = self._key(self._markers)
                end = self._key(self._markers[:-1] + "0")  # "/" + 1: the end of the prefix
                self._request("/v3/kv/deleterange", {"key": start, "range_end": end}, timeout_s=5)
                self._added = False
        except RendezvousError as err:
            log.warning("etcd: could not remove add markers under %s: %s", self._markers, err)
        finally:
            self._watches.close()
            self._connections.close()

    def _key(self, key: str) -> str:
        return _b64(self.prefix + key)

    def _put(self, key: str, value: str) -> Json:
        return {"request_put": {"key": self._key(key), "value": _b64(value)}}

    def _url(self, index: int) -> str:
        host, port = self.endpoints[index]
        return f"{self._protocol}://{f'[{host}]' if ':' in host else host}:{port}"

    def _request(
        self, path: str, body: Json, *, timeout_s: float | None = None, signing_in: bool = False
    ) -> Json:
        """POSTs to the preferred member, failing over to the others until one answers."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        payload = json.dumps(body).encode()
        backoff, reply_timeout, last_error = 0.05, _REPLY_TIMEOUT_S, ""
        count = len(self.endpoints)
        while True:
            first = self._preferred
            refused: list[str] = []  # members whose TLS handshake failed for good, this pass
            for index in [(first + offset) % count for offset in range(count)]:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                url = self._url(index)
                try:
                    timeouts = (min(remaining, _CONNECT_TIMEOUT_S), min(remaining, reply_timeout))
                    status, reply = self._exchange(
                        index, path, payload, timeouts, deadline=deadline, signing_in=signing_in
                    )
                except OSError as err:  # http_wire's protocol errors are OSErrors too
                    last_error = f"{url}: {type(err).__name__}: {err}"
                    refusal = tls_refusal(err, self._tls)
                    if refusal is not None:
                        refused.append(f"etcd at {url}: {refusal}")
                    continue
                if status == 200:
                    self._preferred = index
                    self._seen.revision = revision_of(reply)
                    return reply
                if status in (502, 503, 504) or reply.get("code") in _RETRY_CODES:
                    last_error = f"{url}: HTTP {status}: {_message(reply)}"
                    continue
                raise self._rejected(url, path, status, reply, signing_in=signing_in)
            if refused and len(refused) == count:
                # Every member refused the handshake: a certificate, not an outage.
                raise RendezvousAccessError(
                    _one_line(refused[-1]), endpoint=", ".join(map(self._url, range(count)))
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
            reply_timeout = min(reply_timeout * 2, _REPLY_TIMEOUT_MAX_S)

    def _exchange(
        self,
        index: int,
        path: str,
        payload: bytes,
        timeouts: tuple[float, float],
        *,
        deadline: float,
        signing_in: bool,
    ) -> tuple[int, Json]:
        """One request to member `index`, with this client's token; a token etcd no longer
        takes is replaced (signing in again) and the request sent once more."""
        headers = {"Content-Type": "application/json"}
        credentials = None if signing_in else self._credentials
        if credentials is None:
            status, data = self._connections.post(index, path, payload, headers, timeouts)
            return status, _decode(data)
        token = self._token(credentials, deadline)
        headers["Authorization"] = token  # as it is: etcd refuses "Bearer <token>"
        status, data = self._connections.post(index, path, payload, headers, timeouts)
        reply = _decode(data)
        if status == 200 or not _token_rejected(reply):
            return status, reply
        headers["Authorization"] = self._token(credentials, deadline, stale=token)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no time left to retry after signing in again")
        timeouts = (min(timeouts[0], remaining), min(timeouts[1], remaining))
        status, data = self._connections.post(index, path, payload, headers, timeouts)
        return status, _decode(data)

    def _token(self, credentials: Credentials, deadline: float, stale: str | None = None) -> str:
        with credentials.lock:  # the other threads wait for the one signing in
            if credentials.token is None or credentials.token == stale:
                remaining = max(deadline - time.monotonic(), 0.001)
                reply = self._request(
                    _AUTHENTICATE, credentials.body(), timeout_s=remaining, signing_in=True
                )
                token = reply.get("token")
                if not isinstance(token, str) or not token:
                    who = credentials.username
                    raise RendezvousError(f"etcd signed in {who!r} but gave no token")
                credentials.token = token
            return credentials.token

    def _rejected(
        self, url: str, path: str, status: int, reply: Json, *, signing_in: bool
    ) -> RendezvousError:
        """The error for a reply that no other member or later try would change."""
        message, user = _message(reply), self._credentials
        if signing_in and user is not None:
            return RendezvousAccessError(
                f"etcd at {url} refused user {user.username!r}: {message} "
                "(check username= and password_file= in --rdzv-conf)",
                endpoint=url,
            )
        if status == 400 and "CommonName" in message:
            return RendezvousAccessError(
                f"etcd at {url}: {message}: with auth on, etcd's JSON gateway refuses a client "
                "certificate that has a CommonName; use one without (and username=)",
                endpoint=url,
            )
        if reply.get("code") == _PERMISSION_DENIED:
            who = f"user {user.username!r}" if user is not None else "a client without a user"
            fix = "grant it readwrite" if user is not None else "pass username=, password_file="
            return RendezvousAccessError(
                f"etcd at {url} refused {who} on {path} under {self.prefix!r}: {message} ({fix})",
                endpoint=url,
            )
        if user is not None and _token_rejected(reply):
            return RendezvousAccessError(
                f"etcd at {url} rejected the token it had just issued to {user.username!r}: "
                f"{message}",
                endpoint=url,
            )
        if "user name is empty" in message:
            return RendezvousAccessError(
                f"etcd at {url} requires a user: {message} (pass username=, password_file=)",
                endpoint=url,
            )
        return RendezvousError(
            _one_line(f"etcd at {url} rejected {path}: HTTP {status}: {message}"), endpoint=url
        )


def _value(response: Json) -> str | None:
    """A range reply's value as the Store returns it (a counter as decimal text)."""
    kv = first_kv(response)
    return None if kv is None else visible(kv)


def _token_hex() -> str:
    """A random 128-bit token (`uuid` would cost every agent its import, platform included)."""
    return os.urandom(16).hex()
