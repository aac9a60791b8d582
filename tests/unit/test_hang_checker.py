"""The hang checker on synthetic histories: a healthy hang story passes, and each judgement
(count, detection lateness, dump coverage, culprits) fails on its own broken fact."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from chaos.checkers import FAIL, PASS, UNKNOWN, default_checkers, run_checkers
from chaos.checkers.hangs import HangChecker, incidents
from chaos.history import History
from chaos.scenario.schema import (
    INJECTED,
    Expectations,
    HangExpectation,
    IntRange,
    Scenario,
    Topology,
)
from launcher import events as ev

T0 = 1_800_000_000.0
NODE_IDS = {0: "127.0.0.2", 1: "127.0.0.3"}


def scenario(**hang: Any) -> Scenario:
    expect = HangExpectation(**{"culprits": (3,), "detect_within_s": 2.0, **hang})
    return Scenario(
        name="hang",
        topology=Topology(nodes=2, nproc_per_node=2),
        expect=Expectations(restarts=IntRange(low=1, high=1), hang=expect),
    )


def event(node: int, name: str, at: float, **fields: Any) -> tuple[int, ev.Event]:
    return node, ev.Event(
        name=name,
        run_id="r",
        node_id=NODE_IDS[node],
        pid=100 + node,
        wall_time=T0 + at,
        mono_time=at,
        fields=fields,
    )


def detected(node: int, at: float, source: str = "progress", rnd: int = 0, **more: Any) -> Any:
    fields: dict[str, Any] = {"round": rnd, "source": source, "rank": None, "detail": source}
    if source == "progress":
        fields.update(rank=3, step=7, seconds_since_progress=5.114, timeout_s=5.0)
    return event(node, ev.HANG_DETECTED, at, **{**fields, **more})


def dumped(node: int, rank: int, at: float, rnd: int = 0, **more: Any) -> Any:
    fields = {
        "round": rnd,
        "rank": rank,
        "local_rank": rank % 2,
        "pid": 200 + rank,
        "method": "py-spy",
        "path": f"/x/incidents/{rnd}-0/rank-{rank}.txt",
        "ok": True,
        "error": None,
        "seconds_after_detection": 0.02,
    }
    return event(node, ev.HANG_STACK_DUMPED, at, **{**fields, **more})


def blamed(node: int, at: float, culprits: list[int], rnd: int = 0, by: str = "step") -> Any:
    reason = "rank 3 at step 7, the others at step 8" if culprits else "collective hang"
    return event(node, ev.HANG_ATTRIBUTED, at, round=rnd, culprits=culprits, by=by, reason=reason)


def round_complete(node: int, at: float, rnd: int, world: int = 4) -> Any:
    reason = "initial" if rnd == 0 else "hang"
    return event(node, ev.RDZV_ROUND_COMPLETE, at, round=rnd, world_size=world, reason=reason)


def story() -> list[tuple[int, ev.Event]]:
    """Node 1's rank 3 hangs; node 1 notices, node 0 dumps on the peer report."""
    return [
        round_complete(0, 0.0, 0),
        round_complete(1, 0.0, 0),
        detected(1, 10.0),
        dumped(1, 2, 10.02),
        dumped(1, 3, 10.02),
        blamed(1, 10.02, [3]),
        detected(0, 10.05, source="peer"),
        dumped(0, 0, 10.08),
        dumped(0, 1, 10.08),
        blamed(0, 10.08, [], by="none"),
        round_complete(0, 10.2, 1),
        round_complete(1, 10.2, 1),
    ]


def history(pairs: list[tuple[int, ev.Event]]) -> History:
    by_node: dict[int, list[ev.Event]] = {}
    for node, e in sorted(pairs, key=lambda ne: ne[1].wall_time):
        by_node.setdefault(node, []).append(e)
    return History(
        run_dir=Path("/nonexistent"),
        records=(),
        events={n: tuple(evs) for n, evs in by_node.items()},
        steps=(),
    )


def judge(pairs: list[tuple[int, ev.Event]], s: Scenario | None = None) -> Any:
    return HangChecker().check(history(pairs), s or scenario())


def without(pairs: list[tuple[int, ev.Event]], name: str, **match: Any) -> list[Any]:
    return [
        (n, e)
        for n, e in pairs
        if not (e.name == name and all(e.fields.get(k) == v for k, v in match.items()))
    ]


# -- the healthy story ------------------------------------------------------------------------
def test_healthy_hang_story_passes_with_measured_values() -> None:
    v = judge(story())
    assert v.status == PASS, v
    assert "node 1 detected 0.114s late, 4/4 dumped, blamed [3]" in v.summary
    (m,) = v.measured["incidents"]
    assert m["origin_nodes"] == [1] and m["source"] == "progress" and m["rank"] == 3
    assert m["lateness_s"] == 0.114 and m["world_size"] == 4
    assert m["dumped"] == [0, 1, 2, 3] and m["missing"] == [] and m["methods"] == {"py-spy": 4}
    assert m["blamed"] == [3]
    assert m["blame_by_node"] == {
        "1": {"culprits": [3], "by": "step"},
        "0": {"culprits": [], "by": "none"},
    }
    assert any("node 0 (peer) blamed [] by none" in line for line in v.evidence)


