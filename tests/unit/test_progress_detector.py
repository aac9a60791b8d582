from __future__ import annotations

from dataclasses import replace

import pytest

from launcher.errors import ConfigError
from launcher.progress.detector import (
    COLLECTIVE_HANG,
    HangDetected,
    HangDetector,
    HangPolicy,
    ProgressArmed,
    ProgressStalled,
    RankEvidence,
    blame,
    deadline,
    evidence,
)
from launcher.progress.reader import OpenPhase, RankProgress

POLICY = HangPolicy(hang_timeout_s=10.0)


def snap(
    *,
    pid: int = 100,
    step: int | None = 1,
    beats: int = 1,
    beat_at: float | None = 0.0,
    longest_interval_s: float = 0.0,
    phase: OpenPhase | None = None,
    phase_changed_at: float = 0.0,
) -> RankProgress:
    return RankProgress(
        pid=pid,
        opened_at=0.0,
        seq=beats,
        step=step,
        beats=beats,
        beat_at=beat_at if beats else None,
        longest_interval_s=longest_interval_s,
        phase=phase,
        phase_changed_at=phase_changed_at,
        sections=(),
    )


def kinds(events: list[object]) -> list[str]:
    return [type(event).__name__ for event in events]


def test_not_armed_before_the_first_beat() -> None:
    detector = HangDetector(POLICY)
    assert detector.observe(0, None, now=1e6) == []
    assert detector.observe(0, snap(beats=0), now=1e6) == []


def test_armed_once_at_the_first_beat() -> None:
    detector = HangDetector(POLICY)
    assert detector.observe(0, snap(step=3), now=0.5) == [ProgressArmed(rank=0, pid=100, step=3)]
    assert detector.observe(0, snap(step=3), now=1.0) == []


def test_stalled_at_half_the_timeout_then_hang_each_once() -> None:
    detector = HangDetector(POLICY)
    progress = snap(beat_at=100.0)
    detector.observe(0, progress, now=100.0)
    assert detector.observe(0, progress, now=104.9) == []
    assert detector.observe(0, progress, now=105.0) == [
        ProgressStalled(
            rank=0, pid=100, step=1, phase=None, seconds_since_progress=5.0, timeout_s=10.0
        )
    ]
    assert detector.observe(0, progress, now=109.0) == []
    (hang,) = detector.observe(0, progress, now=110.0)
    assert isinstance(hang, HangDetected) and hang.seconds_since_progress == 10.0
    assert detector.observe(0, progress, now=500.0) == []


def test_a_new_beat_starts_a_new_episode() -> None:
    detector = HangDetector(POLICY)
    detector.observe(0, snap(beat_at=0.0), now=0.0)
    assert kinds(detector.observe(0, snap(beat_at=0.0), now=6.0)) == ["ProgressStalled"]
    assert detector.observe(0, snap(beats=2, beat_at=7.0), now=7.0) == []
    assert kinds(detector.observe(0, snap(beats=2, beat_at=7.0), now=12.0)) == ["ProgressStalled"]


def test_a_slow_poll_reports_stall_and_hang_together() -> None:
    detector = HangDetector(POLICY)
    assert kinds(detector.observe(0, snap(beat_at=0.0), now=60.0)) == [
        "ProgressArmed",
        "ProgressStalled",
        "HangDetected",
    ]


def test_the_timeout_grows_with_the_longest_step() -> None:
    progress = snap(beats=20, longest_interval_s=4.0)
    assert deadline(progress, POLICY) is not None
    assert deadline(progress, POLICY).timeout_s == 20.0  # type: ignore[union-attr]
    assert deadline(replace(progress, longest_interval_s=1.0), POLICY).timeout_s == 10.0  # type: ignore[union-attr]
    detector = HangDetector(POLICY)
    assert kinds(detector.observe(0, progress, now=15.0)) == ["ProgressArmed", "ProgressStalled"]
    assert kinds(detector.observe(0, progress, now=20.0)) == ["HangDetected"]


