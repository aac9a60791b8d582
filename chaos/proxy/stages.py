"""What each toxic does to the bytes of one link (one direction of one connection).

A link passes each chunk it reads (with its read time) through its stages in order; a stage
awaits `emit` for every piece it lets through, so one chunk is in one place at a time and a
stage that sleeps holds back what follows, as Toxiproxy's chained goroutines do. A stage
that lost its toxicity draw passes everything through. `interrupt()` ends a sleep at once
(the held chunk goes on), as Go's stages flush on a chain change.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable
from typing import Protocol

from chaos.proxy.toxics import ToxicSpec

Emit = Callable[[bytes, float], Awaitable[None]]
EmitEof = Callable[[], Awaitable[None]]


class Closer(Protocol):
    """The connection a stage may end."""

    def close(self) -> None: ...


class Stage:
    """One toxic on one link: its spec, this link's toxicity draw, and the toxic's state."""

    def __init__(self, spec: ToxicSpec, conn: Closer, rng: random.Random) -> None:
        self.spec = spec
        self.conn = conn
        self.rng = rng
        self.removed = False
        self.active = rng.random() < spec.toxicity
        self._waiter: asyncio.Future[None] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def attr(self, key: str) -> int:
        return self.spec.attributes[key]

    def start(self) -> None:
        """The stage meets the link (new connection, toxic added, or updated)."""

    def stop(self) -> None:
        """The link is gone or the toxic left it: drop timers."""

    def update(self, spec: ToxicSpec) -> None:
        self.spec = spec
        self.active = self.rng.random() < spec.toxicity  # Go re-draws when a stage restarts
        self.interrupt()
        self.stop()
        self.start()

    def remove(self) -> None:
        self.removed = True
        self.interrupt()
        self.stop()

    def interrupt(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def sleep(self, delay_s: float) -> None:
        """A sleep that `interrupt()` cuts short."""
        if delay_s <= 0 or self.removed:
            return
        waiter = self.loop.create_future()
        self._waiter = waiter
        handle = self.loop.call_later(delay_s, _wake, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None

    async def chunk(self, data: bytes, stamp: float, emit: Emit) -> None:
        await emit(data, stamp)

    async def eof(self, emit_eof: EmitEof) -> None:
        await emit_eof()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Latency(Stage):
    async def chunk(self, data: bytes, stamp: float, emit: Emit) -> None:
        delay_ms = self.attr("latency")
        jitter = self.attr("jitter")
        if jitter > 0:
            delay_ms += self.rng.randrange(2 * jitter) - jitter
        # Due at read time + delay, so a link's chunks keep their spacing (no added gaps).
        await self.sleep(stamp + delay_ms / 1000 - self.loop.time())
        await emit(data, self.loop.time())


class Bandwidth(Stage):
    """`rate` KB/s: a debt of len/rate accumulates per chunk and is slept off, corrected for
    oversleep; big chunks go as rate*100 bytes every 100 ms; rate 0 holds data for good."""

    debt_s = 0.0

    async def chunk(self, data: bytes, stamp: float, emit: Emit) -> None:
        rate = self.attr("rate")
        if rate <= 0:
            while self.attr("rate") <= 0 and not self.removed:
                await self.sleep(0.1)  # stalled until updated or removed, then it flows
            if self.removed:
                await emit(data, stamp)
                return
            rate = self.attr("rate")
        self.debt_s += len(data) / (rate * 1000)
        piece = rate * 100
        while len(data) > piece and not self.removed:
            await self.sleep(0.1)
            await emit(data[:piece], stamp)
            data = data[piece:]
            self.debt_s -= 0.1
        start = self.loop.time()
        await self.sleep(self.debt_s)
        self.debt_s -= self.loop.time() - start
        await emit(data, stamp)


class SlowClose(Stage):
    async def eof(self, emit_eof: EmitEof) -> None:
        await self.sleep(self.attr("delay") / 1000)
        await emit_eof()


class Timeout(Stage):
    """Black hole: every chunk is dropped. With timeout > 0 the connection closes after that
    long without an incoming chunk; removing the toxic closes the connections it held, since
    their streams lost bytes."""

    _timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._arm()

    def _arm(self) -> None:
        self.stop()
        if self.active and not self.removed and self.attr("timeout") > 0:
            self._timer = self.loop.call_later(self.attr("timeout") / 1000, self.conn.close)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def remove(self) -> None:
        super().remove()
        if self.active:
            self.conn.close()

    async def chunk(self, data: bytes, stamp: float, emit: Emit) -> None:
        self._arm()

    async def eof(self, emit_eof: EmitEof) -> None:
        self.conn.close()


class ResetPeer(Stage):
    """The first chunk (or EOF) is dropped, then after `timeout` ms the connection closes;
    connections opened while the toxic exists close with RST (see Connection)."""

    async def _reset(self) -> None:
        await asyncio.sleep(self.attr("timeout") / 1000)  # not interruptible, as in Go
        self.conn.close()

    async def chunk(self, data: bytes, stamp: float, emit: Emit) -> None:
        await self._reset()

    async def eof(self, emit_eof: EmitEof) -> None:
        await self._reset()


class Slicer(Stage):
    def cuts(self, size: int) -> list[int]:
        """Piece boundaries: halve around the midpoint (± size_variation) until a piece is no
        longer than average_size + size_variation; a piece is never empty."""
        average, variation = self.attr("average_size"), self.attr("size_variation")
        bounds = [0]
        pending = [(0, size)]
        while pending:
            start, end = pending.pop()
            if end - start - average <= variation or end - start < 2:
                bounds.append(end)
                continue
            offset = self.rng.randrange(2 * variation) - variation if variation > 0 else 0
            mid = min(max(start + (end - start) // 2 + offset, start + 1), end - 1)
            pending += [(mid, end), (start, mid)]  # left half first
        return bounds

    async def chunk(self, data: bytes, stamp: float, emit: Emit) -> None:
        bounds = self.cuts(len(data))
        for start, end in itertools.pairwise(bounds):
            await emit(data[start:end], stamp)
            if self.attr("delay") > 0:
                await self.sleep(self.attr("delay") / 1_000_000)


class LimitData(Stage):
    sent = 0  # survives updates; a new link or a new toxic starts from 0

    async def chunk(self, data: bytes, stamp: float, emit: Emit) -> None:
        left = max(self.attr("bytes") - self.sent, 0)
        data = data[:left]
        if data:
            self.sent += len(data)
            await emit(data, stamp)
        if self.sent >= self.attr("bytes"):
            self.conn.close()


STAGES: dict[str, type[Stage]] = {
    "latency": Latency,
    "bandwidth": Bandwidth,
    "slow_close": SlowClose,
    "timeout": Timeout,
    "reset_peer": ResetPeer,
    "slicer": Slicer,
    "limit_data": LimitData,
    "noop": Stage,
}
