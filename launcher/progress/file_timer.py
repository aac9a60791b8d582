"""torch's file-timer watchdog protocol (`FileTimerClient`, `expires(after=...)`), served
without killing anyone.

Workers that use `torch.distributed.elastic.timer` with `TORCHELASTIC_ENABLE_FILE_TIMER=1`
write one JSON object per line into the FIFO at `TORCHELASTIC_TIMER_FILE`: `{"version": 1,
"pid", "scope_id", "expiration_time" (absolute `time.time()`; negative = release), "signal"}`.
Each request is one write of at most PIPE_BUF bytes, so lines from several workers never mix.
torch's server SIGKILLs an expired worker and then its own agent: no restart, orphaned peers.
This one only reports `TimerExpired(pid, scope_id, ...)`; the agent decides (the hang path).

Differences that matter, all deliberate:
- The FIFO is opened O_RDWR | O_NONBLOCK (Linux, fifo(7)): the open never waits for a writer
  (torch's server thread blocks in `open()` until one comes), we hold a reader from the start
  so a client's O_WRONLY | O_NONBLOCK open succeeds, and our own write end means reads never
  see EOF when a client closes, so polling never spins.
- Deadlines are mapped to `time.monotonic()` on receipt, so an NTP step neither fires nor
  postpones every timer at once.
- Only pids in `allowed_pids()` (this agent's workers) are heard; any local process can write
  into a FIFO, and torch trusts the pid it is told. The FIFO is also created mode 0600.
- Pending requests are drained before expiries are judged, so a release already written is
  never reported as an expiry. A background thread (optional) keeps the pipe drained so that
  a busy client never finds it full (torch's client raises BrokenPipeError then).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from launcher.errors import ConfigError

__all__ = [
    "ENABLE_FILE_TIMER_ENV",
    "TIMER_FILE_ENV",
    "FileTimerServer",
    "TimerExpired",
    "default_timer_file_path",
]

ENABLE_FILE_TIMER_ENV = "TORCHELASTIC_ENABLE_FILE_TIMER"
TIMER_FILE_ENV = "TORCHELASTIC_TIMER_FILE"
_MAX_PENDING = 1 << 16  # bytes without a newline before the buffer is declared garbage


def default_timer_file_path() -> Path:
    """Where torch's LocalElasticAgent puts the FIFO when `TORCHELASTIC_TIMER_FILE` is unset."""
    import uuid  # only here: its import (platform included) costs every agent's start

    return Path(tempfile.gettempdir()) / f"watchdog_timer_{uuid.uuid4()}"


@dataclass(frozen=True, kw_only=True)
class TimerExpired:
    pid: int
    scope_id: str  # torch's default is "<caller file>#<line>"
    expired_at: float  # the deadline on this agent's `time.monotonic()` clock
    expiration_time: float  # the deadline as the client sent it (wall-clock seconds)
    signal: int  # what the client asked to be reaped with (<= 0: log only); advice only


