from __future__ import annotations

import random

import pytest

from launcher.errors import ConfigError
from launcher.progress.reader import SectionStats
from launcher.progress.stragglers import (
    RankMedian,
    SectionSampler,
    StragglerPolicy,
    StragglerTracker,
    WindowReport,
    decode_medians,
    encode_medians,
)
from launcher.rendezvous.driver import Driver
from launcher.rendezvous.state import Assignment, Params, collect_window, publish_window
from launcher.rendezvous.store import MemoryStore

POLICY = StragglerPolicy()


class FakeRank:
    """A worker's cumulative section counters, as the agent reads them each poll."""

    def __init__(self) -> None:
        self.count = 0
        self.total_s = 0.0

    def run(self, durations: list[float]) -> list[SectionStats]:
        for duration in durations:
            self.count += 1
            self.total_s += duration
        return [SectionStats(name="compute", count=self.count, total_s=self.total_s, last_s=0.0)]


def simulate(
    rng: random.Random,
    *,
    ranks: int,
    windows: int,
    slow: dict[int, float] | None = None,
    jitter: float = 0.1,
    polls: int = 30,
    calls_per_poll: int = 5,
) -> list[WindowReport]:
    """`ranks` equal ranks (plus the given slow-down factors) over `windows` windows: each poll
    every rank runs a few sections of 100 ms with gaussian jitter and rare 3x pauses (GC)."""
    slow = slow or {}
    sampler = SectionSampler(node="n0")
    tracker = StragglerTracker(POLICY)
    workers = {rank: FakeRank() for rank in range(ranks)}
    reports = []
    for _ in range(windows):
        for _ in range(polls):
            for rank, worker in workers.items():
                durations = [
                    0.1
                    * slow.get(rank, 1.0)
                    * max(0.1, rng.gauss(1.0, jitter))
                    * (3.0 if rng.random() < 0.02 else 1.0)
                    for _ in range(calls_per_poll)
                ]
                sampler.observe(rank, worker.run(durations))
        reports.append(tracker.add_window(sampler.close_window()))
    return reports


@pytest.mark.parametrize("seed", range(3))
def test_no_false_positive_on_equal_ranks_with_jitter(seed: int) -> None:
    reports = simulate(random.Random(seed), ranks=8, windows=20, jitter=0.15)
    assert [s for report in reports for s in report.stragglers] == []
    for report in reports:
        (stats,) = report.stats
        assert stats.ranks == 8
        # Window means carry the rare 3x pauses too: equal ranks score 0.85 to 1, far
        # from the 0.75 threshold.
        assert all(score > 0.8 for _, score in stats.slowest)


def test_a_slow_rank_is_reported_from_its_third_slow_window() -> None:
    reports = simulate(random.Random(7), ranks=4, windows=5, slow={2: 1.5})
    assert [r.stragglers for r in reports[:2]] == [(), ()]
    for number, report in enumerate(reports[2:], start=3):
        (event,) = report.stragglers
        assert (event.rank, event.node, event.section, event.windows) == (
            2,
            "n0",
            "compute",
            number,
        )
        assert event.score == pytest.approx(1 / 1.5, abs=0.03)
        assert event.median_s == pytest.approx(0.15, rel=0.03)
        assert event.mean_s == pytest.approx(0.15, rel=0.08)  # the rare pauses included
        assert event.fastest_s == pytest.approx(0.1, rel=0.08)
        assert report.stats[0].slowest[0][0] == 2


def median(rank: int, median_s: float, samples: int = 10, section: str = "compute") -> RankMedian:
    return RankMedian(rank=rank, node=None, section=section, median_s=median_s, samples=samples)


def test_one_normal_window_breaks_the_streak() -> None:
    tracker = StragglerTracker(POLICY)
    slow = [median(0, 1.0), median(1, 2.0)]
    even = [median(0, 1.0), median(1, 1.0)]
    windows = [slow, slow, even, slow, slow, slow]
    reports = [tracker.add_window(window) for window in windows]
    assert [len(r.stragglers) for r in reports] == [0, 0, 0, 0, 0, 1]
    assert reports[-1].stragglers[0].windows == 3
    assert reports[-1].window == 6


def test_thin_evidence_is_not_scored() -> None:
    tracker = StragglerTracker(POLICY)
    for _ in range(5):
        report = tracker.add_window([median(0, 1.0), median(1, 9.0, samples=2)])
    assert (report.stragglers, report.stats) == ((), ())


def test_evidence_is_completed_calls_not_polls_that_saw_some() -> None:
    # Stopped two thirds of the time: one poll saw rank 1's six calls (one of them stretched),
    # its peer's were seen by every poll. Both completed enough sections to be judged.
    sampler = SectionSampler()
    for count in (2, 4, 6):
        sampler.observe(
            0, [SectionStats(name="compute", count=count, total_s=0.1 * count, last_s=0.1)]
        )
    sampler.observe(1, [SectionStats(name="compute", count=6, total_s=1.2, last_s=0.7)])
    rows = sampler.close_window()
    assert [(row.samples, row.calls) for row in rows] == [(3, 6), (1, 6)]
    (slow,) = StragglerTracker(StragglerPolicy(windows=1)).add_window(rows).stragglers
    assert (slow.rank, slow.score) == (1, pytest.approx(0.5))
    # An older agent sends no calls: its polls are the evidence, as before.
    assert RankMedian(rank=1, node=None, section="c", median_s=1.0, samples=2).evidence == 2


