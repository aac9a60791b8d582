"""The simulated store: MemoryStore's semantics (launcher/rendezvous/store.py), applied at
the moment a request reaches it, with every operation counted per node (ops and bytes).

Bytes are what crosses the wire, roughly: keys, values and the reply's text. The store
tells its observer about the writes the safety checker needs (the round key moving, a
round's close decision and the closer's update of it, a node declared dead); nothing else
pays for that hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from launcher.rendezvous.state import (
    Add,
    CompareSet,
    Get,
    Keys,
    MultiGet,
    MultiSet,
    Op,
    Set,
    round_of,
)
from launcher.rendezvous.state.signing import content


class StoreObserver(Protocol):
    def on_round_key(self, old: int, new: int, value: str) -> None: ...

    def on_close(self, rnd: int, decision: str) -> None: ...

    def on_dead(self, node_id: str, why: str) -> None: ...


class SimStore:
    def __init__(self, run_id: str, nodes: int, observer: StoreObserver) -> None:
        keys = Keys(run_id)
        self._round_key = keys.round
        self._dead_prefix = keys.dead("")
        self._round_prefix = keys.prefix + "r"
        self.data: dict[str, str] = {}
        self.observer = observer
        self.ops = [0] * nodes  # per node, all time
        self.bytes = [0] * nodes
        self.ops_total = 0
        self.bytes_total = 0
        self._apply: dict[type, Callable[[Any], tuple[Any, int]]] = {
            Get: self._get,
            Add: self._add,
            Set: self._set,
            CompareSet: self._compare_set,
            MultiGet: self._multi_get,
            MultiSet: self._multi_set,
        }

    def value(self, key: str) -> str | None:
        """What `key` holds, its seal (if any) taken off: the checker's omniscient view."""
        raw = self.data.get(key)
        return None if raw is None else content(raw)

    def apply(self, op: Op, node: int) -> tuple[Any, int]:
        """Performs `op` for `node`; returns the reply and the bytes it moved."""
        reply, size = self._apply[type(op)](op)
        self.ops[node] += 1
        self.bytes[node] += size
        self.ops_total += 1
        self.bytes_total += size
        return reply, size

    def wipe(self) -> None:
        self.data.clear()

    # -- MemoryStore's semantics -----------------------------------------------------------
    def _get(self, op: Get) -> tuple[str | None, int]:
        value = self.data.get(op.key)
        return value, len(op.key) + (len(value) if value is not None else 0)

    def _add(self, op: Add) -> tuple[int, int]:
        total = int(self.data.get(op.key, "0")) + op.delta
        text = str(total)
        self.data[op.key] = text
        return total, len(op.key) + 2 * len(text)

    def _set(self, op: Set) -> tuple[None, int]:
        self.data[op.key] = op.value
        if op.key.startswith(self._dead_prefix):
            self.observer.on_dead(op.key[len(self._dead_prefix) :], content(op.value))
        return None, len(op.key) + len(op.value)

    def _compare_set(self, op: CompareSet) -> tuple[str, int]:
        held = self.data.get(op.key)
        if held == op.expected:
            self.data[op.key] = op.value
            if op.key == self._round_key:
                old, new = round_of(_plain(held)), round_of(content(op.value))
                self.observer.on_round_key(old, new, content(op.value))
            elif self._is_close(op.key):
                self.observer.on_close(self._round_in(op.key), content(op.value))
            held = op.value
        reply = held if held is not None else ""
        size = len(op.key) + len(op.expected or "") + len(op.value) + len(reply)
        return reply, size

    def _multi_get(self, op: MultiGet) -> tuple[tuple[str | None, ...], int]:
        get = self.data.get
        values = tuple(get(key) for key in op.keys)
        size = sum(map(len, op.keys)) + sum(len(v) for v in values if v is not None)
        return values, size

    def _multi_set(self, op: MultiSet) -> tuple[None, int]:
        self.data.update(op.items)
        for key, value in op.items:
            if self._is_close(key):  # the closer's update after leaving a node out
                self.observer.on_close(self._round_in(key), content(value))
        return None, sum(len(k) + len(v) for k, v in op.items)

    def _is_close(self, key: str) -> bool:
        return key.endswith("/close") and key.startswith(self._round_prefix)

    def _round_in(self, key: str) -> int:
        return int(key[len(self._round_prefix) :].split("/", 1)[0])


def _plain(raw: str | None) -> str | None:
    if raw is None:
        return None
    text = content(raw)
    return text if text[:1].isdigit() else None  # a forgery held there: no round of ours
