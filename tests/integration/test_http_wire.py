"""http_wire.HttpConnection against a real socket server sending the replies etcd's gateway
sends (Content-Length, chunked, Connection: close) and ones it must refuse."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from launcher.rendezvous.backends.http_wire import HttpConnection, HttpProtocolError, HttpStream

pytestmark = pytest.mark.integration

Reply = Callable[[bytes], bytes]  # request bytes in, reply bytes out


@pytest.fixture
def server() -> Iterator[tuple[int, list[Reply], list[bytes]]]:
    """Answers each request on a connection with the next canned reply; b"" closes it."""
    replies: list[Reply] = []
    seen: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            while replies:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                seen.append(head + reader.read(length))
                reply = replies.pop(0)(seen[-1])
                if not reply:
                    return
                conn.sendall(reply)

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1], replies, seen
    stop.set()
    thread.join(timeout=5)
    listener.close()


def _fixed(body: bytes, extra: str = "") -> Reply:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
    return lambda _req: f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def test_replies_framed_every_way_the_gateway_frames_them(
    server: tuple[int, list[Reply], list[bytes]],
) -> None:
    port, replies, seen = server
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4\r\n{"a"\r\n3;x=1\r\n:1}\r\n0\r\n\r\n'
    )
    replies += [_fixed(b'{"k": 1}'), lambda _r: chunked, _fixed(b"{}", "Connection: close\r\n")]
    conn = HttpConnection("127.0.0.1", port, timeout=5)
    conn.connect()
    assert conn.post("/v3/kv/range", b'{"key": "eA=="}', {"X-T": "1"}, 5) == (200, b'{"k": 1}')
    assert conn.post("/v3/kv/txn", b"{}", {}, 5) == (200, b'{"a":1}')  # one connection
    assert conn.post("/v3/kv/put", b"{}", {}, 5) == (200, b"{}")
    assert conn.sock is None  # the server said Connection: close
    first = seen[0].decode()
    assert first.startswith("POST /v3/kv/range HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{port}\r\n" in first and "X-T: 1\r\n" in first
    assert first.endswith('Content-Length: 15\r\n\r\n{"key": "eA=="}')


def test_a_status_other_than_200_comes_back_with_its_body(
    server: tuple[int, list[Reply], list[bytes]],
) -> None:
    port, replies, _ = server
    body = b'{"code": 14, "message": "etcdserver: no leader"}'
    replies.append(
        lambda _r: (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
    )
    conn = HttpConnection("127.0.0.1", port, timeout=5)
    conn.connect()
    assert conn.post("/v3/kv/range", b"{}", {}, 5) == (503, body)


def test_a_closed_or_garbled_reply_is_an_oserror(
    server: tuple[int, list[Reply], list[bytes]],
) -> None:
    port, replies, _ = server
    replies += [lambda _r: b"", lambda _r: b"SSH-2.0-OpenSSH\r\n\r\n"]
    conn = HttpConnection("127.0.0.1", port, timeout=5)
    conn.connect()
    with pytest.raises(ConnectionResetError):  # closed without a reply: a stale connection
        conn.post("/", b"{}", {}, 5)
    conn = HttpConnection("127.0.0.1", port, timeout=5)
    conn.connect()
    with pytest.raises(HttpProtocolError, match="not an HTTP reply") as err:
        conn.post("/", b"{}", {}, 5)
    assert isinstance(err.value, OSError)  # EtcdStore fails over on it like a broken link


def test_a_reply_that_never_comes_times_out(
    server: tuple[int, list[Reply], list[bytes]],
) -> None:
    port, replies, _ = server
    gate = threading.Event()
    replies.append(lambda _r: (gate.wait(5), b"")[1])
    conn = HttpConnection("127.0.0.1", port, timeout=5)
    conn.connect()
    with pytest.raises(TimeoutError):
        conn.post("/", b"{}", {}, 0.2)
    gate.set()


def test_a_streamed_reply_yields_its_lines_as_they_arrive_in_any_pieces() -> None:
    # A watch's reply: chunked, never-ending, cut anywhere by TCP (a chunk-size line, a
    # chunk, a line across two chunks). HttpStream must give whole lines, no more.
    listener = socket.create_server(("127.0.0.1", 0))
    pieces = [
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{"a":1}',  # head + part
        b"\r\n1\r\n\n\r\n",  # the line's end in a chunk of its own
        b'5\r\n{"b":',  # a line cut mid-chunk ...
        b"\r\n3\r\n2}\n\r",  # ... ending in the next chunk, its CRLF cut too
        b"\n",
        b"0\r\n\r\n",  # the end of the stream
    ]
    sent = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for piece in pieces:
                conn.sendall(piece)
                sent.wait(5)  # one piece per read
                sent.clear()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    conn = HttpConnection("127.0.0.1", listener.getsockname()[1], timeout=5)
    conn.connect()
    stream = HttpStream.open(conn, "/v3/watch", b"{}", {}, 5)
    got: list[bytes] = []
    try:
        assert stream.status == 200
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLIN)
        for _ in pieces[1:-1]:
            sent.set()
            assert poller.poll(5000)
            time.sleep(0.05)  # the whole piece is in
            got += stream.lines()
        sent.set()  # the last chunk
        assert poller.poll(5000)
        time.sleep(0.05)
        with pytest.raises(ConnectionResetError):
            stream.lines()
    finally:
        stream.close()
        sent.set()
        thread.join(timeout=5)
        listener.close()
    assert got == [b'{"a":1}', b'{"b":2}']