def test_sections_are_scored_separately_with_a_summary_each() -> None:
    tracker = StragglerTracker(StragglerPolicy(windows=1, top_k=2))
    report = tracker.add_window(
        [median(r, 1.0, section="compute") for r in range(3)]
        + [
            median(0, 0.2, section="data"),
            median(1, 0.2, section="data"),
            median(2, 0.4, section="data"),
        ]
    )
    (event,) = report.stragglers
    assert (event.rank, event.section, event.score, event.windows) == (2, "data", 0.5, 1)
    compute, data = report.stats
    assert (compute.section, compute.ranks, compute.min_s, compute.max_s) == (
        "compute",
        3,
        1.0,
        1.0,
    )
    assert (data.fastest_rank, data.median_s, data.slowest) == (0, 0.2, ((2, 0.5), (0, 1.0)))


def test_the_sampler_turns_counters_into_per_poll_means() -> None:
    sampler = SectionSampler(node="n1")
    counters = [(2, 1.0), (2, 1.0), (6, 3.0), (7, 5.0)]  # nothing new in the second poll
    for count, total_s in counters:
        sampler.observe(3, [SectionStats(name="fwd", count=count, total_s=total_s, last_s=0.0)])
    (row,) = sampler.close_window()
    # samples 0.5, 0.5 (4 calls, 2 s) and 2.0 (1 call, 2 s): median 0.5, mean 5 s / 7 calls
    assert row == RankMedian(
        rank=3,
        node="n1",
        section="fwd",
        median_s=0.5,
        samples=3,
        mean_s=pytest.approx(5 / 7),
        calls=7,
    )
    assert sampler.close_window() == ()


def test_the_sampler_does_not_mix_a_restarted_workers_counters() -> None:
    sampler = SectionSampler()
    sampler.observe(0, [SectionStats(name="fwd", count=100, total_s=50.0, last_s=0.5)])
    sampler.close_window()
    sampler.observe(0, [SectionStats(name="fwd", count=3, total_s=0.3, last_s=0.1)])  # restarted
    sampler.observe(0, [SectionStats(name="fwd", count=5, total_s=0.5, last_s=0.1)])
    (row,) = sampler.close_window()
    assert (row.median_s, row.samples) == (pytest.approx(0.1), 1)
    sampler.observe(0, [SectionStats(name="fwd", count=9, total_s=0.9, last_s=0.1)])
    sampler.forget(0)
    assert sampler.close_window() == ()


@pytest.mark.parametrize(
    "kwargs", [{"window_s": 0}, {"threshold": 1.0}, {"windows": 0}, {"min_samples": 0}]
)
def test_bad_policies_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        StragglerPolicy(**kwargs)


def test_medians_survive_the_trip_through_the_store() -> None:
    medians = [
        RankMedian(rank=3, node="n1", section="compute", median_s=0.25, samples=7),
        RankMedian(rank=4, node=None, section="data", median_s=1e-6, samples=3),
        RankMedian(rank=5, node="n2", section="data", median_s=0.1, samples=2, mean_s=0.2, calls=9),
    ]
    assert decode_medians(encode_medians(medians)) == medians
    # What an agent without `calls` (or without `mean_s`) publishes still reads.
    older = decode_medians('[[1,"n","c",0.5,4,0.6],[2,"n","c",0.5,4]]')
    assert [(m.mean_s, m.calls, m.evidence) for m in older] == [(0.6, -1, 4), (-1.0, -1, 4)]
    assert decode_medians(encode_medians([])) == []


@pytest.mark.parametrize("payload", ["", "{", "7", '{"a": 1}', "[[1, 2]]", '[["x",0,"s",1,1]]'])
def test_a_malformed_window_is_ignored_not_raised(payload: str) -> None:
    assert decode_medians(payload) == []


def test_windows_published_by_every_member_are_collected_by_one_read() -> None:
    store = MemoryStore()
    params = Params(run_id="job", min_nodes=3, max_nodes=3, max_restarts=0)
    members = [_assignment(rank) for rank in range(3)]
    for a in members[:2]:  # the third closes its window later
        Driver(store).run(publish_window(params, a, window=1, payload=f"[{a.group_rank}]"))
    before = store.ops
    assert Driver(store).run(collect_window(params, members[0], window=1)) == ["[0]", "[1]"]
    assert store.ops == before + 1
    assert Driver(store).run(collect_window(params, members[0], window=2)) == []


def _assignment(group_rank: int) -> Assignment:
    return Assignment(
        round=4,
        group_rank=group_rank,
        group_world_size=3,
        base_rank=group_rank,
        world_size=3,
        master_addr="127.0.0.1",
        master_port=1,
        restart_count=0,
        reason="initial",
        charged=False,
    )


def test_a_duty_cycle_is_slow_on_average_though_most_samples_are_fast() -> None:
    """A rank stopped now and then (SIGSTOP duty cycle): two polls in three see normal
    sections, the third one section that took 21x as long. Its median is its peers'; its
    throughput is less than half of theirs (3.5 s per 15 sections), and the score says so."""
    sampler, tracker = SectionSampler(), StragglerTracker(POLICY)
    fast, cycled = FakeRank(), FakeRank()
    reports = []
    for _ in range(3):
        for poll in range(30):
            sampler.observe(0, fast.run([0.1] * 5))
            sampler.observe(1, cycled.run([0.1] * 5 if poll % 3 else [0.1] * 4 + [2.1]))
        reports.append(tracker.add_window(sampler.close_window()))
    (event,) = reports[-1].stragglers
    assert event.rank == 1 and event.score == pytest.approx(0.1 / (3.5 / 15), abs=0.02)


def test_a_window_from_an_agent_without_means_is_scored_on_its_median() -> None:
    old = '[[0, "n0", "compute", 0.1, 5], [1, "n1", "compute", 0.3, 5]]'
    rows = decode_medians(old)
    assert [(r.mean_s, r.score_s) for r in rows] == [(-1.0, 0.1), (-1.0, 0.3)]
