"""One proxied connection: two sockets, two links, and the toxics spliced into each link.

The client's socket and the upstream's each have an asyncio protocol (`Side`). Bytes read on
one side go out through the link of that direction: `upstream` (client -> server) or
`downstream` (server -> client). A link with no toxic writes each chunk straight to the
other transport from `data_received` (the fast path: no task, no copy, no queue). A link
with toxics queues chunks, stamped with their read time, for a pump task that runs them
through the stages; when the last toxic leaves, the pump drains the queue and the fast path
resumes, so bytes never overtake each other. Back-pressure: a full destination buffer or a
long queue pauses reading the source.

When either link ends (EOF on its source, or a toxic closes it) the whole connection closes,
both sockets, as Toxiproxy does (a full close, not a half-close); a connection opened while
a reset_peer toxic exists closes with RST (SO_LINGER 0) whatever the toxicity.
"""

from __future__ import annotations

import asyncio
import collections
import random
import socket
import struct
from collections.abc import Callable, Iterable

from chaos.proxy.errors import ApiError
from chaos.proxy.stages import STAGES, Stage
from chaos.proxy.toxics import DOWNSTREAM, UPSTREAM, ToxicSpec

QUEUE_HIGH = 4 * 1024 * 1024  # bytes queued for a toxic pump before reading pauses
QUEUE_LOW = 1024 * 1024
_LINGER_0 = struct.pack("ii", 1, 0)
_EOF = None