def test_registered_and_applies_only_when_expected() -> None:
    assert "hang" in [c.name for c in default_checkers()]
    s = scenario()
    assert [v.name for v in run_checkers(history(story()), s) if v.name == "hang"] == ["hang"]
    assert not HangChecker().applies(replace(s, expect=replace(s.expect, hang=None)))


def test_torchrun_and_a_missing_log_are_unknown() -> None:
    assert judge(story(), replace(scenario(), launcher="torchrun")).status == UNKNOWN
    v = HangChecker().check(history([]), scenario())
    assert v.status == UNKNOWN and "no event log" in v.summary


# -- count ------------------------------------------------------------------------------------
def test_count_fails_without_an_incident_and_echoes_do_not_count() -> None:
    pairs = without(story(), ev.HANG_DETECTED, source="progress")
    v = judge(pairs)  # only node 0's peer echo is left
    assert v.status == FAIL and "0 hang incident(s), expected 1" in v.summary
    assert judge(pairs, scenario(count=IntRange(low=0, high=0), culprits=None)).status == PASS


def test_count_is_per_round() -> None:
    second = [
        detected(0, 20.0, rnd=1, rank=0),
        *(dumped(n, r, 20.02, rnd=1) for n, r in ((0, 0), (0, 1), (1, 2), (1, 3))),
        blamed(0, 20.02, [3], rnd=1),
    ]
    v = judge(story() + second)
    assert v.status == FAIL and "2 hang incident(s), expected 1" in v.summary
    assert judge(story() + second, scenario(count=IntRange(low=1, high=2))).status == PASS


def test_two_nodes_originating_one_round_are_one_incident() -> None:
    pairs = [
        *without(story(), ev.HANG_DETECTED, source="peer"),
        detected(0, 10.04, rank=0, seconds_since_progress=5.2),
    ]
    (incident,) = incidents(history(pairs))
    assert [node for node, _ in incident.origins] == [1, 0]  # the earliest judges lateness
    v = judge(pairs)
    assert v.status == PASS and v.measured["incidents"][0]["origin_nodes"] == [1, 0]
    assert sum("detected (progress)" in line for line in v.evidence) == 2


# -- detection lateness -----------------------------------------------------------------------
def test_late_detection_fails_and_is_always_measured() -> None:
    late = [
        *without(story(), ev.HANG_DETECTED, source="progress"),
        detected(1, 10.0, seconds_since_progress=8.0),
    ]
    v = judge(late)
    assert v.status == FAIL and "detected 3.000s late (bound 2.0s)" in v.summary
    v = judge(late, scenario(detect_within_s=None))
    assert v.status == PASS and v.measured["incidents"][0]["lateness_s"] == 3.0


def test_lateness_unknown_for_a_timer_without_ages_fails_a_bound() -> None:
    timer = [
        *without(story(), ev.HANG_DETECTED, source="progress"),
        detected(1, 10.0, source="file_timer", rank=3, scope_id="step"),
    ]
    assert judge(timer).status == FAIL
    assert judge(timer, scenario(detect_within_s=None)).status == PASS


# -- dump coverage ----------------------------------------------------------------------------
def test_a_missing_dump_fails_and_is_named() -> None:
    v = judge(without(story(), ev.HANG_STACK_DUMPED, rank=1))
    assert v.status == FAIL and "no ok stack dump of rank(s) [1]" in v.summary
    assert v.measured["incidents"][0]["missing"] == [1]
    assert judge(without(story(), ev.HANG_STACK_DUMPED, rank=1), scenario(dumps=False)).status == (
        PASS
    )


def test_a_failed_dump_does_not_count_and_shows_its_error() -> None:
    pairs = [*without(story(), ev.HANG_STACK_DUMPED, rank=0)]
    pairs.append(
        dumped(0, 0, 10.08, method="faulthandler", ok=False, error="no traceback", path=None)
    )
    v = judge(pairs)
    assert v.status == FAIL and "[0]" in v.summary
    assert any("failed to dump rank 0 (faulthandler): no traceback" in e for e in v.evidence)


def test_a_traceback_printed_to_the_console_counts() -> None:
    # docker without SYS_PTRACE: py-spy cannot attach, faulthandler prints to the console.
    pairs = [*without(story(), ev.HANG_STACK_DUMPED)]
    pairs += [
        dumped(n, r, 10.1, method="faulthandler", path=None)
        for n, r in ((0, 0), (0, 1), (1, 2), (1, 3))
    ]
    v = judge(pairs)
    assert v.status == PASS, v
    m = v.measured["incidents"][0]
    assert m["to_console"] == [0, 1, 2, 3] and m["methods"] == {"faulthandler": 4}