class FileTimerServer:
    """The FIFO and its timers, keyed like torch's by (pid, scope_id)."""

    def __init__(
        self,
        path: Path,
        *,
        allowed_pids: Callable[[], Collection[int]],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._allowed_pids = allowed_pids
        self._clock = clock
        self._wall_clock = wall_clock
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a stale FIFO from a dead agent, as torch does
            os.mkfifo(path, 0o600)
        except OSError as err:
            raise ConfigError(
                f"cannot make the file timer's FIFO at {path}: {err.strerror}",
                fix="set it to a path in a directory this agent can write",
                flag="TORCHELASTIC_TIMER_FILE",
            ) from err
        self._inode = path.stat().st_ino
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._pending = b""
        self._timers: dict[tuple[int, str], TimerExpired] = {}
        self.requests = 0
        self.rejected = 0  # from pids that are not this agent's workers
        self.malformed = 0
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopping = False

    def fileno(self) -> int:
        """Readable when requests are waiting, for an agent that polls instead of `start()`."""
        return self._fd

    def start(self) -> None:
        """Keep the FIFO drained from a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="file-timer", daemon=True)
            self._thread.start()

    def read_requests(self) -> int:
        """Read and apply whatever requests are waiting, without blocking; how many lines."""
        with self._lock:
            return self._read_locked()

    def pop_expired(self, now: float) -> list[TimerExpired]:
        """Timers whose deadline is at or before `now` (agent monotonic), earliest first,
        each reported once. Timers of pids no longer allowed (exited workers) are dropped."""
        with self._lock:
            self._read_locked()
            allowed = set(self._allowed_pids())
            expired = []
            for key, timer in list(self._timers.items()):
                if timer.pid not in allowed:
                    del self._timers[key]
                elif timer.expired_at <= now:
                    expired.append(timer)
                    del self._timers[key]
        return sorted(expired, key=lambda timer: (timer.expired_at, timer.pid, timer.scope_id))

    def active(self) -> list[TimerExpired]:
        """The armed timers (what would expire, and when), pending requests applied."""
        with self._lock:
            self._read_locked()
            return sorted(self._timers.values(), key=lambda timer: timer.expired_at)

    def close(self) -> None:
        """Stop the thread, close the FIFO and remove it (unless someone replaced it)."""
        if self._fd < 0:
            return
        self._stopping = True
        if self._thread is not None:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"x")
            self._thread.join(timeout=5.0)
            self._thread = None
        with self._lock:
            os.close(self._fd)
            self._fd = -1
        os.close(self._wake_r)
        os.close(self._wake_w)
        with contextlib.suppress(FileNotFoundError):
            info = self.path.lstat()
            if stat.S_ISFIFO(info.st_mode) and info.st_ino == self._inode:
                self.path.unlink()

    def __enter__(self) -> FileTimerServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping:
            poller.poll()
            if not self._stopping:
                self.read_requests()

    def _read_locked(self) -> int:
        if self._fd < 0:
            return 0
        data = self._pending
        while True:
            try:
                chunk = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        *lines, self._pending = data.split(b"\n")
        if len(self._pending) > _MAX_PENDING:
            self._pending = b""
            self.malformed += 1
        if not lines:
            return 0
        allowed = set(self._allowed_pids())
        for line in lines:
            self._apply(line, allowed)
        return len(lines)

    def _apply(self, line: bytes, allowed: set[int]) -> None:
        self.requests += 1
        request = _parse(line)
        if request is None:
            self.malformed += 1
            return
        pid, scope_id, expiration_time, signal = request
        if pid not in allowed:
            self.rejected += 1
            return
        if expiration_time < 0:  # torch's release
            self._timers.pop((pid, scope_id), None)
            return
        expired_at = self._clock() + (expiration_time - self._wall_clock())
        self._timers[(pid, scope_id)] = TimerExpired(
            pid=pid,
            scope_id=scope_id,
            expired_at=expired_at,
            expiration_time=expiration_time,
            signal=signal,
        )


def _parse(line: bytes) -> tuple[int, str, float, int] | None:
    """(pid, scope_id, expiration_time, signal), or None if it is not a torch request."""
    try:
        request = json.loads(line)
    except ValueError:  # includes JSONDecodeError and bad UTF-8
        return None
    if not isinstance(request, dict):
        return None
    pid = request.get("pid")
    scope_id = request.get("scope_id")
    expiration_time = request.get("expiration_time")
    signal = request.get("signal", 0)
    if isinstance(pid, bool) or not isinstance(pid, int):
        return None
    if isinstance(signal, bool) or not isinstance(signal, int) or not isinstance(scope_id, str):
        return None
    if isinstance(expiration_time, bool) or not isinstance(expiration_time, int | float):
        return None
    if not math.isfinite(expiration_time):
        return None
    return pid, scope_id, float(expiration_time), signal
