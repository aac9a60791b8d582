"""The server: the HTTP API and every proxy on one asyncio event loop.

`ProxyServer` is the in-process form (await `start()` on a running loop); `serve_in_thread`
runs one on its own loop in a daemon thread and hands back a `ServerHandle` for code that is
not async (the harness, tests). `chaos proxy serve` runs it in the foreground.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.proxy import address
from chaos.proxy.api import Api
from chaos.proxy.collection import ProxyCollection
from chaos.proxy.errors import ApiError
from chaos.proxy.http import serve_connection

START_TIMEOUT_S = 10.0


class ProxyServerError(RuntimeError):
    """The server could not start: the API address, or the config file, was refused."""

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"cannot serve the proxy API on {endpoint}: {reason}")


class ProxyServer:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8474,
        seed: int | None = None,
        unix: Path | None = None,
    ):
        self.host = host
        self.port = port
        # The API on a unix socket instead: a file is reached from every network namespace,
        # so the harness drives a proxy that runs inside a node's namespace or container.
        self.unix = unix
        self.collection = ProxyCollection(random.Random(seed))
        self._api = Api(self.collection)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        if self.unix is not None:
            return f"unix:{self.unix}"
        return f"http://{address.display(self.host, self.port)}"

    async def start(self) -> None:
        """Bind the API (port 0 picks a free one; `port` then says which)."""
        loop = asyncio.get_running_loop()
        if self.unix is not None:
            try:
                self.unix.unlink(missing_ok=True)
                self._server = await loop.create_unix_server(self._protocol, path=str(self.unix))
            except OSError as exc:
                raise ProxyServerError(str(self.unix), exc.strerror or str(exc)) from exc
            return
        endpoint = address.display(self.host, self.port)
        try:
            sock, bound = address.bind(endpoint)
        except ApiError as exc:
            raise ProxyServerError(endpoint, exc.message.rpartition(": ")[2]) from exc
        self.port = int(bound.rpartition(":")[2])
        self._server = await loop.create_server(self._protocol, sock=sock)

    def _protocol(self) -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader()

        async def connected(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await serve_connection(r, w, self._api.handle)

        return asyncio.StreamReaderProtocol(reader, connected)

    async def populate(self, proxies: Any) -> None:
        """Proxies from a list like `POST /populate`'s body (for `--config FILE`)."""
        async with self.collection.lock:
            await self.collection.populate(proxies)

    async def stop(self) -> None:
        """The API closed, every proxy stopped and its connections closed."""
        if self._server is not None:
            self._server.close()
            self._server = None
            if self.unix is not None:
                self.unix.unlink(missing_ok=True)
        async with self.collection.lock:
            self.collection.close()
        await asyncio.sleep(0)  # let the closed transports run connection_lost


@dataclass(frozen=True, kw_only=True)
class ServerHandle:
    """A ProxyServer running on its own loop in a daemon thread."""

    server: ProxyServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self.thread.is_alive():
            return
        done = asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop)
        done.result(timeout_s)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout_s)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(
    host: str = "127.0.0.1", port: int = 0, *, seed: int | None = None, unix: Path | None = None
) -> ServerHandle:
    """Start a server in a daemon thread; returns once the API listens (the handle says on
    which port: 0 picks a free one). Raises ProxyServerError if the address is refused."""
    server = ProxyServer(host=host, port=port, seed=seed, unix=unix)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)
            loop.close()
            return
        finally:
            ready.set()
        loop.run_forever()
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    thread = threading.Thread(target=run, name=f"chaos-proxy-{port}", daemon=True)
    thread.start()
    if not ready.wait(START_TIMEOUT_S):
        raise ProxyServerError(address.display(host, port), "did not start in time")
    if failure:
        thread.join()
        raise failure[0]
    return ServerHandle(server=server, loop=loop, thread=thread)


@contextmanager
def running(
    host: str = "127.0.0.1", port: int = 0, *, seed: int | None = None, unix: Path | None = None
) -> Iterator[ServerHandle]:
    """`serve_in_thread` as a context manager: stopped on exit."""
    handle = serve_in_thread(host, port, seed=seed, unix=unix)
    try:
        yield handle
    finally:
        handle.stop()
