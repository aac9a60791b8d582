"""The checkers, on synthetic run directories: every healthy story passes, and each broken
fact fails the checker that owns it (and only says unknown when the history cannot tell)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from chaos.checkers import FAIL, PASS, UNKNOWN, Verdict, default_checkers, run_checkers, worst
from chaos.checkers.hygiene import HygieneChecker
from chaos.checkers.lost_work import LostWorkChecker
from chaos.checkers.outcome import OutcomeChecker
from chaos.checkers.rank_map import RankMapChecker
from chaos.checkers.restarts import RestartsChecker, ScaleUnchargedChecker
from chaos.checkers.root_cause import RootCauseChecker
from chaos.checkers.timing import DetectionChecker, RecoveryChecker
from chaos.checkers.verdict import Checker
from chaos.checkers.world import FinalWorldSizeChecker
from chaos.history import load_history
from chaos.scenario.schema import Fault, IntRange, RootCause, Scenario, Trigger
from launcher import events as ev
from tests.unit.chaos_run_builder import (
    RunBuilder,
    budget_spent_run,
    kill_worker_run,
    kill_worker_scenario,
    scale_up_run,
    scale_up_scenario,
    torchrun_run,
)

ALL_NAMES = [
    "outcome",
    "restarts",
    "scale_events_uncharged",
    "final_world_size",
    "rank_map",
    "root_cause",
    "lost_work",
    "detection_time",
    "recovery_time",
    "hygiene",
]


def judge(builder: RunBuilder, scenario: Scenario, checker: Checker) -> Verdict:
    return checker.check(load_history(builder.write()), scenario)


@pytest.fixture
def kill(tmp_path: Path) -> RunBuilder:
    return kill_worker_run(tmp_path / "run")


# -- healthy stories ------------------------------------------------------------------------
def test_kill_worker_story_passes_every_checker(kill: RunBuilder) -> None:
    verdicts = run_checkers(load_history(kill.write()), kill_worker_scenario())
    assert [v.name for v in verdicts] == ALL_NAMES
    assert {v.name: v.status for v in verdicts} == dict.fromkeys(ALL_NAMES, PASS), verdicts


def test_scale_up_story_passes(tmp_path: Path) -> None:
    verdicts = run_checkers(load_history(scale_up_run(tmp_path).write()), scale_up_scenario())
    assert all(v.status == PASS for v in verdicts), verdicts
    assert "root_cause" not in [v.name for v in verdicts]  # nothing expected: not applicable


def test_checkers_only_run_when_the_scenario_asks(kill: RunBuilder) -> None:
    expect = replace(
        kill_worker_scenario().expect,
        uncharged_scale_events=False,
        rank_invariants=False,
        hygiene=False,
        final_world_size=None,
        root_cause=None,
    )
    scenario = replace(kill_worker_scenario(), expect=expect)
    names = [v.name for v in run_checkers(load_history(kill.write()), scenario)]
    assert names == ["outcome", "restarts", "lost_work", "detection_time", "recovery_time"]


# -- outcome --------------------------------------------------------------------------------
def test_outcome_fails_when_an_agent_exits_nonzero(kill: RunBuilder) -> None:
    kill.edit_record("node.exit", {"node": 1}, exit_code=1)
    kill.drop(1, ev.AGENT_EXIT, {})
    v = judge(kill, kill_worker_scenario(), OutcomeChecker())
    assert v.status == FAIL and "agent_error" in v.summary
    assert v.measured["failed_nodes"] == [1]


def test_outcome_fails_when_the_final_step_is_not_reached(kill: RunBuilder) -> None:
    kill.steps = [s for s in kill.steps if s["step"] < 30]
    v = judge(kill, kill_worker_scenario(), OutcomeChecker())
    assert v.status == FAIL and "final_step_not_reached" in v.summary


def test_outcome_ignores_a_node_a_fault_killed(kill: RunBuilder) -> None:
    kill.record("fault.fire", 5.0, fault=1, fault_kind="crash_node", did={"node": 1})
    kill.edit_record("node.exit", {"node": 1}, exit_code=-9)
    scenario = kill_worker_scenario()
    crash = Fault(kind="crash_node", node=1, trigger=Trigger(kind="at_s", at_s=5.0))
    v = judge(kill, replace(scenario, faults=(*scenario.faults, crash)), OutcomeChecker())
    assert v.status == PASS and "not judged" in " ".join(v.evidence)


def _partition_scenario(**fault: Any) -> Scenario:
    scenario = kill_worker_scenario()
    cut = Fault(kind="partition", trigger=Trigger(kind="at_s", at_s=5.0), **fault)
    return replace(scenario, faults=(*scenario.faults, cut))


@pytest.mark.parametrize(
    ("fault", "outcome", "status"),
    [
        ({"node": 1}, "error", PASS),  # cut off, gave up: the majority's finish counts
        ({"node": 1, "from_store": True}, "error", PASS),
        ({"groups": ((0,), (1,))}, "error", PASS),  # node 1 is outside the store host's group
        ({"groups": ((1,), (0,))}, "error", PASS),
        ({"node": 0}, "error", FAIL),  # node 1 was not the one cut off
        ({"node": 1}, "failed", FAIL),  # a worker failure is not "gave up while cut off"
    ],
)
def test_outcome_accepts_a_cut_off_node_that_gave_up(
    kill: RunBuilder, fault: dict[str, Any], outcome: str, status: str
) -> None:
    kill.record("fault.fire", 5.0, fault=1, fault_kind="partition", did={"node": fault.get("node")})
    kill.edit_record("node.exit", {"node": 1}, exit_code=1)
    kill.edit(1, ev.AGENT_EXIT, {}, outcome=outcome, exit_code=1)
    v = judge(kill, _partition_scenario(**fault), OutcomeChecker())
    assert v.status == status, v
    if status == PASS:
        assert "gave up while cut off" in " ".join(v.evidence)


def test_a_node_the_harness_killed_at_the_timeout_means_timed_out(kill: RunBuilder) -> None:
    kill.edit_record("node.exit", {"node": 1}, exit_code=-9, killed_by_harness=True)
    kill.drop(1, ev.AGENT_EXIT, {})
    v = judge(kill, kill_worker_scenario(), OutcomeChecker())
    assert v.status == FAIL and v.measured["reasons"] == ["timed_out"]


def test_expected_failure_with_its_reason(tmp_path: Path) -> None:
    run = budget_spent_run(tmp_path)
    expect_failed = replace(
        kill_worker_scenario().expect, outcome="failed", failure_reason="budget_spent"
    )
    v = judge(run, replace(kill_worker_scenario(), expect=expect_failed), OutcomeChecker())
    assert v.status == PASS, v
    assert {"budget_spent", "worker_failure"} <= set(v.measured["reasons"])
    wrong = replace(expect_failed, failure_reason="store_lost")
    v = judge(run, replace(kill_worker_scenario(), expect=wrong), OutcomeChecker())
    assert v.status == FAIL and "expected failed (store_lost)" in v.summary


def test_unexpected_failure_fails_outcome(tmp_path: Path) -> None:
    v = judge(budget_spent_run(tmp_path), kill_worker_scenario(), OutcomeChecker())
    assert v.status == FAIL and v.summary.startswith("job failed")


# -- restarts -------------------------------------------------------------------------------
def test_too_many_restarts(kill: RunBuilder) -> None:
    scenario = replace(
        kill_worker_scenario(),
        expect=replace(kill_worker_scenario().expect, restarts=IntRange(low=0, high=0)),
    )
    v = judge(kill, scenario, RestartsChecker())
    assert v.status == FAIL and "1 charged restart, expected 0" in v.summary


def test_restarts_by_reason_are_counted_once_per_round(kill: RunBuilder) -> None:
    expect = replace(
        kill_worker_scenario().expect, restarts_by_reason={"scale_up": IntRange(low=1, high=2)}
    )
    v = judge(kill, replace(kill_worker_scenario(), expect=expect), RestartsChecker())
    assert v.status == FAIL and "0 scale_up restarts" in v.summary
    assert v.measured["by_reason"] == {"worker_failure": 1}  # two nodes logged it, one round


def test_charged_scale_up_fails(tmp_path: Path) -> None:
    run = scale_up_run(tmp_path)
    assert run.edit(2, ev.GROUP_RESTART, {"reason": "scale_up"}, charged=True) == 1
    v = judge(run, scale_up_scenario(), ScaleUnchargedChecker())
    assert v.status == FAIL and "node 2 round 1: scale_up charged=True" in v.evidence[0]


def test_final_world_size_mismatch(kill: RunBuilder) -> None:
    expect = replace(kill_worker_scenario().expect, final_world_size=6)
    v = judge(kill, replace(kill_worker_scenario(), expect=expect), FinalWorldSizeChecker())
    assert v.status == FAIL and v.summary == "final world size 4, expected 6"


# -- rank map -------------------------------------------------------------------------------
def rank_map(builder: RunBuilder, scenario: Scenario | None = None) -> Verdict:
    return judge(builder, scenario or kill_worker_scenario(), RankMapChecker())


def test_duplicated_rank(kill: RunBuilder) -> None:
    kill.edit(1, ev.WORKER_STARTED, {"round": 1, "local_rank": 0}, rank=1)
    v = rank_map(kill)
    assert v.status == FAIL
    assert any("round 1: rank 1 started 2 times" in e for e in v.evidence)


def test_non_contiguous_ranks(kill: RunBuilder) -> None:
    kill.edit(1, ev.WORKER_STARTED, {"round": 0, "local_rank": 1}, rank=5)
    v = rank_map(kill)
    assert v.status == FAIL
    text = "\n".join(v.evidence)
    assert "ranks not contiguous" in text and "are not exactly 0..3" in text


def test_local_ranks_must_be_0_to_l(kill: RunBuilder) -> None:
    kill.edit(0, ev.WORKER_STARTED, {"round": 0, "local_rank": 1}, local_rank=2, rank=2)
    v = rank_map(kill)
    assert any("node 0 local ranks [0, 2], expected 0..1" in e for e in v.evidence)


def test_group_rank_and_base_rank_must_agree(kill: RunBuilder) -> None:
    kill.edit(1, ev.RDZV_ROUND_COMPLETE, {"round": 0}, group_rank=0, base_rank=0)
    v = rank_map(kill)
    text = "\n".join(v.evidence)
    assert "group rank(s) [0] held by more than one node" in text
    assert "GROUP_RANK 1, the round says 0" in text


def test_nodes_must_agree_on_world_size_and_master(kill: RunBuilder) -> None:
    kill.edit(1, ev.RDZV_ROUND_COMPLETE, {"round": 1}, world_size=6, master_port=1)
    text = "\n".join(rank_map(kill).evidence)
    assert "round 1: nodes disagree on world_size (node 0: 4, node 1: 6)" in text
    assert "nodes disagree on master_port" in text


def test_survivors_keep_their_order(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.form_round(0.1, 0, [0, 1])
    b.form_round(1.0, 1, [1, 0], reason="worker_failure", restart_count=1, charged=True)
    b.finish(2.0, [0, 1])
    v = rank_map(b)
    assert v.status == FAIL and "surviving nodes reordered from [0, 1] to [1, 0]" in v.summary


def test_a_node_without_workers_is_a_violation_unless_a_fault_stopped_it(kill: RunBuilder) -> None:
    kill.drop(1, ev.WORKER_STARTED, {"round": 1})
    v = rank_map(kill)
    assert v.status == FAIL and "round 1: node 1 started no worker" in v.summary
    kill.record("fault.fire", 2.5, fault=1, fault_kind="kill_agent", did={"node": 1})
    assert rank_map(kill).status == PASS


# -- root cause -----------------------------------------------------------------------------
def test_root_cause_matches_expectation_and_fault(kill: RunBuilder) -> None:
    v = judge(kill, kill_worker_scenario(), RootCauseChecker())
    assert v.status == PASS and v.measured == {
        "rank": 1,
        "node": 0,
        "exit_code": -9,
        "signal": "SIGKILL",
        "fault": 0,
    }


def test_wrong_root_cause(kill: RunBuilder) -> None:
    expect = replace(kill_worker_scenario().expect, root_cause=RootCause(rank=2, signal="SIGTERM"))
    v = judge(kill, replace(kill_worker_scenario(), expect=expect), RootCauseChecker())
    assert v.status == FAIL
    assert "rank 1 (expected 2)" in v.summary and "signal SIGKILL (expected SIGTERM)" in v.summary


def test_root_cause_must_be_the_injected_fault(kill: RunBuilder) -> None:
    kill.edit_record("fault.fire", {"fault": 0}, did={"rank": 1, "node": 0, "pid": 42})
    v = judge(kill, kill_worker_scenario(), RootCauseChecker())
    assert v.status == FAIL and "matches no injected kill_worker fault" in v.summary


def test_root_cause_prefers_agent_exit_and_exit_codes(tmp_path: Path) -> None:
    expect = replace(
        kill_worker_scenario().expect, root_cause=RootCause(rank=3, node=1, exit_code=3)
    )
    v = judge(
        budget_spent_run(tmp_path),
        replace(kill_worker_scenario(), expect=expect),
        RootCauseChecker(),
    )
    assert v.status == PASS, v
    assert v.evidence[0].startswith("agent.exit root_cause: rank 3 on node 1, exit code 3")


def test_no_failure_reported_fails_root_cause(tmp_path: Path) -> None:
    v = judge(scale_up_run(tmp_path), kill_worker_scenario(), RootCauseChecker())
    assert v.status == FAIL and v.summary == "the launcher reported no failure at all"


# -- lost work ------------------------------------------------------------------------------
def test_lost_steps_above_the_checkpoint_interval(kill: RunBuilder) -> None:
    for step in kill.steps:
        if step["resumed_from"] == 10:
            step["resumed_from"] = 5
    v = judge(kill, kill_worker_scenario(), LostWorkChecker())
    assert v.status == FAIL and "8 step(s) redone" in v.evidence[0]
    assert "above the bound 5 (workload.checkpoint_every)" in v.summary
    expect = replace(kill_worker_scenario().expect, max_lost_steps=8)
    assert (
        judge(kill, replace(kill_worker_scenario(), expect=expect), LostWorkChecker()).status
        == PASS
    )


def test_a_restart_from_scratch_is_seen_by_the_step_going_back(tmp_path: Path) -> None:
    """Uncharged, before any checkpoint, same world: only the steps tell the restart."""
    run = scale_up_run(tmp_path)
    run.steps = [s for s in run.steps if s["world"] == 4]
    run.report_steps(2.7, 0, 39, restart_count=0, resumed=None, world=4)
    v = judge(run, scale_up_scenario(), LostWorkChecker())
    assert v.measured["lost_steps"] == [14] and v.status == FAIL
    assert "resumed from None, 14 step(s) redone" in v.evidence[0]


def test_no_steps_is_unknown(kill: RunBuilder) -> None:
    kill.steps = []
    assert judge(kill, kill_worker_scenario(), LostWorkChecker()).status == UNKNOWN


# -- detection and recovery -----------------------------------------------------------------
def test_timings_are_measured_and_bounded(kill: RunBuilder) -> None:
    history = load_history(kill.write())
    fast = replace(kill_worker_scenario().expect, detect_within_s=0.005, recover_within_s=0.2)
    scenario = replace(kill_worker_scenario(), expect=fast)
    detect = DetectionChecker().check(history, scenario)
    recover = RecoveryChecker().check(history, scenario)
    assert detect.status == FAIL and recover.status == FAIL
    assert detect.measured["max_s"] == pytest.approx(0.01, abs=1e-6)
    assert recover.measured["max_s"] == pytest.approx(0.511, abs=1e-6)
    assert "worker.exited rank 1 on node 0" in detect.evidence[0]
    unbounded = replace(fast, detect_within_s=None, recover_within_s=None)
    v = DetectionChecker().check(history, replace(scenario, expect=unbounded))
    assert v.status == PASS and "0.010s (no bound set)" in v.summary


def test_a_fault_nobody_reacted_to_has_nothing_to_recover(kill: RunBuilder) -> None:
    kill.record("fault.fire", 4.0, fault=1, fault_kind="pause_node", did={"node": 1})
    history = load_history(kill.write())
    detect = DetectionChecker().check(history, kill_worker_scenario())
    recover = RecoveryChecker().check(history, kill_worker_scenario())
    assert detect.status == FAIL and "detection 0.010s, never" in detect.summary
    assert recover.status == PASS and "nothing to recover from" in recover.evidence[1]


def test_scale_up_is_detected_by_a_membership_change(tmp_path: Path) -> None:
    v = judge(scale_up_run(tmp_path), scale_up_scenario(), DetectionChecker())
    assert "rendezvous.membership.changed scale_up on node 0" in v.evidence[0]


def test_skipped_faults_are_not_timed(kill: RunBuilder) -> None:
    kill.edit_record("fault.fire", {"fault": 0}, did={"skipped": "no worker with rank 1"})
    v = judge(kill, kill_worker_scenario(), DetectionChecker())
    assert v.status == UNKNOWN and v.summary == "every fault was skipped"


# -- hygiene --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("end", "status"),
    [
        ({"leftover_pids": [4242]}, FAIL),
        ({"bound_ports": [29500]}, FAIL),
        ({}, PASS),
    ],
)
def test_hygiene(kill: RunBuilder, end: dict[str, Any], status: str) -> None:
    kill.edit_record("run.end", {}, **end)
    v = judge(kill, kill_worker_scenario(), HygieneChecker())
    assert v.status == status
    if end:
        assert str(next(iter(end.values()))[0]) in v.evidence[0]


def test_hygiene_without_run_end_is_unknown(kill: RunBuilder) -> None:
    kill.records = [r for r in kill.records if r["kind"] != "run.end"]
    assert judge(kill, kill_worker_scenario(), HygieneChecker()).status == UNKNOWN


# -- torchrun: no event log -----------------------------------------------------------------
def test_torchrun_runs_fall_back_to_exits_and_reports(tmp_path: Path) -> None:
    scenario = replace(kill_worker_scenario(), launcher="torchrun")
    verdicts = {
        v.name: v for v in run_checkers(load_history(torchrun_run(tmp_path).write()), scenario)
    }
    assert verdicts["outcome"].status == PASS
    assert verdicts["final_world_size"].status == PASS
    assert verdicts["lost_work"].status == PASS and verdicts["hygiene"].status == PASS
    # the count comes from the reports, but restarts by reason need the event log
    assert verdicts["restarts"].status == UNKNOWN and verdicts["restarts"].measured["charged"] == 1
    for name in ("scale_events_uncharged", "rank_map", "root_cause", "detection_time"):
        assert verdicts[name].status == UNKNOWN
        assert "torchrun, which writes no event log" in verdicts[name].summary
    no_reason = replace(scenario.expect, restarts_by_reason={})
    v = RestartsChecker().check(load_history(tmp_path), replace(scenario, expect=no_reason))
    assert v.status == PASS and v.measured["charged"] == 1


# -- running them ---------------------------------------------------------------------------
class Exploding:
    name = "exploding"

    def applies(self, scenario: Scenario) -> bool:
        return True

    def check(self, history: object, scenario: Scenario) -> Verdict:
        raise KeyError("missing")


def test_a_crashing_checker_gives_unknown_and_the_others_still_run(kill: RunBuilder) -> None:
    history = load_history(kill.write())
    checkers: list[Checker] = [OutcomeChecker(), Exploding(), HygieneChecker()]
    verdicts = run_checkers(history, kill_worker_scenario(), checkers)
    assert [v.status for v in verdicts] == [PASS, UNKNOWN, PASS]
    assert verdicts[1].name == "exploding"
    assert verdicts[1].summary == "checker crashed: KeyError: 'missing'"


def test_worst_wins() -> None:
    assert worst([PASS, UNKNOWN, PASS]) == UNKNOWN
    assert worst([UNKNOWN, FAIL, PASS]) == FAIL
    assert worst([]) == PASS


def test_verdict_rejects_a_bad_status_and_keeps_summaries_on_one_line() -> None:
    with pytest.raises(ValueError, match="status"):
        Verdict(name="x", status="maybe", summary="")
    assert Verdict(name="x", status=PASS, summary="a\nb").summary == "a b"


def test_default_checkers_have_distinct_names() -> None:
    # `hang` and `straggler` run only when expected (tests/unit/test_hang_checker.py,
    # test_straggler_checker.py), so the kill-worker
    # story's ALL_NAMES lacks them.
    names = [c.name for c in default_checkers()]
    assert names == [*ALL_NAMES[:-1], "hang", "straggler", "intruder", "hygiene"]
    assert len(set(names)) == len(names)


def test_a_planned_fault_that_never_fired_cannot_be_timed(kill: RunBuilder) -> None:
    kill.records = [r for r in kill.records if r["kind"] != "fault.fire"]
    v = judge(kill, kill_worker_scenario(), DetectionChecker())
    assert v.status == UNKNOWN and "no fault fired" in v.summary


def test_ranks_of_one_incarnation_may_disagree_on_the_restart_count(kill: RunBuilder) -> None:
    """ft_launcher restarts each node's workers with that node's own count: after one
    restart, ranks 0-1 report 1 and ranks 2-3 report 0, interleaved. One restart, not one
    per report."""
    for step in kill.steps:
        if step["restart_count"] == 1 and step["rank"] >= 2:
            step["restart_count"] = 0
    v = judge(kill, kill_worker_scenario(), LostWorkChecker())
    assert v.status == PASS and v.measured["lost_steps"] == [3], v


def test_a_node_back_under_a_new_identity_is_a_newcomer_not_a_survivor(tmp_path: Path) -> None:
    """Node 0 was declared lost while cut from the store, and rejoined as a new incarnation:
    it goes after the survivors, which is no reordering."""
    b = RunBuilder(tmp_path)
    b.form_round(0.1, 0, [0, 1])
    b.form_round(1.0, 1, [1, 0], reason="node_lost")
    members = [b.addr(1), b.addr(0) + "-again"]
    for node in (0, 1):
        b.edit(node, ev.RDZV_ROUND_COMPLETE, {"round": 1}, members=members)
    b.finish(2.0, [0, 1])
    assert rank_map(b).status == PASS, rank_map(b)
