"""Progress signals from training scripts, and the agent's hang and straggler detection.

A worker says it advanced with `beat(step=i)`, opens named deadlines with `phase(name,
timeout=...)` (a checkpoint, an evaluation) and times compute with `section(name)`. The
launcher exports `LAUNCHER_PROGRESS_FILE`; the first call mmaps that per-rank file and every
later call is a single in-place store into it (layout.py has the byte table), so a beat costs
~0.3 us (bench/progress_beat.py), never blocks and never raises, even when the agent is gone.
Without the variable every call is a no-op, so the same script runs under torchrun. torch's
opt-in watchdog (`expires()`) is no substitute: it SIGKILLs the worker and then torchrun itself.

Standard library only: user scripts import this module, and it must not pull in torch.

Layering (the agent imports the lower layers; nothing here imports the agent):

    __init__       the worker-side API (this module)
    reader         a progress file -> a RankProgress snapshot (agent side)
    detector       snapshots over time -> armed / stalled / hang; blame across ranks (pure)
    stragglers     section times -> per-window scores -> straggler events (pure)
    file_timer     torch's FileTimerClient FIFO protocol, served without killing anyone
    layout         the file's byte layout, shared by this module and the reader
"""

from __future__ import annotations

import atexit
import itertools
import mmap
import os
import struct
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType

from launcher.progress.layout import (
    BEAT,
    BEAT_OFFSET,
    FILE_SIZE,
    HEADER,
    MAGIC,
    NAME_BYTES,
    NO_TIMEOUT,
    PHASE,
    PHASE_OFFSET,
    SECTION,
    SECTION_SLOTS,
    VERSION,
    WARMUP_BEATS,
    section_offset,
)

__all__ = ["PROGRESS_FILE_ENV", "beat", "enabled", "phase", "section"]

PROGRESS_FILE_ENV = "LAUNCHER_PROGRESS_FILE"

# A bad argument (a step that is not an int) loses that one value; a broken file (closed,
# unmappable) turns the channel off with one line on stderr. Nothing reaches the training loop.
_BAD_VALUE = (struct.error, TypeError, ValueError, OverflowError)
_BROKEN = (OSError, ValueError, BufferError)
_NULL: AbstractContextManager[None] = nullcontext()
_monotonic = time.monotonic


class _Channel:
    """This process's progress file, with the running aggregates that go into it."""

    def __init__(self, path: str) -> None:
        # The agent leaves the directory to the first worker that beats: a job that never
        # does gets no empty progress/ beside its attempt_N directories.
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, 0)  # a previous worker's data must not look like ours
            os.ftruncate(fd, FILE_SIZE)
            self._mm = mmap.mmap(fd, FILE_SIZE)
        finally:
            os.close(fd)
        now = _monotonic()
        HEADER.pack_into(self._mm, 0, b"", VERSION, os.getpid(), now)
        BEAT.pack_into(self._mm, BEAT_OFFSET, 0, -1, 0.0, 0.0, 0, 0)
        PHASE.pack_into(self._mm, PHASE_OFFSET, 0, b"", NO_TIMEOUT, 0.0, 0)
        self._mm[0 : len(MAGIC)] = MAGIC  # last: a reader ignores the file until it is whole
        self._seq = itertools.count(1)
        self._pack_beat = BEAT.pack_into
        self._since = now  # start of the current beat interval (phases restart it)
        self._beats = 0
        self._step = -1
        self._longest = 0.0
        self._phases: list[tuple[bytes, float, float]] = []
        self._slots: dict[str, int] = {}
        self._sections: list[tuple[bytes, int, float]] = []  # (name, count, total_s) per slot

    def beat(self, step: int | None) -> None:
        now = _monotonic()
        gap = now - self._since
        self._since = now
        beats = self._beats + 1
        self._beats = beats
        if beats > WARMUP_BEATS and gap > self._longest and not self._phases:
            self._longest = gap
        seq = next(self._seq)
        if step is None:
            step = self._step
        try:
            self._pack_beat(self._mm, BEAT_OFFSET, seq, step, now, self._longest, beats, seq)
        except _BAD_VALUE:
            step = self._step
            self._pack_beat(self._mm, BEAT_OFFSET, seq, step, now, self._longest, beats, seq)
        self._step = step

    def enter_phase(self, name: bytes, timeout_s: float) -> None:
        now = _monotonic()
        self._phases.append((name, timeout_s, now))
        self._write_phase(name, timeout_s, now)

    def exit_phase(self) -> None:
        now = _monotonic()
        if self._phases:
            self._phases.pop()
        self._since = now  # time inside a phase is not a step interval
        if self._phases:
            self._write_phase(*self._phases[-1])
        else:
            self._write_phase(b"", NO_TIMEOUT, now)

    def _write_phase(self, name: bytes, timeout_s: float, at: float) -> None:
        seq = next(self._seq)
        PHASE.pack_into(self._mm, PHASE_OFFSET, seq, name, timeout_s, at, seq)

    def slot(self, name: str) -> int:
        """The section slot for `name`, claimed on first use; -1 once the table is full."""
        slot = self._slots.get(name)
        if slot is None:
            slot = len(self._sections) if len(self._sections) < SECTION_SLOTS else -1
            if slot >= 0:
                self._sections.append((_encode(name), 0, 0.0))
                self._write_section(slot, 0.0)
            self._slots[name] = slot
        return slot

    def record_section(self, slot: int, duration_s: float) -> None:
        name, count, total_s = self._sections[slot]
        self._sections[slot] = (name, count + 1, total_s + duration_s)
        self._write_section(slot, duration_s)

    def _write_section(self, slot: int, last_s: float) -> None:
        name, count, total_s = self._sections[slot]
        seq = next(self._seq)
        SECTION.pack_into(self._mm, section_offset(slot), seq, name, count, total_s, last_s, seq)


