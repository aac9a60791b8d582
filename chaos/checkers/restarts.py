"""restarts and scale_events_uncharged.

restarts: the job-wide charged restart count (the largest restart_count in the final
round's rendezvous.round.complete events) against expect.restarts, and restarts by reason
(group.restart events, one per round across nodes) against expect.restarts_by_reason. With
torchrun (no event log) the count comes from the workload's reports (TORCHELASTIC_RESTART_COUNT)
and restarts by reason cannot be told.

scale_events_uncharged: every group.restart for scale_up, node_lost or node_left has
charged=false (membership changes must not spend the restart budget).
"""

from __future__ import annotations

from collections import Counter

from chaos.checkers import facts
from chaos.checkers.verdict import Verdict, unknown, verdict
from chaos.history import History
from chaos.scenario.schema import IntRange, Scenario


def _range(r: IntRange) -> str:
    return str(r.low) if r.low == r.high else f"{r.low}..{r.high}"


def _restarts(count: int) -> str:
    return f"{count} charged restart{'' if count == 1 else 's'}"


class RestartsChecker:
    name = "restarts"

    def applies(self, scenario: Scenario) -> bool:
        return True

    def check(self, history: History, scenario: Scenario) -> Verdict:
        expect = scenario.expect
        no_log = facts.no_event_log_reason(history, scenario)
        if no_log is not None:
            counts = [
                c for s in history.steps if (c := facts.as_int(s.get("restart_count"))) is not None
            ]
            if not counts:
                return unknown(self.name, f"{no_log} and the workload reported no restart_count")
            charged = max(counts)
            evidence = [f"{no_log}: restart count from the workload's reports ({charged})"]
            by_reason: dict[str, int] | None = None
        else:
            final = facts.rounds(history)
            if not final:
                return unknown(self.name, "no rendezvous round completed")
            charged = final[-1].restart_count
            evidence = [f"final round {final[-1].number}: job-wide restart_count {charged}"]
            if final[-1].budget_spent:
                evidence.append(
                    "the final round spent the budget: its count includes the failure "
                    "that was not restarted (max_restarts + 1)"
                )
            by_round = facts.restarts_by_round(history)
            by_reason = dict(Counter(str(r.fields.get("reason")) for r in by_round.values()))
            for number, restart in sorted(by_round.items(), key=lambda kv: kv[1].wall):
                charge = "charged" if restart.fields.get("charged") else "not charged"
                detail = restart.fields.get("detail")
                evidence.append(
                    f"round {number}: {restart.fields.get('reason')} ({charge})"
                    + (f": {detail}" if detail else "")
                )
        problems = []
        if expect.restarts is not None and not expect.restarts.contains(charged):
            problems.append(f"{_restarts(charged)}, expected {_range(expect.restarts)}")
        undecided = []
        for reason, bound in sorted(expect.restarts_by_reason.items()):
            if by_reason is None:
                undecided.append(reason)
            elif not bound.contains(by_reason.get(reason, 0)):
                problems.append(
                    f"{by_reason.get(reason, 0)} {reason} restarts, expected {_range(bound)}"
                )
        measured = {"charged": charged, "by_reason": by_reason}
        if problems:
            return verdict(self.name, False, "; ".join(problems), evidence, measured)
        if undecided:
            return unknown(
                self.name,
                f"{_restarts(charged)}; restarts by reason ({', '.join(undecided)}) "
                "need the launcher's event log",
                evidence,
                measured,
            )
        reasons = ", ".join(f"{k} {v}" for k, v in sorted((by_reason or {}).items()))
        wanted = f" (expected {_range(expect.restarts)})" if expect.restarts is not None else ""
        summary = f"{_restarts(charged)}{wanted}" + (f"; by reason: {reasons}" if reasons else "")
        return verdict(self.name, True, summary, evidence, measured)


class ScaleUnchargedChecker:
    name = "scale_events_uncharged"

    def applies(self, scenario: Scenario) -> bool:
        return scenario.expect.uncharged_scale_events

    def check(self, history: History, scenario: Scenario) -> Verdict:
        no_log = facts.no_event_log_reason(history, scenario)
        if no_log is not None:
            return unknown(self.name, f"cannot tell charged restarts apart: {no_log}")
        scale = [
            r for r in facts.restarts(history) if r.fields.get("reason") in facts.SCALE_REASONS
        ]
        charged = [r for r in scale if r.fields.get("charged") is not False]
        evidence = [
            f"node {r.node} round {r.round}: {r.fields.get('reason')} charged="
            f"{r.fields.get('charged')} restart_count={r.fields.get('restart_count')}"
            for r in charged
        ]
        rounds = sorted({r.round for r in scale if r.round is not None})
        measured = {"scale_restarts": len(rounds), "charged": len(charged)}
        if charged:
            return verdict(
                self.name,
                False,
                f"{len(charged)} scale event restart(s) charged to the budget",
                evidence,
                measured,
            )
        return verdict(
            self.name,
            True,
            f"{len(rounds)} scale event round(s), none charged",
            [f"scale rounds: {rounds}"] if rounds else [],
            measured,
        )
