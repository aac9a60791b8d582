from __future__ import annotations

from pathlib import Path

import pytest

from launcher.progress.layout import (
    BEAT,
    BEAT_OFFSET,
    FILE_SIZE,
    HEADER,
    MAGIC,
    NO_TIMEOUT,
    PHASE,
    PHASE_OFFSET,
    SECTION,
    VERSION,
    section_offset,
)
from launcher.progress.reader import OpenPhase, SectionStats, read_progress, snapshot


def image(
    *,
    magic: bytes = MAGIC,
    version: int = VERSION,
    beat: tuple[object, ...] = (3, 12, 50.0, 1.5, 13, 3),
    phase: tuple[object, ...] = (1, b"", NO_TIMEOUT, 0.0, 1),
    sections: tuple[tuple[object, ...], ...] = (),
) -> bytes:
    """A progress file's bytes, written field by field as a worker would."""
    buffer = bytearray(FILE_SIZE)
    HEADER.pack_into(buffer, 0, magic, version, 4242, 10.0)
    BEAT.pack_into(buffer, BEAT_OFFSET, *beat)
    PHASE.pack_into(buffer, PHASE_OFFSET, *phase)
    for slot, fields in enumerate(sections):
        SECTION.pack_into(buffer, section_offset(slot), *fields)
    return bytes(buffer)


def test_a_whole_file_decodes_every_field() -> None:
    snap = snapshot(
        image(
            phase=(5, b"checkpoint", 600.0, 48.0, 5),
            sections=((2, b"compute", 10, 2.5, 0.3, 2), (4, b"data", 10, 0.5, 0.1, 4)),
        )
    )
    assert snap is not None
    assert (snap.pid, snap.opened_at, snap.seq, snap.step, snap.beats) == (4242, 10.0, 3, 12, 13)
    assert (snap.beat_at, snap.longest_interval_s) == (50.0, 1.5)
    assert snap.phase == OpenPhase(name="checkpoint", timeout_s=600.0, started_at=48.0)
    assert snap.sections == (
        SectionStats(name="compute", count=10, total_s=2.5, last_s=0.3),
        SectionStats(name="data", count=10, total_s=0.5, last_s=0.1),
    )
    assert snap.last_progress_at == 50.0


def test_no_beat_yet_means_no_beat_time_and_no_step() -> None:
    snap = snapshot(image(beat=(0, -1, 0.0, 0.0, 0, 0)))
    assert snap is not None
    assert (snap.beat_at, snap.step, snap.last_progress_at) == (None, None, None)


def test_a_closed_phase_restarts_the_progress_clock() -> None:
    snap = snapshot(image(phase=(9, b"", NO_TIMEOUT, 80.0, 9)))
    assert snap is not None and snap.phase is None
    assert snap.last_progress_at == 80.0


def test_a_phase_without_timeout_reads_as_none() -> None:
    snap = snapshot(image(phase=(9, b"eval", NO_TIMEOUT, 80.0, 9)))
    assert snap is not None and snap.phase == OpenPhase(
        name="eval", timeout_s=None, started_at=80.0
    )


@pytest.mark.parametrize(
    "torn",
    [
        {"beat": (7, 12, 50.0, 1.5, 13, 6)},  # the writer is between the two sequence numbers
        {"phase": (8, b"ckpt", 10.0, 1.0, 7)},
        {"sections": ((5, b"compute", 1, 0.1, 0.1, 4),)},
    ],
)
def test_a_block_torn_by_a_concurrent_write_gives_none(torn: dict[str, object]) -> None:
    assert snapshot(image(**torn)) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [b"", image()[:100], image(magic=b"NOTOURS!"), image(version=VERSION + 1)],
    ids=["empty", "short", "foreign", "newer-version"],
)
def test_files_that_are_not_ours_or_not_whole_give_none(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "rank0"
    path.write_bytes(data)
    assert read_progress(path) is None
    assert snapshot(data) is None


def test_a_missing_file_gives_none(tmp_path: Path) -> None:
    assert read_progress(tmp_path / "absent") is None
    assert read_progress(tmp_path) is None  # a directory


def test_read_progress_reads_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "rank0"
    path.write_bytes(image() + b"\0" * 100)  # longer is fine: a later version may append
    snap = read_progress(path)
    assert snap is not None and snap.step == 12