def test_dumps_of_another_round_do_not_cover_this_one() -> None:
    pairs = [*without(story(), ev.HANG_STACK_DUMPED, rank=2), dumped(1, 2, 3.0, rnd=5)]
    v = judge(pairs)
    assert v.status == FAIL and "[2]" in v.summary


def test_world_size_unknown_fails_coverage() -> None:
    v = judge(without(story(), ev.RDZV_ROUND_COMPLETE, round=0))
    assert v.status == FAIL and "world size unknown" in v.summary


# -- culprits ---------------------------------------------------------------------------------
def test_the_wrong_culprit_fails_with_the_blame_as_evidence() -> None:
    pairs = [*without(story(), ev.HANG_ATTRIBUTED, culprits=[3]), blamed(1, 10.02, [2])]
    v = judge(pairs)
    assert v.status == FAIL and "blamed [2], expected [3]" in v.summary
    assert any("node 1 (originating) blamed [2] by step" in line for line in v.evidence)


def test_culprit_unknown_is_judged_both_ways() -> None:
    unknown_blame = [
        *without(story(), ev.HANG_ATTRIBUTED, culprits=[3]),
        blamed(1, 10.02, [], by="none"),
    ]
    v = judge(unknown_blame)
    assert v.status == FAIL and "blamed culprit unknown, expected [3]" in v.summary
    assert judge(unknown_blame, scenario(culprits=())).status == PASS
    v = judge(story(), scenario(culprits=()))
    assert v.status == FAIL and "blamed [3], expected culprit unknown" in v.summary


def test_no_attribution_fails_and_culprits_unset_are_not_judged() -> None:
    pairs = without(story(), ev.HANG_ATTRIBUTED)
    v = judge(pairs)
    assert v.status == FAIL and "no node attributed the hang (expected [3])" in v.summary
    assert judge(pairs, scenario(culprits=None)).status == PASS


def test_blame_is_the_union_of_every_node_for_the_round() -> None:
    # Node 0 originates (its ranks wait for rank 3) and cannot see rank 3: "culprit unknown";
    # node 1, told by the peer report, blames rank 3 by step. Together: rank 3.
    pairs = [
        round_complete(0, 0.0, 0),
        round_complete(1, 0.0, 0),
        detected(0, 10.0, rank=1, step=8),
        dumped(0, 0, 10.02),
        dumped(0, 1, 10.02),
        blamed(0, 10.02, [], by="none"),
        detected(1, 10.05, source="peer"),
        dumped(1, 2, 10.08),
        dumped(1, 3, 10.08),
        blamed(1, 10.08, [3]),
    ]
    v = judge(pairs)
    assert v.status == PASS, v
    assert v.evidence[-2].startswith("round 0: node 0 (originating) blamed [] by none")
    assert v.evidence[-1].startswith("round 0: node 1 (peer) blamed [3] by step")
    # A node naming another rank contradicts it, whoever originated.
    contradicted = [*without(pairs, ev.HANG_ATTRIBUTED, culprits=[]), blamed(0, 10.02, [1])]
    v = judge(contradicted)
    assert v.status == FAIL and "blamed [1, 3], expected [3]" in v.summary
    # Blame in another round does not count for this one.
    elsewhere = [*without(pairs, ev.HANG_ATTRIBUTED, culprits=[3]), blamed(1, 3.0, [3], rnd=7)]
    assert judge(elsewhere).status == FAIL


# -- culprits: injected (the rank a hang_worker fault hung, from its fault.fire) --------------
def _fired(pairs: list[tuple[int, ev.Event]], *dids: dict[str, Any]) -> History:
    records = tuple(
        {"kind": "fault.fire", "t": 9.0, "wall": T0 + 9.0, "fault": i, "fault_kind": kind, "did": d}
        for i, (kind, d) in enumerate(("hang_worker", d) for d in dids)
    )
    return replace(history(pairs), records=records)


def test_injected_culprits_come_from_the_fault_that_fired() -> None:
    s = scenario(culprits=INJECTED)
    assert HangChecker().check(_fired(story(), {"rank": 3, "mode": "sleep"}), s).status == PASS
    v = HangChecker().check(_fired(story(), {"rank": 2, "mode": "sigstop"}), s)
    assert v.status == FAIL and "blamed [3], expected [2]" in v.summary, v
    assert "hang_worker faults hung rank(s) [2]" in v.evidence
    # A fault that hit nobody cannot say whom to blame: that is a failure, not a pass.
    v = HangChecker().check(_fired(story(), {"skipped": "no worker with rank 3"}), s)
    assert v.status == FAIL and "no hang_worker fault hung a rank" in v.summary, v
