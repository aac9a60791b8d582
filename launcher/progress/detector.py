"""Hang detection from progress snapshots, and blame by evidence. Pure: no I/O, no clock.

A rank is armed at its first beat; from then on it must make progress (beat, or close a phase)
within its timeout: the larger of `hang_timeout_s` and `factor` times the longest step seen
after warm-up (the worker leaves warm-up and phase time out of that figure). The default of
300 s sits below NCCL's 10-minute collective timeout and 8-minute heartbeat monitor, so the
agent acts, and dumps stacks, while every rank is still alive. An open phase replaces the
timeout with its own deadline, counted from its start, or suspends detection if it has none;
a phase with a deadline counts even before the first beat. `hang_timeout_s = 0` turns all of
it off. Each episode (one period without progress) gives at most one `ProgressStalled` (at
`stall_fraction` of the timeout) and one `HangDetected`; progress starts a new episode.

torchrun blames whichever rank times out first, usually a victim waiting in a collective.
`blame` looks at every rank instead: the lowest step wins, then the oldest progress, then a
stopped (T) or uninterruptible (D) process. When nothing tells the ranks apart, it says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from launcher.errors import ConfigError
from launcher.progress.reader import RankProgress

__all__ = [
    "COLLECTIVE_HANG",
    "Blame",
    "Deadline",
    "HangDetected",
    "HangDetector",
    "HangPolicy",
    "ProgressArmed",
    "ProgressEvent",
    "ProgressStalled",
    "RankEvidence",
    "blame",
    "deadline",
    "evidence",
]

COLLECTIVE_HANG = "collective hang, culprit unknown"
SUSPECT_STATES = {"T": "stopped", "t": "stopped by a tracer", "D": "in uninterruptible sleep"}


@dataclass(frozen=True, kw_only=True)
class HangPolicy:
    hang_timeout_s: float = 300.0  # 0: hang detection off
    factor: float = 5.0
    stall_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not self.hang_timeout_s >= 0:
            raise ConfigError(f"must be >= 0, got {self.hang_timeout_s}", flag="--hang-timeout")
        if not self.factor >= 1:
            raise ConfigError(f"hang timeout factor must be >= 1, got {self.factor}")
        if not 0 < self.stall_fraction < 1:
            raise ConfigError(f"stall fraction must be in (0, 1), got {self.stall_fraction}")

    @property
    def enabled(self) -> bool:
        return self.hang_timeout_s > 0


@dataclass(frozen=True, kw_only=True)
class Deadline:
    timeout_s: float
    since: float  # worker monotonic time the timeout counts from
    phase: str | None  # the open phase that set it; None: the steady-state timeout


def deadline(progress: RankProgress, policy: HangPolicy) -> Deadline | None:
    """The deadline `progress` is held to, or None: off, not armed, or suspended by a phase."""
    if not policy.enabled:
        return None
    if progress.phase is not None:
        if progress.phase.timeout_s is None:
            return None
        return Deadline(
            timeout_s=progress.phase.timeout_s,
            since=progress.phase.started_at,
            phase=progress.phase.name,
        )
    since = progress.last_progress_at
    if since is None:
        return None
    timeout_s = max(policy.hang_timeout_s, policy.factor * progress.longest_interval_s)
    return Deadline(timeout_s=timeout_s, since=since, phase=None)


@dataclass(frozen=True, kw_only=True)
class ProgressArmed:
    rank: int
    pid: int
    step: int | None


@dataclass(frozen=True, kw_only=True)
class ProgressStalled:
    rank: int
    pid: int
    step: int | None
    phase: str | None
    seconds_since_progress: float
    timeout_s: float


@dataclass(frozen=True, kw_only=True)
class HangDetected:
    rank: int
    pid: int
    step: int | None
    phase: str | None
    seconds_since_progress: float
    timeout_s: float


ProgressEvent = ProgressArmed | ProgressStalled | HangDetected


class _Watch:
    """What the detector remembers about one rank between observations."""

    def __init__(self, progress: RankProgress) -> None:
        self.progress = progress
        self.armed = False
        self.episode: tuple[float, str | None] | None = None
        self.level = 0  # 0: fine, 1: stall reported, 2: hang reported


class HangDetector:
    """Feed it each rank's latest snapshot at every poll; it returns what changed."""

    def __init__(self, policy: HangPolicy) -> None:
        self.policy = policy
        self._watches: dict[int, _Watch] = {}

    def observe(self, rank: int, progress: RankProgress | None, now: float) -> list[ProgressEvent]:
        """`now` is the agent's `time.monotonic()`. A None snapshot (unreadable this time)
        is judged on the last one read."""
        watch = self._watches.get(rank)
        if progress is not None and (watch is None or watch.progress.pid != progress.pid):
            watch = self._watches[rank] = _Watch(progress)  # a new worker starts afresh
        if watch is None:
            return []
        if progress is not None:
            watch.progress = progress
        current = watch.progress
        events: list[ProgressEvent] = []
        if not watch.armed and current.beats > 0:
            watch.armed = True
            events.append(ProgressArmed(rank=rank, pid=current.pid, step=current.step))
        limit = deadline(current, self.policy)
        if limit is None:
            watch.episode, watch.level = None, 0
            return events
        if watch.episode != (limit.since, limit.phase):
            watch.episode, watch.level = (limit.since, limit.phase), 0
        age_s = now - limit.since
        if watch.level < 1 and age_s >= self.policy.stall_fraction * limit.timeout_s:
            watch.level = 1
            events.append(ProgressStalled(**_alert(rank, current, limit, age_s)))
        if watch.level < 2 and age_s >= limit.timeout_s:
            watch.level = 2
            events.append(HangDetected(**_alert(rank, current, limit, age_s)))
        return events

    def latest(self) -> dict[int, RankProgress]:
        """The last snapshot read for each rank, for `evidence` and `blame`."""
        return {rank: watch.progress for rank, watch in self._watches.items()}

    def forget(self, rank: int) -> None:
        self._watches.pop(rank, None)


