"""Straggler scores from `section()` times. Pure: no I/O, no clock. Report only, never act.

Step intervals cannot show a straggler: synchronous collectives make every rank wait for the
slowest, so all ranks step at the same pace. The time spent inside a `section("compute")`
does differ. Two stages, so that several nodes can be combined without torch or all-reduce:

    every agent     SectionSampler: each poll turns a rank's cumulative section counters into
                    one sample (mean duration since the last poll); each window (default 60 s,
                    as NVRx) gives one RankMedian per rank and section (the samples' median,
                    and the window's mean: its section time over its section count): small,
                    serialisable
    one place       StragglerTracker: all nodes' windows -> per section, score = fastest rank's
                    mean / this rank's mean; a rank scoring below 0.75 for 3 consecutive
                    windows is a straggler (hysteresis against one noisy window)

The score uses the window's mean, not the median of its samples: a rank that is slow now and
then (stopped a third of the time, a duty cycle) has fast samples in the majority, so its
median looks healthy while it delivers a third of its peers' throughput.

A window in which a rank completed fewer than `min_samples` calls of a section does not score
it and breaks its streak, so a rank that barely ran is never called slow on thin evidence.
The evidence is completed calls, not polls that saw some: a rank stopped two thirds of the
time completes several sections in a window yet shows new ones to only one or two polls.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from launcher.errors import ConfigError
from launcher.progress.reader import SectionStats

__all__ = [
    "RankMedian",
    "SectionSampler",
    "SectionStatsSummary",
    "StragglerDetected",
    "StragglerPolicy",
    "StragglerTracker",
    "WindowReport",
    "decode_medians",
    "encode_medians",
]


@dataclass(frozen=True, kw_only=True)
class StragglerPolicy:
    window_s: float = 60.0  # the agent closes a window this often; the tracker never sees time
    threshold: float = 0.75
    windows: int = 3
    min_samples: int = 3
    top_k: int = 3  # how many of the slowest ranks a summary names

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ConfigError(f"straggler window must be > 0 s, got {self.window_s}")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"straggler threshold must be in (0, 1), got {self.threshold}")
        if self.windows < 1 or self.min_samples < 1 or self.top_k < 0:
            raise ConfigError("straggler windows and min_samples must be >= 1, top_k >= 0")


@dataclass(frozen=True, kw_only=True)
class RankMedian:
    rank: int
    node: str | None
    section: str
    median_s: float
    samples: int
    mean_s: float = -1.0  # the window's time / count; -1: not sent (an older agent): the median
    calls: int = -1  # sections completed in the window; -1: not sent (an older agent)

    @property
    def score_s(self) -> float:
        return self.mean_s if self.mean_s >= 0 else self.median_s

    @property
    def evidence(self) -> int:
        """What `min_samples` is checked against: completed calls, else (older agents) polls."""
        return self.calls if self.calls >= 0 else self.samples


def encode_medians(medians: Sequence[RankMedian]) -> str:
    """One node's window, as it travels through the rendezvous store to the scorer."""
    rows = [[m.rank, m.node, m.section, m.median_s, m.samples, m.mean_s, m.calls] for m in medians]
    return json.dumps(rows, separators=(",", ":"))


def decode_medians(payload: str) -> list[RankMedian]:
    """The inverse of `encode_medians`; a malformed payload (another version, a stray
    write) gives nothing rather than an error in the agent's loop."""
    try:
        return [
            RankMedian(
                rank=int(rank),
                node=None if node is None else str(node),
                section=str(section),
                median_s=float(median_s),
                samples=int(samples),
                mean_s=float(rest[0]) if rest else -1.0,
                calls=int(rest[1]) if len(rest) > 1 else -1,
            )
            for rank, node, section, median_s, samples, *rest in json.loads(payload)
        ]
    except (ValueError, TypeError):
        return []


