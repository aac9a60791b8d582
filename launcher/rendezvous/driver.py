"""Runs the pure protocol generators against a real Store and a real clock."""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from launcher.errors import RendezvousConnectionError, RendezvousError
from launcher.rendezvous.state import (
    Add,
    CompareSet,
    Feedback,
    Get,
    MultiGet,
    MultiSet,
    Op,
    Set,
    Sleep,
    is_write,
)
from launcher.rendezvous.state.signing import Seal, signed
from launcher.rendezvous.store import Store, Watching

T = TypeVar("T")
_START_WATCH_S = 1.0  # how long a watch started ahead of a sleep (Sleep(0, until)) may take


class Interrupted(Exception):
    """A wakeup fd (a signal to the agent) became readable while the protocol slept."""


def perform(store: Store, op: Op) -> Any:
    if isinstance(op, Get):
        return store.get(op.key)
    if isinstance(op, MultiGet):
        return tuple(store.multi_get(op.keys))
    if isinstance(op, Set):
        store.set(op.key, op.value)
        return None
    if isinstance(op, MultiSet):
        store.multi_set(op.items)
        return None
    if isinstance(op, CompareSet):
        return store.compare_set(op.key, op.expected, op.value)
    if isinstance(op, Add):
        return store.add(op.key, op.delta)
    raise TypeError(f"not a store operation: {op!r}")


class Driver:
    def __init__(
        self,
        store: Store,
        *,
        interrupt_fd: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        seal: Seal | None = None,
    ) -> None:
        self.store = store
        self._interrupt_fd = interrupt_fd
        self._clock = clock
        # With a job secret: values written are sealed, values read checked (signing.py).
        self._seal = seal
        # What the last `run` did before it ended (or failed): how many operations were
        # answered, and whether it sent a write. A caller re-running a failed step needs
        # both: a write may have been applied although its reply never came.
        self.answered = 0
        self.wrote = False

    def run(self, gen: Generator[Op, Feedback, T]) -> T:
        return self._run(gen if self._seal is None else signed(gen, self._seal))

    def _run(self, gen: Generator[Op, Feedback, T]) -> T:
        self.answered, self.wrote = 0, False
        try:
            op = next(gen)
            while True:
                if isinstance(op, Sleep):
                    reply = self.sleep(op.seconds, until=op.until)
                else:
                    self.wrote = self.wrote or is_write(op)
                    try:
                        reply = perform(self.store, op)
                        self.answered += 1
                    except (RuntimeError, OSError, ValueError) as err:
                        # torch's TCPStore raises these (DistStoreError is a RuntimeError)
                        where = getattr(self.store, "endpoint", "")
                        raise RendezvousConnectionError(
                            f"store operation failed{' at ' + where if where else ''}: "
                            f"{first_line(err)}"
                        ) from err
                op = self._step(gen, reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _step(self, gen: Generator[Op, Feedback, T], reply: Any) -> Op:
        """The protocol's next op. A value it cannot parse was not written by an agent of
        this job (without a job secret nothing keeps other writers out): one line, not a
        traceback from deep in the protocol."""
        try:
            return gen.send((reply, self._clock()))
        except (ValueError, KeyError, TypeError) as err:
            where = getattr(self.store, "endpoint", "") or "the rendezvous store"
            raise RendezvousError(
                f"the store at {where} holds a value no agent of this job wrote "
                f"({type(err).__name__}: {first_line(err)[:80]}); another program writes to "
                "it: give the job its own store or endpoint, and a secret "
                "(--rdzv-conf secret_file=PATH), which makes agents ignore such values"
            ) from err

    def sleep(self, seconds: float, *, until: str | None = None) -> str | None:
        """Sleeps; raises Interrupted at once if the interrupt fd becomes readable, and
        returns early once `until` is written, where the store can watch keys: with the
        value written, if the store said (else None)."""
        deadline = self._clock() + seconds  # opening the watch is part of the sleep
        store = self.store if isinstance(self.store, Watching) else None
        if store is not None and until is not None and seconds <= 0:  # only start watching
            started = store.watch(until, _START_WATCH_S)
            if started is None:
                return None
            started.close()  # kept by the store for this thread's next sleep on it
            return started.value
        watch = store.watch(until, seconds) if store is not None and until is not None else None
        if self._interrupt_fd is None and watch is None:
            time.sleep(max(deadline - self._clock(), 0.0))
            return None
        if watch is not None and watch.value is not None:
            watch.close()
            return watch.value  # written between the last read and the watch
        poller = select.poll()
        if self._interrupt_fd is not None:
            poller.register(self._interrupt_fd, select.POLLIN)
        if watch is not None:
            poller.register(watch.fileno(), select.POLLIN)
        try:
            while (remaining := deadline - self._clock()) > 0:
                ready = {fd for fd, _ in poller.poll(remaining * 1000)}
                if self._interrupt_fd in ready:
                    raise Interrupted()
                if watch is not None and watch.fileno() in ready and watch.fired():
                    return watch.value
            return None
        finally:
            if watch is not None:
                watch.close()

    def now(self) -> float:
        return self._clock()


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
