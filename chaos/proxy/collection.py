"""Every proxy of a server, and the operations of the API on them, with Toxiproxy's rules.

Each operation takes the decoded JSON body, checks it in Toxiproxy's order, and raises
ApiError with Toxiproxy's code and message; the HTTP layer only maps routes to these. All run
on the server's event loop under one lock, as the Go server holds its collection's mutex.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from chaos.proxy import address, decode
from chaos.proxy.errors import (
    BAD_REQUEST,
    CONFLICT,
    NOT_FOUND,
    PROXY_EXISTS,
    PROXY_NOT_FOUND,
    ApiError,
    missing_field,
)
from chaos.proxy.proxy import Proxy
from chaos.proxy.toxics import ToxicSpec, new_toxic, updated_toxic

_PROXY = "Proxy"  # Go's struct name, for decode errors


class PopulateError(ApiError):
    """A populate that stopped part-way: the proxies handled before the failure."""

    def __init__(self, error: ApiError, proxies: list[Proxy]) -> None:
        super().__init__(error.status, error.message)
        self.proxies = proxies


class ProxyCollection:
    def __init__(self, rng: random.Random) -> None:
        self.proxies: dict[str, Proxy] = {}
        self.lock = asyncio.Lock()
        self._rng = rng

    def get(self, name: str) -> Proxy:
        if name not in self.proxies:
            raise ApiError(NOT_FOUND, PROXY_NOT_FOUND)
        return self.proxies[name]

    def _config(self, body: Any, where: str) -> tuple[str, str, str, bool]:
        fields = decode.struct(body, where)
        return (
            decode.string(fields, "name", _PROXY, ""),
            decode.string(fields, "listen", _PROXY, ""),
            decode.string(fields, "upstream", _PROXY, ""),
            decode.boolean(fields, "enabled", _PROXY, True),
        )

    async def create(self, body: Any) -> Proxy:
        name, listen, upstream, enabled = self._config(body, "toxiproxy.Proxy")
        if not name:
            raise missing_field("name")
        if not upstream:
            raise missing_field("upstream")
        if name in self.proxies:
            raise ApiError(CONFLICT, PROXY_EXISTS)
        proxy = Proxy(name=name, listen=listen, upstream=upstream, rng=self._rng)
        if enabled:
            await proxy.start()  # a bind failure (500) leaves nothing stored
        self.proxies[name] = proxy
        return proxy

    async def update(self, name: str, body: Any) -> Proxy:
        proxy = self.get(name)
        fields = decode.struct(body, "toxiproxy.Proxy")
        listen = decode.string(fields, "listen", _PROXY, proxy.listen)
        upstream = decode.string(fields, "upstream", _PROXY, proxy.upstream)
        enabled = decode.boolean(fields, "enabled", _PROXY, proxy.enabled)
        if address.resolve(listen) != proxy.listen or upstream != proxy.upstream:
            proxy.stop()  # a new address or upstream drops every live connection
            proxy.listen, proxy.upstream = listen, upstream
        if enabled and not proxy.enabled:
            await proxy.start()
        elif not enabled and proxy.enabled:
            proxy.stop()
        return proxy

    def delete(self, name: str) -> None:
        self.get(name).stop()
        del self.proxies[name]

    async def reset(self) -> None:
        """Every proxy enabled (a bind failure stops part-way, 500) and stripped of toxics."""
        for proxy in list(self.proxies.values()):
            await proxy.start()
            for spec in list(proxy.toxics):
                proxy.remove_toxic(spec.name)

    async def populate(self, body: Any) -> list[Proxy]:
        if body is not None and not isinstance(body, list):
            kind = decode.json_kind(body).split()[0]
            raise ApiError(
                BAD_REQUEST,
                f"bad request body: json: cannot unmarshal {kind} into Go value of type "
                "[]toxiproxy.Proxy",
            )
        configs = [self._config(item, "toxiproxy.Proxy") for item in body or []]
        for index, (name, _, upstream, _) in enumerate(configs, start=1):
            if not name:
                raise missing_field(f"name at proxy {index}")
            if not upstream:
                raise missing_field(f"upstream at proxy {index}")
        done: list[Proxy] = []
        for name, listen, upstream, enabled in configs:
            try:
                done.append(await self._add_or_replace(name, listen, upstream, enabled))
            except ApiError as exc:
                raise PopulateError(exc, done) from exc
        return done

    async def _add_or_replace(self, name: str, listen: str, upstream: str, enabled: bool) -> Proxy:
        existing = self.proxies.get(name)
        if existing is not None:
            if address.resolve(listen) == existing.listen and upstream == existing.upstream:
                return existing  # untouched: toxics and enabled state stay
            existing.stop()
        proxy = Proxy(name=name, listen=listen, upstream=upstream, rng=self._rng)
        if enabled:
            await proxy.start()
        self.proxies[name] = proxy
        return proxy

    # Toxics.
    def add_toxic(self, name: str, body: Any) -> ToxicSpec:
        proxy = self.get(name)
        spec = new_toxic(body, {spec.name for spec in proxy.toxics})
        proxy.add_toxic(spec)
        return spec

    def update_toxic(self, name: str, toxic: str, body: Any) -> ToxicSpec:
        proxy = self.get(name)
        spec = updated_toxic(proxy.toxic(toxic), body)
        proxy.update_toxic(spec)
        return spec

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()