class SectionSampler:
    """One node's ranks: cumulative counters in, one window's medians out."""

    def __init__(self, *, node: str | None = None) -> None:
        self.node = node
        self._last: dict[tuple[int, str], tuple[int, float]] = {}  # (count, total_s) seen
        self._samples: dict[tuple[int, str], list[float]] = {}
        self._sums: dict[tuple[int, str], tuple[int, float]] = {}  # this window's (calls, s)

    def observe(self, rank: int, sections: Iterable[SectionStats]) -> None:
        for stats in sections:
            key = (rank, stats.name)
            count, total_s = self._last.get(key, (0, 0.0))
            self._last[key] = (stats.count, stats.total_s)
            calls = stats.count - count
            if calls <= 0 or stats.total_s < total_s:
                continue  # nothing new, or a restarted worker's counters began again
            self._samples.setdefault(key, []).append((stats.total_s - total_s) / calls)
            n, spent = self._sums.get(key, (0, 0.0))
            self._sums[key] = (n + calls, spent + stats.total_s - total_s)

    def forget(self, rank: int) -> None:
        """The rank's worker is gone; its successor's counters start from zero."""
        for table in (self._last, self._samples, self._sums):
            for key in [key for key in table if key[0] == rank]:
                del table[key]

    def close_window(self) -> tuple[RankMedian, ...]:
        medians = tuple(
            RankMedian(
                rank=rank,
                node=self.node,
                section=name,
                median_s=statistics.median(samples),
                samples=len(samples),
                mean_s=self._sums[(rank, name)][1] / self._sums[(rank, name)][0],
                calls=self._sums[(rank, name)][0],
            )
            for (rank, name), samples in sorted(self._samples.items())
        )
        self._samples.clear()
        self._sums.clear()
        return medians


@dataclass(frozen=True, kw_only=True)
class StragglerDetected:
    rank: int
    node: str | None
    section: str
    score: float  # fastest_s / mean_s, in (0, 1]
    median_s: float  # the median of the window's samples (per-poll means)
    mean_s: float  # the window's section time / section count: what is scored
    fastest_s: float  # the fastest rank's mean
    windows: int  # consecutive windows below the threshold, this one included


@dataclass(frozen=True, kw_only=True)
class SectionStatsSummary:
    """The periodic rank-stats record for one section and window."""

    section: str
    ranks: int
    min_s: float
    median_s: float
    max_s: float
    fastest_rank: int
    slowest: tuple[tuple[int, float], ...]  # (rank, score), slowest first, at most top_k


@dataclass(frozen=True, kw_only=True)
class WindowReport:
    window: int  # 1 for the first window the tracker saw
    stragglers: tuple[StragglerDetected, ...]
    stats: tuple[SectionStatsSummary, ...]


class StragglerTracker:
    """Scores every window's medians, from every node, and keeps the streaks."""

    def __init__(self, policy: StragglerPolicy) -> None:
        self.policy = policy
        self._window = 0
        self._streaks: dict[tuple[int, str], int] = {}

    def add_window(self, medians: Iterable[RankMedian]) -> WindowReport:
        self._window += 1
        by_section: dict[str, list[RankMedian]] = {}
        for median in medians:
            if median.evidence >= self.policy.min_samples:
                by_section.setdefault(median.section, []).append(median)
        streaks: dict[tuple[int, str], int] = {}
        stragglers: list[StragglerDetected] = []
        stats: list[SectionStatsSummary] = []
        for name, rows in sorted(by_section.items()):
            if len(rows) < 2:
                continue  # a lone rank has nobody to be slower than
            fastest = min(rows, key=lambda row: (row.score_s, row.rank))
            scores = [(row, _score(fastest.score_s, row.score_s)) for row in rows]
            for row, score in scores:
                if score >= self.policy.threshold:
                    continue
                key = (row.rank, name)
                streaks[key] = self._streaks.get(key, 0) + 1
                if streaks[key] >= self.policy.windows:
                    stragglers.append(
                        StragglerDetected(
                            rank=row.rank,
                            node=row.node,
                            section=name,
                            score=score,
                            median_s=row.median_s,
                            mean_s=row.score_s,
                            fastest_s=fastest.score_s,
                            windows=streaks[key],
                        )
                    )
            stats.append(_summary(name, fastest, scores, self.policy.top_k))
        self._streaks = streaks  # a rank not slow (or not scored) this window starts over
        return WindowReport(
            window=self._window,
            stragglers=tuple(sorted(stragglers, key=lambda s: (s.section, s.rank))),
            stats=tuple(stats),
        )


def _score(fastest_s: float, median_s: float) -> float:
    return 1.0 if median_s <= 0 else min(1.0, fastest_s / median_s)


def _summary(
    name: str,
    fastest: RankMedian,
    scores: Sequence[tuple[RankMedian, float]],
    top_k: int,
) -> SectionStatsSummary:
    values = [row.score_s for row, _ in scores]
    slowest = sorted(scores, key=lambda pair: (pair[1], pair[0].rank))[:top_k]
    return SectionStatsSummary(
        section=name,
        ranks=len(values),
        min_s=min(values),
        median_s=statistics.median(values),
        max_s=max(values),
        fastest_rank=fastest.rank,
        slowest=tuple((row.rank, score) for row, score in slowest),
    )