def tune(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY (Nagle would add tens of ms to small writes) and a larger write buffer."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if isinstance(transport, asyncio.WriteTransport):
        transport.set_write_buffer_limits(high=1024 * 1024)


class Side(asyncio.Protocol):
    """One socket of a connection; `link` is the link that reads from it."""

    def __init__(self, on_made: Callable[[Side], None], on_lost: Callable[[], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.link: Link | None = None
        self.into: Link | None = None  # the link that writes to this side
        self._on_made = on_made
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        tune(transport)
        self._on_made(self)

    def data_received(self, data: bytes) -> None:
        if self.link is not None:
            self.link.feed(data)

    def eof_received(self) -> bool:
        if self.link is not None:
            self.link.feed_eof()
        return True  # the connection decides when to close

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()

    def pause_writing(self) -> None:
        if self.into is not None:
            self.into.hold("dest")

    def resume_writing(self) -> None:
        if self.into is not None:
            self.into.release("dest")


class Link:
    """One direction of a connection: reads `source`, writes `dest`, through its stages."""

    def __init__(self, conn: Connection, direction: str, source: Side, dest: Side) -> None:
        assert source.transport is not None and dest.transport is not None
        self.conn = conn
        self.direction = direction
        self.source = source.transport
        self.dest = dest.transport
        source.link = self
        dest.into = self
        self.stages: list[Stage] = []
        self._queue: collections.deque[tuple[bytes, float] | None] = collections.deque()
        self._queued = 0
        self._pump: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._holds: set[str] = set()

    # Reading side: the fast path when no toxic is on the link.
    def feed(self, data: bytes) -> None:
        if self._pump is None:
            self.dest.write(data)
            return
        self._queue.append((data, asyncio.get_running_loop().time()))
        self._queued += len(data)
        if self._queued > QUEUE_HIGH:
            self.hold("queue")
        self._wake()

    def feed_eof(self) -> None:
        if self._pump is None:
            self.conn.close()
            return
        self._queue.append(_EOF)
        self._wake()

    def hold(self, reason: str) -> None:
        if not self._holds:
            self.source.pause_reading()
        self._holds.add(reason)

    def release(self, reason: str) -> None:
        if reason not in self._holds:
            return
        self._holds.discard(reason)
        if not self._holds and not self.source.is_closing():
            self.source.resume_reading()
        if reason == "dest" and self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # Toxics on the live link.
    def add(self, spec: ToxicSpec, rng: random.Random) -> None:
        stage = STAGES[spec.type](spec, self.conn, rng)
        self.stages.append(stage)
        stage.start()
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run())

    def update(self, spec: ToxicSpec) -> None:
        for stage in self.stages:
            if stage.spec.name == spec.name:
                stage.update(spec)

    def remove(self, name: str) -> None:
        for stage in [s for s in self.stages if s.spec.name == name]:
            self.stages.remove(stage)
            stage.remove()
        self._wake()

    def stop(self) -> None:
        for stage in self.stages:
            stage.stop()
        if self._pump is not None:
            self._pump.cancel()

    # The pump.
    def _wake(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._queue:
                    if not self.stages:
                        return  # back to the fast path (nothing queued, so order holds)
                    self._ready = loop.create_future()
                    await self._ready
                    continue
                item = self._queue.popleft()
                if item is None:
                    await self._eof(tuple(self.stages), 0)
                    return
                data, stamp = item
                self._queued -= len(data)
                if self._queued < QUEUE_LOW:
                    self.release("queue")
                await self._through(tuple(self.stages), 0, data, stamp)
        finally:
            self._pump = None

    async def _through(self, stages: tuple[Stage, ...], i: int, data: bytes, stamp: float) -> None:
        while i < len(stages) and (stages[i].removed or not stages[i].active):
            i += 1
        if i == len(stages):
            await self._write(data)
            return

        async def emit(piece: bytes, piece_stamp: float) -> None:
            await self._through(stages, i + 1, piece, piece_stamp)

        await stages[i].chunk(data, stamp, emit)

    async def _eof(self, stages: tuple[Stage, ...], i: int) -> None:
        while i < len(stages) and (stages[i].removed or not stages[i].active):
            i += 1
        if i == len(stages):
            self.conn.close()
            return

        async def emit_eof() -> None:
            await self._eof(stages, i + 1)

        await stages[i].eof(emit_eof)

    async def _write(self, data: bytes) -> None:
        if self.conn.closed:
            return
        self.dest.write(data)
        if "dest" in self._holds:
            self._writable = asyncio.get_running_loop().create_future()
            await self._writable


class Connection:
    """A client connection and its dial to the upstream; `on_close` forgets it."""

    def __init__(self, on_close: Callable[[Connection], None], rng: random.Random) -> None:
        self.client = Side(self._client_made, self.close)
        self.server = Side(self._server_made, self.close)
        self.links: dict[str, Link] = {}
        self.closed = False
        self.rst = False  # close with RST: a reset_peer toxic existed when it opened
        self._on_close = on_close
        self._rng = rng
        self._dial: asyncio.Task[object] | None = None
        self._toxics: Callable[[], Iterable[ToxicSpec]] = tuple
        self._upstream: Callable[[Connection], tuple[str, int]] | None = None

    def start(
        self,
        upstream: Callable[[Connection], tuple[str, int]],
        toxics: Callable[[], Iterable[ToxicSpec]],
    ) -> Side:
        """The protocol for an accepted client; the dial starts when it is made."""
        self._upstream = upstream
        self._toxics = toxics
        return self.client

    def _client_made(self, side: Side) -> None:
        assert side.transport is not None and self._upstream is not None
        side.transport.pause_reading()  # until the upstream is there to take the bytes
        try:
            host, port = self._upstream(self)
        except ApiError:  # an upstream that does not parse is a dial that fails
            self.close()
            return
        loop = asyncio.get_running_loop()
        dial = loop.create_connection(lambda: self.server, host, port)
        self._dial = loop.create_task(dial)
        self._dial.add_done_callback(self._dialled)

    def _dialled(self, task: asyncio.Task[object]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.close()  # Toxiproxy accepts, then closes: the client never sees a refusal

    def _server_made(self, side: Side) -> None:
        # Runs inside create_connection, before the upstream's first byte can arrive.
        if self.closed:
            assert side.transport is not None
            side.transport.close()
            return
        toxics = tuple(self._toxics())
        self.rst = any(spec.type == "reset_peer" for spec in toxics)
        self.links[UPSTREAM] = Link(self, UPSTREAM, self.client, self.server)
        self.links[DOWNSTREAM] = Link(self, DOWNSTREAM, self.server, self.client)
        for spec in toxics:
            self.links[spec.direction].add(spec, self._rng)
        assert self.client.transport is not None
        self.client.transport.resume_reading()

    def close(self) -> None:
        """Both sockets closed (buffered bytes still go out first, unless RST)."""
        if self.closed:
            return
        self.closed = True
        if self._dial is not None and not self._dial.done():
            self._dial.cancel()
        for link in self.links.values():
            link.stop()
        for side in (self.client, self.server):
            if side.transport is None:
                continue
            if self.rst:
                sock = side.transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
                side.transport.abort()
            else:
                side.transport.close()
        self._on_close(self)
