"""One kept-alive HTTP/1.1 connection that POSTs and reads the reply: all EtcdStore needs of
HTTP, on `socket` alone (and `ssl`, only when the connection is TLS: the caller's context).

`http.client` would do, but importing it (with `email` for its header parsing, `ssl`,
`locale`, `calendar`) costs every agent about 20 ms of CPU at start: with a hundred agents
starting on one small machine that is a second before the first round can form, and its
per-reply header parsing is CPU on every store request besides.

The replies etcd's gateway sends: a status line, headers, and a body framed by
Content-Length or chunked; `Connection: close` ends the connection after the reply. A watch's
reply never ends: `HttpStream` reads its chunks as they come, without blocking, so that a
caller can wait for one with poll() beside other descriptors.
"""

from __future__ import annotations

import io
import socket
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import ssl

_MAX_LINE = 64 * 1024  # a status, header or chunk-size line longer than this is not HTTP
_MAX_HEADERS = 100


class HttpProtocolError(OSError):
    """A reply that is not HTTP/1.x as expected: the connection is dropped, the member
    tried again or the next one (an OSError, as a broken connection is)."""


class HttpConnection:
    """POSTs on one connection; not thread-safe (each thread keeps its own)."""

    def __init__(
        self, host: str, port: int, *, timeout: float, context: ssl.SSLContext | None = None
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._context = context
        self.sock: socket.socket | None = None
        self._reader: BinaryIO | None = None

    def connect(self) -> None:
        """TCP, and the TLS handshake, within the connect timeout."""
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock, self._reader = sock, sock.makefile("rb")

    def send(self, path: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
        if self.sock is None:
            raise ConnectionResetError("the connection is closed")
        self.sock.settimeout(timeout)
        host = f"[{self.host}]" if ":" in self.host else self.host
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def post(
        self, path: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes]:
        """Sends the request and reads the whole reply: (status, body)."""
        if self._reader is None:
            raise ConnectionResetError("the connection is closed")
        self.send(path, body, headers, timeout)
        status, fields = _read_head(self._reader)
        data = _read_body(self._reader, fields)
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, data

    def close(self) -> None:
        reader, sock, self._reader, self.sock = self._reader, self.sock, None, None
        if reader is not None:
            reader.close()
        if sock is not None:
            sock.close()


def _line(reader: BinaryIO) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise HttpProtocolError("a line of the reply is too long")
    return line


def _read_head(reader: BinaryIO) -> tuple[int, dict[str, str]]:
    status_line = _line(reader)
    if not status_line:
        # The server closed the connection (it had idled out, or the member stopped).
        raise ConnectionResetError("the server closed the connection without a reply")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HttpProtocolError(f"not an HTTP reply: {status_line[:80]!r}")
    fields: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = _line(reader)
        if line in (b"\r\n", b"\n"):
            return int(parts[1]), fields
        if not line:
            raise ConnectionResetError("the server closed the connection mid-reply")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise HttpProtocolError(f"a malformed header line: {line[:80]!r}")
        fields[name.strip().lower()] = value.strip()
    raise HttpProtocolError(f"more than {_MAX_HEADERS} header lines")


def _read_body(reader: BinaryIO, fields: dict[str, str]) -> bytes:
    if "chunked" in fields.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size_text = _line(reader).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpProtocolError(f"a bad chunk size: {size_text[:20]!r}") from None
            if size == 0:
                while _line(reader) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(_exactly(reader, size))
            _exactly(reader, 2)  # the CRLF after each chunk
    if "content-length" in fields:
        try:
            length = int(fields["content-length"])
        except ValueError:
            raise HttpProtocolError("a bad Content-Length") from None
        return _exactly(reader, length)
    fields["connection"] = "close"  # the body runs to the end of the connection
    return reader.read()


def _exactly(reader: BinaryIO, size: int) -> bytes:
    data = reader.read(size)
    if len(data) != size:
        raise ConnectionResetError("the server closed the connection mid-reply")
    return data


class HttpStream:
    """The reply to one POST whose chunked body runs on (an etcd watch), read as it arrives.

    `fileno()` is the socket's, for poll(); `lines()` takes whatever has arrived without
    blocking and returns the complete newline-ended lines of the body so far (the gateway
    sends one JSON message per line). The head is read when the stream opens.
    """

    def __init__(self, conn: HttpConnection, status: int, rest: bytes) -> None:
        self._conn, self.status = conn, status
        self._raw = bytearray(rest)  # chunked framing not yet taken apart
        self._body = bytearray()  # body bytes short of a whole line

    @classmethod
    def open(
        cls, conn: HttpConnection, path: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> HttpStream:
        """Sends the request on a fresh connection (not its makefile reader: bytes buffered
        there would be invisible to poll) and reads the head, within `timeout`."""
        conn.send(path, body, headers, timeout)
        sock = conn.sock
        assert sock is not None
        head = bytearray()
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("the server closed the connection without a reply")
            head += data
            if len(head) > _MAX_LINE:
                raise HttpProtocolError("the reply's head is too long")
        text, _, rest = bytes(head).partition(b"\r\n\r\n")
        reader = io.BytesIO(text + b"\r\n\r\n")
        status, fields = _read_head(reader)
        if status == 200 and "chunked" not in fields.get("transfer-encoding", "").lower():
            raise HttpProtocolError("a streamed reply that is not chunked")
        sock.setblocking(False)
        return cls(conn, status, rest)

    def fileno(self) -> int:
        sock = self._conn.sock
        return -1 if sock is None else sock.fileno()

    def lines(self) -> list[bytes]:
        """The lines completed since the last call; ConnectionResetError once the server
        has ended the stream."""
        sock = self._conn.sock
        if sock is None:
            raise ConnectionResetError("the stream is closed")
        ended = False
        while True:
            try:
                data = sock.recv(65536)
            except OSError as err:
                # Nothing more for now (TLS: not a whole record yet).
                if isinstance(err, BlockingIOError) or type(err).__name__ == "SSLWantReadError":
                    break
                raise
            if not data:
                ended = True
                break
            self._raw += data
        ended = self._dechunk() or ended
        *done, partial = bytes(self._body).split(b"\n")
        self._body = bytearray(partial)
        if ended and not done:
            raise ConnectionResetError("the server ended the stream")
        return [line for line in done if line.strip()]

    def _dechunk(self) -> bool:
        """Moves every whole chunk from the framing buffer to the body; True at the last."""
        while True:
            end = self._raw.find(b"\r\n")
            if end < 0:
                if len(self._raw) > _MAX_LINE:
                    raise HttpProtocolError("a chunk-size line is too long")
                return False
            size_text = bytes(self._raw[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpProtocolError(f"a bad chunk size: {size_text[:20]!r}") from None
            if size == 0:
                return True
            if len(self._raw) < end + 2 + size + 2:
                return False
            self._body += self._raw[end + 2 : end + 2 + size]
            del self._raw[: end + 2 + size + 2]

    def close(self) -> None:
        self._conn.close()
