"""Copies tee'd worker output from pipes to log files and to the console, line by line.

torchrun tails the log files every 0.1 s, so a line written in pieces can come out split,
each piece with its own prefix. Reading the worker's pipe directly gives whole lines with
one prefix each, and the file still receives every byte even if the console is filtered.
One thread serves every pipe of the agent.
"""

from __future__ import annotations

import os
import selectors
import threading
from dataclasses import dataclass, field

from launcher.workers.logs import StreamRoute, open_for_append

_CHUNK = 65536


@dataclass
class _Sink:
    route: StreamRoute
    file_fd: int
    dup_fd: int
    partial: bytes = b""
    closed: threading.Event = field(default_factory=threading.Event)


class OutputPump:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._pending: list[tuple[int, _Sink]] = []
        self._sinks: dict[int, _Sink] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="output-pump", daemon=True)
        self._thread.start()

    def add(self, read_fd: int, route: StreamRoute) -> threading.Event:
        """Starts copying from `read_fd` (which the pump now owns); the event is set at EOF."""
        file_fd = open_for_append(route.path) if route.path is not None else -1
        dup_fd = open_for_append(route.duplicate_path) if route.duplicate_path else -1
        sink = _Sink(route=route, file_fd=file_fd, dup_fd=dup_fd)
        with self._lock:
            self._pending.append((read_fd, sink))
        os.write(self._wake_w, b"x")
        return sink.closed

    def stop(self) -> None:
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not (self._stopping and not self._sinks):
            for key, _ in self._selector.select(timeout=0.5 if self._stopping else None):
                if key.fd == self._wake_r:
                    self._take_pending()
                else:
                    self._read(key.fd)
            if self._stopping and self._sinks:
                # The launcher is exiting: whatever is still open belongs to dead workers'
                # stragglers; flush what we have rather than wait forever.
                for fd in list(self._sinks):
                    self._close(fd)

    def _take_pending(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            pending, self._pending = self._pending, []
        for fd, sink in pending:
            self._sinks[fd] = sink
            self._selector.register(fd, selectors.EVENT_READ, None)

    def _read(self, fd: int) -> None:
        sink = self._sinks[fd]
        try:
            data = os.read(fd, _CHUNK)
        except OSError:
            data = b""
        if not data:
            self._close(fd)
            return
        if sink.file_fd >= 0:
            os.write(sink.file_fd, data)
        data = sink.partial + data
        *lines, sink.partial = data.split(b"\n")
        if lines:
            self._emit(sink, lines)

    def _emit(self, sink: _Sink, lines: list[bytes]) -> None:
        prefix = sink.route.prefix
        out = b"".join(prefix + line + b"\n" for line in lines)
        _write_all(sink.route.console_fd, out)
        if sink.dup_fd >= 0:
            keep = [
                line + b"\n"
                for line in lines
                if any(f.encode() in line for f in sink.route.duplicate_filters)
            ]
            if keep:
                os.write(sink.dup_fd, b"".join(keep))

    def _close(self, fd: int) -> None:
        sink = self._sinks.pop(fd)
        self._selector.unregister(fd)
        os.close(fd)
        if sink.partial:
            self._emit(sink, [sink.partial])
            sink.partial = b""
        for owned in (sink.file_fd, sink.dup_fd):
            if owned >= 0:
                os.close(owned)
        sink.closed.set()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        except OSError:
            return  # console gone (closed pipe): the file copy is what matters
        view = view[written:]
