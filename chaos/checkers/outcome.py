"""outcome: did the job end the way the scenario expects?

Succeeded = every started agent that no fault stopped on purpose (kill_agent, crash_node,
leave_node, kill_store_host) exited 0, and the workload reported its final step. A node a
partition cut off from the majority may instead give up (its agent exits with outcome
"error", e.g. store unreachable; without an event log, any non-zero exit): a cut-off node
cannot finish the job, and the majority finishing is what counts. Otherwise
failed, with the reasons the history shows (budget_spent, worker_failure, signaled,
store_lost, agent_error, timed_out, final_step_not_reached, nonzero_exit).
"""

from __future__ import annotations

from chaos.checkers import facts
from chaos.checkers.verdict import Verdict, verdict
from chaos.history import History
from chaos.scenario.schema import Scenario
from launcher import events as ev


class OutcomeChecker:
    name = "outcome"

    def applies(self, scenario: Scenario) -> bool:
        return True

    def check(self, history: History, scenario: Scenario) -> Verdict:
        stopped = facts.stopped_nodes(history, scenario)
        judged = [n for n in facts.started_nodes(history, scenario) if n not in stopped]
        with_log = facts.no_event_log_reason(history, scenario) is None
        cut_off = facts.cut_off_nodes(history, scenario)
        evidence: list[str] = []
        reasons: list[str] = []
        bad_nodes = []
        killed = {
            n
            for r in facts.records(history, "node.exit")
            if r.get("killed_by_harness") and (n := facts.as_int(r.get("node"))) is not None
        }
        for node in judged:
            code = history.exit_codes.get(node)
            exits = [e for e in history.events.get(node, ()) if e.name == ev.AGENT_EXIT]
            said = f", agent.exit outcome {exits[-1].fields.get('outcome')}" if exits else ""
            said += " (killed by the harness at the end of the run)" if node in killed else ""
            gave_up = node in cut_off and code not in (0, None) and node not in killed
            if gave_up and (not with_log or (exits and exits[-1].fields.get("outcome") == "error")):
                evidence.append(
                    f"node {node}: exit code {code}{said}: gave up while cut off (accepted)"
                )
                continue
            evidence.append(f"node {node}: exit code {code}{said}")
            if code != 0:
                bad_nodes.append(node)
                if node in killed:
                    reasons.append("timed_out")
                elif with_log and not exits and code is not None:
                    reasons.append("agent_error")
                elif not with_log:
                    reasons.append("nonzero_exit")
        if stopped:
            evidence.append(f"not judged (stopped by a fault): nodes {sorted(stopped)}")
        last, final = facts.max_step(history), facts.final_step(history, scenario)
        reached = last is not None and last >= final
        evidence.append(f"workload: last step reported {last}, final step {final}")
        if not reached:
            reasons.append("final_step_not_reached")
        reasons += self._reasons_from_events(history, scenario, stopped)
        end = facts.records(history, "run.end")
        if end and end[-1].get("timed_out"):
            reasons.append("timed_out")
        measured_outcome = "succeeded" if not bad_nodes and reached else "failed"
        reasons = sorted(set(reasons))
        if measured_outcome == "failed":
            evidence.insert(0, f"failure reasons seen: {', '.join(reasons) or 'none'}")
        expect = scenario.expect
        ok = measured_outcome == expect.outcome
        if ok and expect.outcome == "failed" and expect.failure_reason is not None:
            ok = expect.failure_reason in reasons
        wanted = expect.outcome + (
            f" ({expect.failure_reason})"
            if expect.failure_reason and expect.outcome == "failed"
            else ""
        )
        got = measured_outcome + (
            f" ({', '.join(reasons)})" if measured_outcome == "failed" else ""
        )
        summary = f"job {got}" + ("" if ok else f", expected {wanted}")
        return verdict(
            self.name,
            ok,
            summary,
            evidence,
            {"outcome": measured_outcome, "reasons": reasons, "failed_nodes": bad_nodes},
        )

    @staticmethod
    def _reasons_from_events(history: History, scenario: Scenario, stopped: set[int]) -> list[str]:
        reasons = []
        if any(r.budget_spent for r in facts.rounds(history)):
            reasons.append("budget_spent")
        for node, event in facts.events_named(history, ev.AGENT_EXIT):
            outcome = event.fields.get("outcome")
            if outcome == "failed" and event.fields.get("root_cause"):
                reasons.append("worker_failure")
            elif outcome == "signaled" and node not in stopped:
                reasons.append("signaled")
        store_hit = any(f.kind in facts.STORE_FAULTS for f in facts.fault_fires(history, scenario))
        if store_hit and any(
            code not in (0, None) and _store_error_or_silent(history.events.get(n, ()))
            for n, code in history.exit_codes.items()
            if n not in stopped
        ):
            reasons.append("store_lost")
        return reasons


def _store_error_or_silent(events: tuple[ev.Event, ...]) -> bool:
    """An agent that lost its store either ends on a rendezvous error (agent.exit with
    outcome "error") or dies without writing agent.exit at all."""
    exits = [e for e in events if e.name == ev.AGENT_EXIT]
    return not exits or exits[-1].fields.get("outcome") == "error"
