"""Agent side of the progress file: one read, one frozen snapshot.

The worker may be writing while we read, the file may not exist yet (the worker has not made
its first call), may be short (it is being set up) or may belong to a worker of an earlier
round. Each block carries its sequence number before and after its fields (layout.py); a block
whose two copies differ was torn by a concurrent write and is read again, a few times, after
which the whole snapshot is given up as None for this poll. Nothing here raises on a bad
file: a poll that cannot read a rank simply has no new evidence for it.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.progress.layout import (
    BEAT,
    BEAT_OFFSET,
    FILE_SIZE,
    HEADER,
    MAGIC,
    PHASE,
    PHASE_OFFSET,
    SECTION,
    SECTION_SLOTS,
    VERSION,
    section_offset,
)

__all__ = ["OpenPhase", "RankProgress", "SectionStats", "read_progress", "snapshot"]

READ_ATTEMPTS = 5
_SEQ = struct.Struct("<Q")


@dataclass(frozen=True, kw_only=True)
class OpenPhase:
    name: str
    timeout_s: float | None  # None: no deadline, detection is suspended while it is open
    started_at: float


@dataclass(frozen=True, kw_only=True)
class SectionStats:
    name: str
    count: int
    total_s: float
    last_s: float


@dataclass(frozen=True, kw_only=True)
class RankProgress:
    """One rank's progress file at one instant. Times are the worker's `time.monotonic()`."""

    pid: int
    opened_at: float
    seq: int  # the beat block's sequence number: changes on every write of the file
    step: int | None  # None: the worker never passed a step
    beats: int
    beat_at: float | None  # None before the first beat
    longest_interval_s: float
    phase: OpenPhase | None
    phase_changed_at: float  # the last time a phase opened or closed (0.0: never)
    sections: tuple[SectionStats, ...]

    @property
    def last_progress_at(self) -> float | None:
        """When the steady-state clock last restarted: the last beat or the end of a phase."""
        if self.beat_at is None:
            return None
        return max(self.beat_at, self.phase_changed_at)


def read_progress(path: Path) -> RankProgress | None:
    """The snapshot in `path`, or None if it is missing, short, foreign or torn."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size < FILE_SIZE:
            return None
        with mmap.mmap(fd, FILE_SIZE, access=mmap.ACCESS_READ) as view:
            return snapshot(view)
    except (OSError, ValueError):
        return None  # truncated or replaced between fstat and mmap
    finally:
        os.close(fd)


def snapshot(buffer: bytes | mmap.mmap) -> RankProgress | None:
    """Decode a progress file's bytes (a live mmap or a copy)."""
    if len(buffer) < FILE_SIZE:
        return None
    magic, version, pid, opened_at = HEADER.unpack_from(buffer, 0)
    if magic != MAGIC or version != VERSION:
        return None
    beat = _block(buffer, BEAT, BEAT_OFFSET)
    phase = _block(buffer, PHASE, PHASE_OFFSET)
    if beat is None or phase is None:
        return None
    sections = []
    for slot in range(SECTION_SLOTS):
        fields = _block(buffer, SECTION, section_offset(slot))
        if fields is None:
            return None
        name = _decode(fields[1])
        if name:
            sections.append(
                SectionStats(name=name, count=fields[2], total_s=fields[3], last_s=fields[4])
            )
    seq, step, beat_at, longest_s, beats, _ = beat
    _, phase_name, timeout_s, changed_at, _ = phase
    name = _decode(phase_name)
    return RankProgress(
        pid=pid,
        opened_at=opened_at,
        seq=seq,
        step=None if step < 0 else step,
        beats=beats,
        beat_at=beat_at if beats else None,
        longest_interval_s=longest_s,
        phase=OpenPhase(
            name=name, timeout_s=timeout_s if timeout_s > 0 else None, started_at=changed_at
        )
        if name
        else None,
        phase_changed_at=changed_at,
        sections=tuple(sections),
    )


def _block(buffer: bytes | mmap.mmap, layout: struct.Struct, offset: int) -> tuple[Any, ...] | None:
    """The block's fields once its leading and trailing sequence numbers agree.

    The trailing copy is read first and the leading copy last, the reverse of the writer's
    order, so agreeing copies mean no write overlapped the read of the fields."""
    end = offset + layout.size - _SEQ.size
    for _ in range(READ_ATTEMPTS):
        (trailing,) = _SEQ.unpack_from(buffer, end)
        fields = layout.unpack_from(buffer, offset)
        (leading,) = _SEQ.unpack_from(buffer, offset)
        if leading == trailing == fields[0] == fields[-1]:
            return tuple(fields)
    return None


def _decode(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")
