"""The small store interface every rendezvous backend implements (the one seam between
the protocol and the network), and an in-memory implementation for one process and tests.

Values are text. Keys are never deleted by the protocol (each round has its own keys).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable


class Store(Protocol):
    def get(self, key: str) -> str | None:
        """The value, or None if absent. Never blocks waiting for the key."""
        ...

    def multi_get(self, keys: Sequence[str]) -> list[str | None]: ...

    def set(self, key: str, value: str) -> None: ...

    def multi_set(self, items: Sequence[tuple[str, str]]) -> None: ...

    def compare_set(self, key: str, expected: str | None, value: str) -> str:
        """Sets `value` if the key holds `expected` (None: absent); returns what it holds."""
        ...

    def add(self, key: str, delta: int) -> int: ...

    def close(self) -> None: ...


class KeyWatch(Protocol):
    """What `watch` returns: a descriptor to poll, readable when something arrived."""

    def fileno(self) -> int: ...

    value: str | None  # once fired by a write: the value written, where the store says

    def fired(self) -> bool:
        """After a readable poll: whether the key was written (or the watch broke)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Watching(Protocol):
    """A store that can report a write as it happens (etcd): an optional capability."""

    def watch(self, key: str, within_s: float) -> KeyWatch | None:
        """A watch for writes to `key` after this thread's last reply, opened within
        `within_s`; None: not now."""
        ...


class MemoryStore:
    """A thread-safe dict with the Store semantics (the `memory` backend)."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._lock = threading.Lock()
        self.ops = 0

    def get(self, key: str) -> str | None:
        with self._lock:
            self.ops += 1
            return self._data.get(key)

    def multi_get(self, keys: Sequence[str]) -> list[str | None]:
        with self._lock:
            self.ops += 1
            return [self._data.get(key) for key in keys]

    def set(self, key: str, value: str) -> None:
        with self._lock:
            self.ops += 1
            self._data[key] = value

    def multi_set(self, items: Sequence[tuple[str, str]]) -> None:
        with self._lock:
            self.ops += 1
            self._data.update(items)

    def compare_set(self, key: str, expected: str | None, value: str) -> str:
        with self._lock:
            self.ops += 1
            if self._data.get(key) == expected:
                self._data[key] = value
            return self._data.get(key, "")

    def add(self, key: str, delta: int) -> int:
        with self._lock:
            self.ops += 1
            total = int(self._data.get(key, "0")) + delta
            self._data[key] = str(total)
            return total

    def close(self) -> None:
        return None