def test_zero_turns_detection_off_phases_included() -> None:
    off = HangPolicy(hang_timeout_s=0)
    detector = HangDetector(off)
    phase = OpenPhase(name="ckpt", timeout_s=1.0, started_at=0.0)
    assert kinds(detector.observe(0, snap(), now=1e9)) == ["ProgressArmed"]
    assert detector.observe(0, snap(phase=phase), now=1e9) == []
    assert deadline(snap(), off) is None


def test_a_phase_deadline_replaces_the_timeout() -> None:
    detector = HangDetector(POLICY)
    checkpoint = OpenPhase(name="checkpoint", timeout_s=100.0, started_at=50.0)
    progress = snap(beat_at=40.0, phase=checkpoint, phase_changed_at=50.0)
    assert kinds(detector.observe(0, progress, now=99.0)) == ["ProgressArmed"]
    (stalled,) = detector.observe(0, progress, now=100.0)
    assert isinstance(stalled, ProgressStalled) and stalled.phase == "checkpoint"
    assert stalled.timeout_s == 100.0
    assert kinds(detector.observe(0, progress, now=150.0)) == ["HangDetected"]


def test_a_phase_without_deadline_suspends_detection() -> None:
    detector = HangDetector(POLICY)
    forever = OpenPhase(name="eval", timeout_s=None, started_at=5.0)
    assert kinds(detector.observe(0, snap(phase=forever), now=1e6)) == ["ProgressArmed"]
    assert detector.observe(0, snap(phase=forever), now=2e6) == []


def test_the_end_of_a_phase_restarts_the_steady_state_clock() -> None:
    detector = HangDetector(POLICY)
    after = snap(beat_at=0.0, phase=None, phase_changed_at=1800.0)  # a 30-minute checkpoint
    assert kinds(detector.observe(0, after, now=1801.0)) == ["ProgressArmed"]
    assert kinds(detector.observe(0, after, now=1810.0)) == ["ProgressStalled", "HangDetected"]


def test_a_phase_deadline_counts_before_the_first_beat() -> None:
    detector = HangDetector(POLICY)
    init = OpenPhase(name="init", timeout_s=30.0, started_at=0.0)
    assert kinds(detector.observe(0, snap(beats=0, phase=init), now=30.0)) == [
        "ProgressStalled",
        "HangDetected",
    ]


def test_an_unreadable_poll_is_judged_on_the_last_snapshot() -> None:
    detector = HangDetector(POLICY)
    detector.observe(0, snap(beat_at=0.0), now=0.0)
    assert kinds(detector.observe(0, None, now=10.0)) == ["ProgressStalled", "HangDetected"]
    assert detector.latest() == {0: snap(beat_at=0.0)}


def test_a_new_worker_pid_starts_afresh() -> None:
    detector = HangDetector(POLICY)
    detector.observe(0, snap(pid=1, beat_at=0.0), now=20.0)
    assert kinds(detector.observe(0, snap(pid=2, beat_at=19.0), now=20.0)) == ["ProgressArmed"]
    detector.forget(0)
    assert detector.latest() == {}


def test_ranks_are_independent() -> None:
    detector = HangDetector(POLICY)
    detector.observe(0, snap(beat_at=0.0), now=0.0)
    detector.observe(1, snap(pid=101, beat_at=0.0), now=0.0)
    assert detector.observe(1, snap(pid=101, beats=2, beat_at=9.0), now=10.0) == []
    assert kinds(detector.observe(0, snap(beat_at=0.0), now=10.0)) == [
        "ProgressStalled",
        "HangDetected",
    ]


@pytest.mark.parametrize(
    "kwargs", [{"hang_timeout_s": -1}, {"factor": 0.5}, {"stall_fraction": 1.0}]
)
def test_bad_policies_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        HangPolicy(**kwargs)


def ev(rank: int, step: int | None = 42, age: float | None = 30.0, **kw: object) -> RankEvidence:
    beats = kw.pop("beats", 0 if age is None else 43)
    return RankEvidence(rank=rank, step=step, beats=beats, seconds_since_progress=age, **kw)  # type: ignore[arg-type]


