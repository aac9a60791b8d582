"""The straggler checker on synthetic histories: the slowed rank reported and no other passes;
a missing, an extra (false) or a wrong-section report fails; no scored window is unknown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chaos.checkers import FAIL, PASS, UNKNOWN, run_checkers
from chaos.checkers.stragglers import StragglerChecker, reports
from chaos.history import History
from chaos.scenario.schema import (
    INJECTED,
    Expectations,
    Scenario,
    StragglerExpectation,
    Topology,
)
from launcher import events as ev

T0 = 1_800_000_000.0


def scenario(ranks: tuple[int, ...] | str = INJECTED, section: str | None = None) -> Scenario:
    return Scenario(
        name="straggler",
        topology=Topology(nodes=2, nproc_per_node=2),
        expect=Expectations(straggler=StragglerExpectation(ranks=ranks, section=section)),
    )


def event(index: int, name: str, at: float, **fields: Any) -> ev.Event:
    return ev.Event(
        name=name,
        run_id="r",
        node_id=f"10.0.0.{index}",
        pid=100 + index,
        wall_time=T0 + at,
        mono_time=at,
        fields=fields,
    )


def stats(node: int, at: float, window: int) -> ev.Event:
    return event(node, ev.STRAGGLER_STATS, at, window=window, sections=[])


def detected(node: int, at: float, rank: int, section: str = "compute", windows: int = 3) -> Any:
    return event(
        node, ev.STRAGGLER_DETECTED, at, rank=rank, node=f"10.0.0.{node}", section=section,
        score=0.33, median_s=0.3, fastest_s=0.1, windows=windows,
    )  # fmt: skip


def history(node_events: dict[int, list[ev.Event]], slowed: int | None = 1) -> History:
    records: list[dict[str, Any]] = [{"kind": "run.start", "t": 0.0, "wall": T0}]
    if slowed is not None:
        did = {"rank": slowed, "node": 0, "mode": "compute", "via": "control", "factor": 3}
        records.append(
            {"kind": "fault.fire", "t": 5.0, "wall": T0 + 5, "fault": 0,
             "fault_kind": "slow_worker", "did": did}
        )  # fmt: skip
    return History(
        run_dir=Path("/nonexistent"),
        records=tuple(records),
        events={n: tuple(evs) for n, evs in node_events.items()},
        steps=(),
    )


def story() -> dict[int, list[ev.Event]]:
    """Rank 1 (node 0) is slow from t=5: node 0 reports it twice (windows 3 and 4); node 1's
    ranks are fine. Both nodes score four windows."""
    return {
        0: [stats(0, 2.0 * w, w) for w in range(1, 5)]
        + [detected(0, 6.0, 1), detected(0, 8.0, 1, windows=4)],
        1: [stats(1, 2.0 * w, w) for w in range(1, 5)],
    }


def judge(node_events: dict[int, list[ev.Event]], s: Scenario | None = None, **kw: Any) -> Any:
    return StragglerChecker().check(history(node_events, **kw), s or scenario())


def test_the_slowed_rank_reported_and_no_other_passes() -> None:
    v = judge(story())
    assert v.status == PASS, v
    assert v.summary == "rank(s) [1] reported as stragglers, no other"
    assert v.measured["reported"] == [1] and v.measured["first_report_t"] == {"1": 6.0}
    assert v.measured["windows_scored"] == 4
    assert judge(story(), scenario(ranks=(1,), section="compute")).status == PASS


def test_job_wide_reports_from_one_node_count_for_every_rank() -> None:
    # After the job-wide change one agent (group rank 0) reports for all nodes' ranks.
    events = story()
    events[0].append(detected(0, 9.0, 3))
    assert reports(history(events)).keys() == {1, 3}
    v = judge(events, scenario(ranks=(1, 3)))
    assert v.status == PASS, v


def test_missing_false_and_wrong_section_reports_fail() -> None:
    quiet = {n: [e for e in evs if e.name != ev.STRAGGLER_DETECTED] for n, evs in story().items()}
    v = judge(quiet)
    assert v.status == FAIL and "rank(s) [1] never reported" in v.summary, v
    noisy = story()
    noisy[1].append(detected(1, 7.0, 2))
    v = judge(noisy)
    assert v.status == FAIL and "rank(s) [2] reported but not slowed (false report)" in v.summary
    v = judge(story(), scenario(section="data"))
    assert v.status == FAIL and "never reported" in v.summary


def test_none_expects_silence_and_needs_scored_windows() -> None:
    quiet = {n: [e for e in evs if e.name != ev.STRAGGLER_DETECTED] for n, evs in story().items()}
    v = judge(quiet, scenario(ranks=()), slowed=None)
    assert v.status == PASS and v.summary == "no straggler reported over 4 window(s)", v
    v = judge(story(), scenario(ranks=()), slowed=None)
    assert v.status == FAIL and "false report" in v.summary
    started = [event(0, ev.AGENT_STARTED, 0.1)]
    v = judge({0: started, 1: []}, scenario(ranks=()), slowed=None)
    assert v.status == UNKNOWN and "no straggler window was scored" in v.summary


def test_injected_without_a_fired_fault_fails_and_torchrun_is_unknown() -> None:
    v = judge(story(), slowed=None)
    assert v.status == FAIL and "no slow_worker fault slowed a rank" in v.summary
    s = scenario()
    torchrun = Scenario(name=s.name, topology=s.topology, expect=s.expect, launcher="torchrun")
    assert judge(story(), torchrun).status == UNKNOWN


def test_registered_and_applies_only_when_expected() -> None:
    assert [v.name for v in run_checkers(history(story()), scenario())].count("straggler") == 1
    assert not StragglerChecker().applies(Scenario(name="x"))
