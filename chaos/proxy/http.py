"""A small HTTP/1.1 server for the API: requests in, responses out, connections kept alive.

Only what Toxiproxy's clients send: a request line, headers, a body by Content-Length or
chunked, keep-alive by default on HTTP/1.1 (`requests` reuses its connection). A connection
idle for 60 s is closed, as the Go server's idle timeout does. The handler is one coroutine;
its exceptions are the caller's business (the API turns them into 500s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

IDLE_TIMEOUT_S = 60.0
MAX_BODY = 16 * 1024 * 1024
REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    500: "Internal Server Error",
}


@dataclass(frozen=True, kw_only=True)
class Request:
    method: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    path: tuple[str, ...]  # percent-decoded segments; "/proxies/a" -> ("proxies", "a")
    headers: Mapping[str, str]  # names lower-cased
    body: bytes


@dataclass(frozen=True, kw_only=True)
class Response:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class _BadRequest(Exception):
    pass


async def _read_body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return bytes(body)
            if len(body) + size > MAX_BODY:
                raise _BadRequest("body too large")
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    length_text = headers.get("content-length", "0").strip()
    if not length_text.isdigit() or int(length_text) > MAX_BODY:
        raise _BadRequest(f"bad Content-Length {length_text!r}")
    return await reader.readexactly(int(length_text))


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request, or None when the client closed between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest("truncated request") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise _BadRequest("request head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(f"bad request line {lines[0]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    try:
        body = await _read_body(reader, headers)
    except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise _BadRequest(str(exc)) from exc
    path = target.split("?", 1)[0]
    segments = tuple(unquote(part) for part in path.split("/")[1:]) if path != "/" else ()
    return Request(
        method=method.upper(), version=version, path=segments, headers=headers, body=body
    )


def _keep_alive(request: Request) -> bool:
    connection = request.headers.get("connection", "").lower()
    if request.version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"


def encode(response: Response, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in response.headers.items()]
    if response.status != 204:  # a 204 carries no body and no length
        lines.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler
) -> None:
    """Requests on one connection, one at a time, until the client or an error ends it."""
    try:
        while True:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT_S):
                    request = await read_request(reader)
            except _BadRequest as exc:
                body = f"400 Bad Request: {exc}".encode()
                writer.write(encode(Response(status=400, body=body), keep_alive=False))
                await writer.drain()
                return
            if request is None:
                return
            keep_alive = _keep_alive(request)
            response = await handler(request)
            writer.write(encode(response, keep_alive))
            await writer.drain()
            if not keep_alive:
                return
    except (TimeoutError, ConnectionError):
        return  # idle, or the client went away mid-request
    finally:
        writer.close()
