from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher import progress
from launcher.progress.layout import HEADER, MAGIC, SECTION_SLOTS, VERSION, WARMUP_BEATS
from launcher.progress.reader import RankProgress, read_progress


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def fresh_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts as a fresh worker process would: nothing opened, nothing decided."""
    monkeypatch.setattr(progress, "_channel", None)
    monkeypatch.setattr(progress, "_decided", False)
    monkeypatch.delenv(progress.PROGRESS_FILE_ENV, raising=False)
    yield


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(progress, "_monotonic", fake)
    return fake


@pytest.fixture
def progress_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "rank0"
    monkeypatch.setenv(progress.PROGRESS_FILE_ENV, str(path))
    return path


def read(path: Path) -> RankProgress:
    snap = read_progress(path)
    assert snap is not None
    return snap


def test_without_the_variable_every_call_is_a_no_op(tmp_path: Path) -> None:
    progress.beat()
    progress.beat(step=3)
    with progress.phase("checkpoint", timeout=10), progress.section("compute"):
        pass
    assert not progress.enabled()
    assert list(tmp_path.iterdir()) == []


def test_beat_writes_step_time_count_and_pid(progress_file: Path, clock: FakeClock) -> None:
    clock.now = 1000.0
    progress.beat(step=7)
    snap = read(progress_file)
    assert (snap.pid, snap.step, snap.beats, snap.beat_at) == (os.getpid(), 7, 1, 1000.0)
    assert snap.phase is None and snap.sections == () and snap.longest_interval_s == 0.0
    assert snap.last_progress_at == 1000.0


def test_beat_without_step_keeps_the_last_step(progress_file: Path) -> None:
    progress.beat()
    assert read(progress_file).step is None
    progress.beat(step=4)
    progress.beat()
    assert (read(progress_file).step, read(progress_file).beats) == (4, 3)


def test_longest_interval_ignores_warm_up_and_phases(progress_file: Path, clock: FakeClock) -> None:
    for _ in range(WARMUP_BEATS):
        clock.now += 30.0  # compilation: long, but warm-up
        progress.beat()
    assert read(progress_file).longest_interval_s == 0.0
    clock.now += 2.0
    progress.beat()
    clock.now += 3.0
    progress.beat()
    assert read(progress_file).longest_interval_s == 3.0
    with progress.phase("checkpoint", timeout=600):
        clock.now += 500.0
        progress.beat()  # a beat inside a phase: its gap is not a step interval
    clock.now += 1.0
    progress.beat()  # measured from the phase's end, not from the beat before it
    snap = read(progress_file)
    assert snap.longest_interval_s == 3.0
    assert snap.beats == WARMUP_BEATS + 4


def test_phase_is_written_while_open_and_nested_phases_restore(
    progress_file: Path, clock: FakeClock
) -> None:
    progress.beat(step=1)
    clock.now = 1010.0
    with progress.phase("checkpoint", timeout=1800):
        outer = read(progress_file).phase
        assert outer is not None
        assert (outer.name, outer.timeout_s, outer.started_at) == ("checkpoint", 1800.0, 1010.0)
        clock.now = 1020.0
        with progress.phase("upload"):
            inner = read(progress_file).phase
            assert inner is not None and (inner.name, inner.timeout_s) == ("upload", None)
        clock.now = 1030.0
        restored = read(progress_file).phase
        assert restored == outer
        clock.now = 1040.0
    snap = read(progress_file)
    assert snap.phase is None
    assert snap.phase_changed_at == 1040.0
    assert snap.last_progress_at == 1040.0  # the steady-state clock restarts after a phase


@pytest.mark.parametrize("timeout", [None, 0, -5, float("nan"), float("inf"), "soon"])
def test_phase_without_a_usable_timeout_has_none(progress_file: Path, timeout: object) -> None:
    with progress.phase("eval", timeout=timeout):  # type: ignore[arg-type]
        phase = read(progress_file).phase
    assert phase is not None and phase.timeout_s is None


def test_interpreter_exit_opens_a_phase_without_deadline(progress_file: Path) -> None:
    """After the last beat, tearing gloo down at exit can take seconds: not a hang."""
    progress.beat(step=30)
    progress._exiting()  # what atexit runs
    phase = read(progress_file).phase
    assert phase is not None and phase.name == "exit" and phase.timeout_s is None


def test_long_names_are_truncated_not_rejected(progress_file: Path) -> None:
    with progress.phase("a-very-long-phase-name-that-does-not-fit", timeout=5):
        phase = read(progress_file).phase
    assert phase is not None and phase.name == "a-very-long-phase-name-t"


def test_sections_accumulate_count_total_and_last(progress_file: Path, clock: FakeClock) -> None:
    for duration in (0.5, 0.25, 1.0):
        with progress.section("compute"):
            clock.now += duration
    with progress.section("data"):
        clock.now += 0.125
    sections = {s.name: s for s in read(progress_file).sections}
    compute = sections["compute"]
    assert (compute.count, compute.total_s, compute.last_s) == (3, 1.75, 1.0)
    assert (sections["data"].count, sections["data"].last_s) == (1, 0.125)


def test_a_section_that_raises_is_still_timed(progress_file: Path, clock: FakeClock) -> None:
    with pytest.raises(KeyError), progress.section("compute"):
        clock.now += 2.0
        raise KeyError("the user's error passes through untouched")
    (compute,) = read(progress_file).sections
    assert (compute.count, compute.last_s) == (1, 2.0)


def test_names_beyond_the_table_are_ignored(progress_file: Path) -> None:
    for i in range(SECTION_SLOTS + 4):
        with progress.section(f"s{i}"):
            pass
    names = [s.name for s in read(progress_file).sections]
    assert names == [f"s{i}" for i in range(SECTION_SLOTS)]


def test_a_bad_step_is_dropped_not_raised(progress_file: Path) -> None:
    progress.beat(step=5)
    progress.beat(step="six")  # type: ignore[arg-type]
    progress.beat(step=2**80)
    snap = read(progress_file)
    assert (snap.step, snap.beats) == (5, 3)


def test_an_unopenable_file_disables_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"  # a missing directory is made; one under a file cannot be
    blocker.write_text("")
    monkeypatch.setenv(progress.PROGRESS_FILE_ENV, str(blocker / "progress" / "rank0"))
    progress.beat(step=1)
    with progress.phase("p", timeout=1), progress.section("s"):
        progress.beat()
    assert not progress.enabled()
    err = capsys.readouterr().err
    assert err.count("launcher.progress: disabled") == 1


def test_a_previous_workers_data_is_wiped(progress_file: Path, clock: FakeClock) -> None:
    progress.beat(step=99)
    progress._channel = None  # the next worker of this rank starts
    progress._decided = False
    with progress.section("x"):
        pass
    snap = read(progress_file)
    assert (snap.beats, snap.step, [s.name for s in snap.sections]) == (0, None, ["x"])


def test_a_helper_spawned_by_the_rank_leaves_its_file_alone(progress_file: Path) -> None:
    header = bytearray(HEADER.size)
    HEADER.pack_into(header, 0, MAGIC, VERSION, os.getppid(), 1.0)
    progress_file.write_bytes(bytes(header))
    progress.beat(step=1)
    assert not progress.enabled()
    assert progress_file.read_bytes() == bytes(header)


def test_a_forked_child_does_not_write(progress_file: Path) -> None:
    progress.beat(step=1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        progress.beat(step=42)
        os._exit(0 if not progress.enabled() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert read(progress_file).step == 1