def _alert(rank: int, progress: RankProgress, limit: Deadline, age_s: float) -> dict[str, Any]:
    return {
        "rank": rank,
        "pid": progress.pid,
        "step": progress.step,
        "phase": limit.phase,
        "seconds_since_progress": age_s,
        "timeout_s": limit.timeout_s,
    }


@dataclass(frozen=True, kw_only=True)
class RankEvidence:
    """What one agent knows about one of its ranks, with ages on its own clock, so that
    evidence from several nodes can be compared without comparing their clocks."""

    rank: int
    node: str | None = None
    step: int | None
    beats: int
    seconds_since_progress: float | None  # None: never made progress
    state: str | None = None  # the /proc/<pid>/stat state letter, when known


def evidence(
    rank: int,
    progress: RankProgress | None,
    now: float,
    *,
    node: str | None = None,
    state: str | None = None,
) -> RankEvidence:
    since = None if progress is None else progress.last_progress_at
    return RankEvidence(
        rank=rank,
        node=node,
        step=None if progress is None else progress.step,
        beats=0 if progress is None else progress.beats,
        seconds_since_progress=None if since is None else max(0.0, now - since),
        state=state,
    )


@dataclass(frozen=True, kw_only=True)
class Blame:
    culprits: tuple[int, ...]  # empty: culprit unknown
    by: str  # "step", "progress", "state" (alone or "+state" as a tie-breaker), or "none"
    reason: str
    evidence: tuple[RankEvidence, ...]


def blame(ranks: Sequence[RankEvidence], *, margin_s: float = 2.0) -> Blame:
    """The rank(s) to blame for a hang, from every rank's evidence at detection time.

    Ages within `margin_s` of each other count as equal (ranks beat at slightly different
    moments of the same step)."""
    ranks = sorted(ranks, key=lambda r: r.rank)
    everyone = tuple(ranks)
    if not ranks:
        return Blame(culprits=(), by="none", reason=f"{COLLECTIVE_HANG}: no ranks", evidence=())
    suspects, by, reason = _by_position(ranks)
    if not suspects:
        suspects, by, reason = _by_age(ranks, margin_s)
    odd = [r for r in (suspects or ranks) if r.state in SUSPECT_STATES]
    if odd and len(odd) < len(suspects or ranks):
        states = "; ".join(f"rank {r.rank} is {SUSPECT_STATES[r.state or '']}" for r in odd)
        if suspects:
            suspects, by, reason = odd, f"{by}+state", f"{reason}; {states}"
        else:
            suspects, by, reason = odd, "state", f"{states}; the others are equally stale"
    if not suspects:
        return Blame(
            culprits=(), by="none", reason=f"{COLLECTIVE_HANG}: {reason}", evidence=everyone
        )
    return Blame(culprits=tuple(r.rank for r in suspects), by=by, reason=reason, evidence=everyone)


def _by_position(ranks: list[RankEvidence]) -> tuple[list[RankEvidence], str, str]:
    with_steps = all(r.step is not None or r.beats == 0 for r in ranks)
    unit = "step" if with_steps else "beat count"

    def position(r: RankEvidence) -> int:
        if r.beats == 0:
            return -1
        return r.step if with_steps and r.step is not None else r.beats

    lowest = min(position(r) for r in ranks)
    highest = max(position(r) for r in ranks)
    if lowest == highest:
        where = "no beat yet" if lowest < 0 else f"{unit} {lowest}"
        return [], "none", f"every rank is at {where}"
    behind = [r for r in ranks if position(r) == lowest]
    ahead = sorted({position(r) for r in ranks} - {lowest})
    at = "never beat" if lowest < 0 else f"at {unit} {lowest}"
    span = f"{ahead[0]}" if len(ahead) == 1 else f"{ahead[0]}..{ahead[-1]}"
    return behind, "step", f"{_names(behind)} {at}, the others at {unit} {span}"


def _by_age(ranks: list[RankEvidence], margin_s: float) -> tuple[list[RankEvidence], str, str]:
    ages = [
        float("inf") if r.seconds_since_progress is None else r.seconds_since_progress
        for r in ranks
    ]
    oldest, newest = max(ages), min(ages)
    if newest == float("inf"):
        return [], "none", "no rank reports progress (launcher.progress)"
    if oldest == newest or oldest - newest <= margin_s:
        return [], "none", f"every rank is at the same point and equally stale ({oldest:.1f} s)"
    stale = [r for r, age in zip(ranks, ages, strict=True) if age >= oldest - margin_s]
    fresh = max(age for age in ages if age < oldest - margin_s)
    return (
        stale,
        "progress",
        f"{_names(stale)} last progressed {oldest:.1f} s ago, the others within {fresh:.1f} s",
    )


def _names(ranks: Sequence[RankEvidence]) -> str:
    numbers = ", ".join(str(r.rank) for r in ranks)
    return f"rank {numbers}" if len(ranks) == 1 else f"ranks {numbers}"
