"""The HTTP routes of Toxiproxy 2.x, mapped onto a ProxyCollection.

Routes, methods and status codes are Toxiproxy's (create proxy 201, create toxic 200,
delete and reset 204, an unknown path 404 `404 page not found`, a known path with another
method 405); an ApiError becomes `{"error": ..., "status": ...}` plus a newline. An error
this server did not expect is logged and answered 500 in the same shape: the server keeps
running either way.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from chaos.proxy import decode
from chaos.proxy.collection import PopulateError, ProxyCollection
from chaos.proxy.errors import SERVER_ERROR, ApiError
from chaos.proxy.http import Request, Response

VERSION = "2.12.0"  # the Toxiproxy version whose API this one speaks
_LOG = logging.getLogger(__name__)
_JSON = {"Content-Type": "application/json"}
_TEXT = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
# Route shape -> the methods it accepts ("*" stands for a name).
_ROUTES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("proxies",): ("GET", "POST"),
    ("populate",): ("POST",),
    ("reset",): ("POST",),
    ("version",): ("GET",),
    ("proxies", "*"): ("GET", "POST", "PATCH", "DELETE"),
    ("proxies", "*", "toxics"): ("GET", "POST"),
    ("proxies", "*", "toxics", "*"): ("GET", "POST", "PATCH", "DELETE"),
}


def _shape(path: tuple[str, ...]) -> tuple[str, ...] | None:
    if any(not part for part in path):
        return None
    for shape in _ROUTES:
        if len(shape) == len(path) and all(s in ("*", p) for s, p in zip(shape, path, strict=True)):
            return shape
    return None


def _json(status: int, value: Any) -> Response:
    body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(status=status, body=body, headers=_JSON)


def _error(error: ApiError, **extra: Any) -> Response:
    value = {"error": error.message, "status": error.status, **extra}
    body = json.dumps(value, separators=(",", ":")).encode() + b"\n"
    return Response(status=error.status, body=body, headers=_TEXT)


class Api:
    def __init__(self, collection: ProxyCollection) -> None:
        self.collection = collection

    async def handle(self, request: Request) -> Response:
        if request.headers.get("user-agent", "").startswith("Mozilla/"):
            # Toxiproxy refuses browsers, so a web page cannot drive it (CSRF).
            return Response(status=403, body=b"User agent not allowed\n", headers=_TEXT)
        shape = _shape(request.path)
        if shape is None:
            return Response(status=404, body=b"404 page not found\n", headers=_TEXT)
        if request.method not in _ROUTES[shape]:
            return Response(status=405)
        try:
            async with self.collection.lock:
                response = await self._route(shape, request)
        except PopulateError as exc:
            response = _error(exc, proxies=[p.to_json() for p in exc.proxies] or None)
        except ApiError as exc:
            response = _error(exc)
        except Exception as exc:  # a bug here must not take the proxies down with it
            _LOG.exception("%s /%s failed", request.method, "/".join(request.path))
            response = _error(ApiError(SERVER_ERROR, f"internal error: {exc}"))
        request_id = secrets.token_hex(10)
        return Response(
            status=response.status,
            body=response.body,
            headers={**response.headers, "X-Toxiproxy-Request-Id": request_id},
        )

    async def _route(self, shape: tuple[str, ...], request: Request) -> Response:
        coll, method, path = self.collection, request.method, request.path
        if shape == ("version",):
            body = json.dumps({"version": VERSION}).encode() + b"\n"
            return Response(
                status=200, body=body, headers={"Content-Type": "application/json;charset=utf-8"}
            )
        if shape == ("reset",):
            await coll.reset()
            return Response(status=204)
        if shape == ("populate",):
            proxies = await coll.populate(decode.first_value(request.body))
            return _json(201, {"proxies": [p.to_json() for p in proxies] or None})
        if shape == ("proxies",):
            if method == "GET":
                return _json(200, {n: coll.proxies[n].to_json() for n in sorted(coll.proxies)})
            proxy = await coll.create(decode.first_value(request.body))
            return _json(201, proxy.to_json())
        name = path[1]
        proxy = coll.get(name)  # 404 before any complaint about the body, as in Go
        if shape == ("proxies", "*"):
            if method == "GET":
                return _json(200, proxy.to_json())
            if method == "DELETE":
                coll.delete(name)
                return Response(status=204)
            proxy = await coll.update(name, decode.first_value(request.body))
            return _json(200, proxy.to_json())
        if shape == ("proxies", "*", "toxics"):
            if method == "GET":
                return _json(200, proxy.toxics_json())
            spec = coll.add_toxic(name, decode.first_value(request.body))
            return _json(200, spec.to_json())
        toxic = path[3]
        found = proxy.toxic(toxic)
        if method == "GET":
            return _json(200, found.to_json())
        if method == "DELETE":
            proxy.remove_toxic(toxic)
            return Response(status=204)
        spec = coll.update_toxic(name, toxic, decode.first_value(request.body))
        return _json(200, spec.to_json())
