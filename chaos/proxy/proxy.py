"""One proxy: a listener, its live connections, and the toxics they all share.

`start()` binds the listen address and keeps the address it got (so disable then enable, and
`/reset`, bind the same port again); `stop()` closes the listener and then every live
connection, which is what "disabled" means in Toxiproxy (connecting is refused). Toxic
changes are applied to every live link of the toxic's direction at once.

Where a client's bytes go is one method, `upstream_for`: the configured upstream here. A
transparent mode (iptables REDIRECT) would answer with the connection's SO_ORIGINAL_DST
instead; nothing else changes.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from chaos.proxy import address
from chaos.proxy.errors import NOT_FOUND, TOXIC_NOT_FOUND, ApiError
from chaos.proxy.link import Connection
from chaos.proxy.toxics import UPSTREAM, ToxicSpec


class Proxy:
    def __init__(self, *, name: str, listen: str, upstream: str, rng: random.Random) -> None:
        self.name = name
        self.listen = listen  # as given until first bound, then the bound address
        self.upstream = upstream
        self.enabled = False
        self.toxics: list[ToxicSpec] = []  # insertion order
        self.connections: set[Connection] = set()
        self._rng = rng
        self._server: asyncio.Server | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "Logger": {},
            "toxics": self.toxics_json(),
        }

    def toxics_json(self) -> list[dict[str, Any]]:
        """Upstream toxics first, then downstream, each in insertion order (as Go lists them)."""
        ordered = sorted(self.toxics, key=lambda spec: spec.direction != UPSTREAM)
        return [spec.to_json() for spec in ordered]

    # Lifecycle.
    async def start(self) -> None:
        if self.enabled:
            return
        sock, self.listen = address.bind(self.listen)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, sock=sock)
        self.enabled = True

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            conn.close()
        self.enabled = False

    def _accept(self) -> Any:
        conn = Connection(self.connections.discard, self._rng)
        self.connections.add(conn)
        return conn.start(self.upstream_for, lambda: tuple(self.toxics))

    def upstream_for(self, conn: Connection) -> tuple[str, int]:
        """Where this connection's bytes go (the seam for a transparent mode)."""
        host, port = address.split(self.upstream, prefix="")
        return host, port

    # Toxics.
    def toxic(self, name: str) -> ToxicSpec:
        for spec in self.toxics:
            if spec.name == name:
                return spec
        raise ApiError(NOT_FOUND, TOXIC_NOT_FOUND)

    def add_toxic(self, spec: ToxicSpec) -> None:
        self.toxics.append(spec)
        for conn in self.connections:
            if spec.direction in conn.links:
                conn.links[spec.direction].add(spec, self._rng)

    def update_toxic(self, spec: ToxicSpec) -> None:
        self.toxics = [spec if old.name == spec.name else old for old in self.toxics]
        for conn in list(self.connections):
            if spec.direction in conn.links:
                conn.links[spec.direction].update(spec)

    def remove_toxic(self, name: str) -> None:
        spec = self.toxic(name)
        self.toxics.remove(spec)
        for conn in list(self.connections):
            if spec.direction in conn.links:
                conn.links[spec.direction].remove(name)