class _Phase:
    __slots__ = ("_channel", "_name", "_timeout_s")

    def __init__(self, channel: _Channel, name: bytes, timeout_s: float) -> None:
        self._channel = channel
        self._name = name
        self._timeout_s = timeout_s

    def __enter__(self) -> None:
        try:
            self._channel.enter_phase(self._name, self._timeout_s)
        except _BROKEN as exc:
            _disable(exc)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._channel.exit_phase()
        except _BROKEN as error:
            _disable(error)


class _Section:
    __slots__ = ("_channel", "_slot", "_start")

    def __init__(self, channel: _Channel, slot: int) -> None:
        self._channel = channel
        self._slot = slot
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = _monotonic()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        duration_s = _monotonic() - self._start
        try:
            self._channel.record_section(self._slot, duration_s)
        except _BROKEN as error:
            _disable(error)


# The process-wide channel, like logging's root logger: opened by the first call, dropped in a
# forked child (the file belongs to the parent's rank).
_channel: _Channel | None = None
_decided = False


def beat(step: int | None = None) -> None:
    """Record that this rank advanced (to `step`, if given). Call it once per training step."""
    channel = _channel if _decided else _open()
    if channel is not None:
        try:
            channel.beat(step)
        except _BROKEN as exc:
            _disable(exc)


def phase(name: str, timeout: float | None = None) -> AbstractContextManager[None]:
    """A named deadline of `timeout` seconds from entry that replaces the steady-state hang
    timeout while open; without a timeout (or with one <= 0) hang detection is suspended."""
    channel = _channel if _decided else _open()
    if channel is None:
        return _NULL
    return _Phase(channel, _encode(name), _timeout_s(timeout))


def section(name: str) -> AbstractContextManager[None]:
    """Time the enclosed compute under `name`; the agent compares ranks to find stragglers.
    The first 16 distinct names are recorded; later ones are ignored."""
    channel = _channel if _decided else _open()
    if channel is None:
        return _NULL
    try:
        slot = channel.slot(str(name))
    except _BROKEN as exc:
        _disable(exc)
        return _NULL
    return _NULL if slot < 0 else _Section(channel, slot)


def enabled() -> bool:
    """True when this process writes a progress file (it runs under the launcher)."""
    return (_channel if _decided else _open()) is not None


def _open() -> _Channel | None:
    global _channel, _decided
    _decided = True
    path = os.environ.get(PROGRESS_FILE_ENV)
    if not path or _owned_by_parent(path):
        return None
    try:
        _channel = _Channel(path)
    except _BROKEN as exc:
        _disable(exc)
    else:
        atexit.register(_exiting)
    return _channel


def _exiting() -> None:
    """Interpreter shutdown is no hang: tearing gloo or NCCL down after the last beat can
    take seconds on a loaded machine. A phase without a deadline, never closed."""
    channel = _channel
    if channel is not None:
        try:
            channel.enter_phase(b"exit", NO_TIMEOUT)
        except _BROKEN as exc:
            _disable(exc)


def _owned_by_parent(path: str) -> bool:
    """A spawned helper (a DataLoader worker) inherits the variable; it must not take over
    (truncate) its parent rank's file."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(HEADER.size)
    except OSError:
        return False
    if len(header) < HEADER.size:
        return False
    magic, _, pid, _ = HEADER.unpack(header)
    return bool(magic == MAGIC and pid == os.getppid())


def _disable(exc: BaseException) -> None:
    global _channel, _decided
    _channel, _decided = None, True
    try:
        sys.stderr.write(f"launcher.progress: disabled after {type(exc).__name__}: {exc}\n")
    except (OSError, ValueError, AttributeError):
        return  # no usable stderr: staying silent is all that is left


def _forget_in_child() -> None:
    global _channel, _decided
    _channel, _decided = None, True


def _encode(name: object) -> bytes:
    return str(name).encode("utf-8", "replace")[:NAME_BYTES]


def _timeout_s(timeout: object) -> float:
    try:
        value = float(timeout)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return NO_TIMEOUT
    return value if 0.0 < value < float("inf") else NO_TIMEOUT


os.register_at_fork(after_in_child=_forget_in_child)
