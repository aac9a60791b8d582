"""A watch on one etcd key, as a descriptor to wait on: how an etcd-backed agent learns of a
write the moment it happens instead of at its next poll.

Why: at 100 agents on one small machine, a polling joiner learned of its assignment up to
two seconds after the closer wrote it, because the first members to learn it were starting
their workers meanwhile and every later poll waited for CPU. A watch is pushed to every
waiting member at once by etcd.

`POST /v3/watch {"create_request": {key}}` on etcd's gateway answers a chunked reply that
never ends: one JSON message per line, first `{"result": {"created": true}}`, then
`{"result": {"events": [...]}}` as the key is written. The watch starts at the store's
current revision (one that starts in the past waits for etcd's catch-up loop: 30-100 ms idle,
and under load it missed whole half-second sleeps); EtcdStore.watch reads the key once it is
open, for a write between the caller's last read and the watch. A put's value is handed on
(`value`), so the caller need not read it back at the busiest moment; a signed job checks its
seal as it would a read's. A message that cannot be parsed, a cancelled watch or a
compacted revision count as "look now" (fired, no value).
"""

from __future__ import annotations

import json
import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from launcher.rendezvous.backends.etcd_counters import visible
from launcher.rendezvous.backends.http_wire import HttpConnection, HttpStream

if TYPE_CHECKING:
    import ssl


class KeyWatch:
    """One open watch. `fileno()` for poll(); `fired()` after it polls readable; `close()`
    when done with it, which hands a watch that has not fired to `park` (if given): the
    store keeps it for the thread's next wait on the same key, open all along, so that it
    reports every write since (and costs no round trips to reopen when the store is busiest).
    """

    def __init__(self, stream: HttpStream, key_b64: str) -> None:
        self._stream = stream
        self.key_b64 = key_b64
        self.value: str | None = None  # the value of the put that fired it, if one did
        self.park: Callable[[KeyWatch], None] | None = None
        self._fired = False

    @classmethod
    def open(
        cls,
        address: tuple[str, int],
        key_b64: str,
        headers: dict[str, str],
        timeout_s: float,
        context: ssl.SSLContext | None,
    ) -> KeyWatch:
        """Opens the watch, from the store's current revision, on a connection of its own
        (its reply never ends); OSError if the member cannot be reached or does not answer
        within `timeout_s`."""
        conn = HttpConnection(*address, timeout=timeout_s, context=context)
        conn.connect()
        try:
            body = json.dumps({"create_request": {"key": key_b64}}).encode()
            stream = HttpStream.open(conn, "/v3/watch", body, headers, timeout_s)
        except BaseException:
            conn.close()
            raise
        watch = cls(stream, key_b64)
        try:
            if stream.status != 200:
                raise ConnectionRefusedError(f"the watch was refused: HTTP {stream.status}")
            watch._await_created(time.monotonic() + timeout_s)
        except BaseException:
            watch.close()
            raise
        return watch

    def _await_created(self, deadline: float) -> None:
        """The gateway answers the head before etcd has the watch: a write in between would
        be missed, by the watch and by the caller's read that comes before it."""
        poller = select.poll()
        poller.register(self.fileno(), select.POLLIN)
        confirmed = False
        while True:  # what came with the head first: it is read already, poll would not say
            for line in self._stream.lines():
                woke, value, created = _read(line)
                if woke and not confirmed:
                    raise ConnectionResetError("the watch ended as it opened")
                confirmed = confirmed or created
                self.value = value if value is not None else self.value  # came right after
            if confirmed:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("etcd did not confirm the watch")
            poller.poll(remaining * 1000)

    def fileno(self) -> int:
        return self._stream.fileno()

    def fired(self) -> bool:
        """Whether the key was written (or the watch ended: look anyway); False while only
        the watch's own confirmation has come."""
        try:
            lines = self._stream.lines()
        except OSError:
            lines = [b"ended"]  # not JSON: look now
        for line in lines:
            woke, value, _ = _read(line)
            self._fired = self._fired or woke
            self.value = value if value is not None else self.value
        return self._fired

    def close(self) -> None:
        park, self.park = self.park, None
        if park is not None and not self._fired and self.value is None:
            park(self)
        else:
            self._stream.close()


class KeptWatches:
    """The watch each thread keeps between its waits on one key (see KeyWatch)."""

    def __init__(self) -> None:
        self._kept: dict[int, KeyWatch] = {}
        self._lock = threading.Lock()

    def take(self, key_b64: str) -> KeyWatch | None:
        """This thread's kept watch if it is on `key_b64` (any other is closed)."""
        with self._lock:
            kept = self._kept.pop(threading.get_ident(), None)
        if kept is not None and kept.key_b64 == key_b64:
            return self.lend(kept)
        if kept is not None:
            kept.close()
        return None

    def lend(self, watch: KeyWatch) -> KeyWatch:
        """`watch`, to be kept by this thread when it is closed without having fired."""
        watch.park = self._keep
        return watch

    def _keep(self, watch: KeyWatch) -> None:
        with self._lock:
            old = self._kept.pop(threading.get_ident(), None)
            self._kept[threading.get_ident()] = watch
        if old is not None:
            old.close()

    def close(self) -> None:
        with self._lock:
            kept, self._kept = list(self._kept.values()), {}
        for watch in kept:
            watch.close()


def _read(line: bytes) -> tuple[bool, str | None, bool]:
    """One message of the stream: whether it is a reason to look, the value it puts if any,
    and whether it confirms the watch."""
    try:
        message = json.loads(line)
    except ValueError:
        return True, None, False
    result = message.get("result") if isinstance(message, dict) else None
    if not isinstance(result, dict):
        return True, None, False  # an error in place of a result: the stream is over
    events = result.get("events") or []
    value = None
    for event in events if isinstance(events, list) else ():
        kv = event.get("kv") if isinstance(event, dict) else None
        if event.get("type", "PUT") == "PUT" and isinstance(kv, dict):
            try:
                value = visible(kv)
            except (ValueError, TypeError, KeyError):
                value = None
    woke = bool(events or result.get("canceled") or result.get("compact_revision"))
    return woke, value, bool(result.get("created"))
