"""Signed store values: the seam between the pure protocol and an untrusted store.

With a job secret, every value a protocol step writes is sealed with an HMAC-SHA256 over the
run id, the key and the value (so a value copied to another key, round or job fails), and
every value it reads is checked. `signed(step, seal)` wraps any protocol generator, so the
agent's driver and the simulator share the same code.

A value that fails the check is *ignored*: the reader goes on with the last valid value it
saw under that key (None if it never saw one), and the key goes to `Seal.on_reject` for
the driver to report. A forger therefore cannot make a reader believe a forged round, close,
assignment, dead mark or `done`. Nor can a forged value block a key that nodes compare-and-
set: when the store holds a value that fails the check where a step expected its own view
(absent, or the last valid value), the CAS is re-sent against the forged bytes, which it then
replaces (`_CAS_TRIES` times at most, against a forger that keeps rewriting the key).

Counters (`Add`) stay plain integers: the store adds, no writer can sign the sum. What a
forged increment can and cannot do is in docs/security.md. Heartbeats are not counters: each
node writes its own beat count with `Set`, so they are signed like any value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from launcher.rendezvous.state.model import (
    CompareSet,
    Get,
    MultiGet,
    MultiSet,
    Op,
    Set,
    Sleep,
    is_counter,
)

T = TypeVar("T")

_TAG = "s1."  # versioned: a later scheme can be told apart
_MAC_BYTES = 16  # HMAC-SHA256 truncated to 128 bits (as RFC 2104 section 5 allows)
_MAC_CHARS = 22  # unpadded urlsafe base64 of 16 bytes
_CAS_TRIES = 3


@dataclass
class Seal:
    """One node's signing state: the key, what it last read as valid, what it rejected."""

    secret: bytes
    run_id: str
    # Hears of each key whose value failed the check (the agent reports it, the simulator
    # counts it); it must not block.
    on_reject: Callable[[str], None] = lambda _key: None
    view: dict[str, str] = field(default_factory=dict)  # key -> last valid value read

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError("an empty secret signs nothing")
        self._prefix = f"{len(self.run_id)}:{self.run_id}".encode()

    def mac(self, key: str, value: str) -> str:
        raw = value.encode("utf-8", "surrogateescape")  # garbage read back from bytes
        framed = b"%s%d:%s%s" % (self._prefix, len(key), key.encode(), raw)
        digest = hmac.new(self.secret, framed, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def seal(self, key: str, value: str) -> str:
        return f"{_TAG}{self.mac(key, value)}.{value}"

    def check(self, key: str, raw: str) -> str | None:
        """The value inside `raw` if its seal holds for `key`, else None."""
        head = len(_TAG) + _MAC_CHARS
        if not raw.startswith(_TAG) or len(raw) <= head or raw[head] != ".":
            return None
        value = raw[head + 1 :]
        return value if hmac.compare_digest(raw[len(_TAG) : head], self.mac(key, value)) else None

    def read(self, key: str, raw: str | None) -> str | None:
        """What a protocol step sees for `raw` read under `key` (see the module docstring)."""
        if raw is None:
            return None  # absent: a forger can delete keys, but that needs no seal
        if is_counter(key):  # the store's sums: unsigned, but at least a number
            value = raw if raw.lstrip("-").isdigit() else None
        else:
            value = self.check(key, raw)
        if value is None:
            self.on_reject(key)
            return self.view.get(key)
        self.view[key] = value
        return value


def content(raw: str) -> str:
    """The value inside a sealed one, unchecked (for an observer that sees every write, as
    the simulator's checker does); any other text as it is."""
    head = len(_TAG) + _MAC_CHARS
    if raw.startswith(_TAG) and len(raw) > head and raw[head] == ".":
        return raw[head + 1 :]
    return raw


def signed(step: Generator[Op, Any, T], seal: Seal) -> Generator[Op, Any, T]:
    """`step` with every value it writes sealed and every value it reads checked.

    Exceptions the driver throws in (a failed store operation, an interrupt) reach `step`
    exactly as they would unwrapped."""
    try:
        op = next(step)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    while True:
        try:
            feedback = yield from _perform(op, seal)
        except GeneratorExit:
            step.close()
            raise
        except BaseException as err:  # every throw belongs to `step`
            try:
                op = step.throw(err)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            continue
        try:
            op = step.send(feedback)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def _perform(op: Op, seal: Seal) -> Generator[Op, Any, Any]:
    """Sends `op` (sealed) and returns the feedback `step` should see for it."""
    if isinstance(op, Set):
        return (yield Set(op.key, seal.seal(op.key, op.value)))
    if isinstance(op, MultiSet):
        return (yield MultiSet(tuple((k, seal.seal(k, v)) for k, v in op.items)))
    if isinstance(op, Get):
        raw, now = yield op
        return seal.read(op.key, raw), now
    if isinstance(op, MultiGet):
        raws, now = yield op
        return tuple(seal.read(k, r) for k, r in zip(op.keys, raws, strict=True)), now
    if isinstance(op, CompareSet):
        return (yield from _compare_set(op, seal))
    if isinstance(op, Sleep) and op.until is not None:
        raw, now = yield op  # the value that woke it, if the store said: as if read
        return seal.read(op.until, raw), now
    return (yield op)  # Add, Sleep: nothing to seal


def _compare_set(op: CompareSet, seal: Seal) -> Generator[Op, Any, Any]:
    desired = seal.seal(op.key, op.value)
    expected = None if op.expected is None else seal.seal(op.key, op.expected)
    for _ in range(_CAS_TRIES):
        raw, now = yield CompareSet(op.key, expected, desired)
        if raw == desired:
            seal.view[op.key] = op.value
            return op.value, now
        if not raw:
            return raw, now  # absent (etcd answers ""): nothing to check, as unsigned
        value = seal.check(op.key, raw)
        if value is not None:
            seal.view[op.key] = value
            return value, now  # a valid current value: an honest CAS lost, as unsigned
        seal.on_reject(op.key)
        if seal.view.get(op.key) != op.expected:
            return seal.view.get(op.key), now  # the step's expectation failed anyway
        expected = raw  # a forgery sits where the step expected its view: replace it
    return seal.view.get(op.key), now