def test_blame_the_lowest_step() -> None:
    verdict = blame([ev(0), ev(1), ev(2, step=41), ev(3, step=43)])
    assert (verdict.culprits, verdict.by) == ((2,), "step")
    assert verdict.reason == "rank 2 at step 41, the others at step 42..43"


def test_blame_a_rank_that_never_beat() -> None:
    verdict = blame([ev(0), ev(1, step=None, age=None)])
    assert (verdict.culprits, verdict.by) == ((1,), "step")
    assert "never beat" in verdict.reason


def test_blame_the_oldest_progress_when_steps_are_equal() -> None:
    verdict = blame([ev(0, age=30.0), ev(1, age=300.0, node="b"), ev(2, age=31.5)])
    assert (verdict.culprits, verdict.by) == ((1,), "progress")
    assert verdict.reason == "rank 1 last progressed 300.0 s ago, the others within 31.5 s"


def test_equally_stale_ranks_are_a_collective_hang() -> None:
    ranks = [ev(0, age=30.0, node="a"), ev(1, age=31.0, node="a"), ev(2, age=30.5, node="b")]
    verdict = blame(ranks)
    assert (verdict.culprits, verdict.by) == ((), "none")
    assert verdict.reason.startswith(COLLECTIVE_HANG)
    assert verdict.evidence == tuple(ranks)


def test_process_state_breaks_the_tie() -> None:
    verdict = blame([ev(0), ev(1, state="S"), ev(2, state="T"), ev(3, state="R")])
    assert (verdict.culprits, verdict.by) == ((2,), "state")
    assert verdict.reason == "rank 2 is stopped; the others are equally stale"


def test_process_state_narrows_several_laggards() -> None:
    verdict = blame([ev(0), ev(1, step=41, state="D"), ev(2, step=41, state="S")])
    assert (verdict.culprits, verdict.by) == ((1,), "step+state")
    assert "rank 1 is in uninterruptible sleep" in verdict.reason


def test_every_rank_stopped_tells_nothing_apart() -> None:
    verdict = blame([ev(0, state="T"), ev(1, state="T")])
    assert verdict.culprits == ()


def test_without_steps_the_beat_count_is_the_position() -> None:
    verdict = blame([ev(0, step=None, beats=10), ev(1, step=None, beats=9)])
    assert (verdict.culprits, verdict.by) == ((1,), "step")
    assert "beat count 9" in verdict.reason


def test_blame_of_nobody() -> None:
    assert blame([]).culprits == ()


def test_evidence_from_a_snapshot() -> None:
    progress = snap(step=7, beats=8, beat_at=10.0, phase_changed_at=12.0)
    assert evidence(3, progress, now=20.0, node="n1", state="D") == RankEvidence(
        rank=3, node="n1", step=7, beats=8, seconds_since_progress=8.0, state="D"
    )
    assert evidence(4, None, now=20.0).seconds_since_progress is None


def test_a_skipped_collective_blames_the_rank_that_went_ahead() -> None:
    """Rank 3 skipped one all_reduce: it waits in the next step's (DDP's, in backward) while
    ranks 0-2 wait at step 42 in the one it skipped. Lowest step would blame the victims."""
    from launcher.progress.incident import _blame
    from launcher.progress.watch import Incident

    proof = [ev(0), ev(1), ev(2), ev(3, step=43)]
    in_reduce = ["all_reduce (torch/distributed/distributed_c10d.py:2900)", "main (train.py:9)"]
    in_backward = ["_engine_run_backward (torch/autograd/graph.py:829)", "main (train.py:7)"]
    frames = {0: in_reduce, 1: in_reduce, 2: in_reduce, 3: in_backward}
    hang = Incident(source="progress", rank=0, pid=1)
    verdict = _blame(hang, proof, frames, timed_out=[])
    assert (verdict.culprits, verdict.by) == ((3,), "stack"), verdict
    assert "rank 3 went on to a later collective while ranks 0, 1, 2" in verdict.reason
    # The rank behind stuck in its own code (not in a collective) is still the one to blame.
    frames[2] = ["chaos_hang (train.py:20)", "main (train.py:5)"]
    proof[2] = ev(2, step=41)
    assert _blame(hang, proof, frames, timed_out=[]).culprits == (2,)
