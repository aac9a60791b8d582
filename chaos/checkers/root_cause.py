"""root_cause: the failure the launcher blamed is the one the scenario expects and injected.

The launcher's root cause is the earliest `root_cause` among the nodes' agent.exit events
or, when no agent named one (the job recovered), the earliest failure of any group.failed.
Its rank, node (the harness index of the node whose log holds it), exit code and signal are
compared with expect.root_cause (fields left unset are not compared), and with what the
kill_worker faults did (their fault.fire `did` keys rank, local_rank, pid, node, signal,
exit_code, where present).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos.checkers import facts
from chaos.checkers.verdict import Verdict, unknown, verdict
from chaos.history import History
from chaos.scenario.schema import Scenario
from launcher import events as ev


def launcher_root_cause(history: History) -> tuple[int, Mapping[str, Any], str] | None:
    """(node, failure object, where it was found) of the launcher's root cause."""
    named = [
        (node, e.fields["root_cause"])
        for node, e in facts.events_named(history, ev.AGENT_EXIT)
        if isinstance(e.fields.get("root_cause"), dict)
    ]
    where = "agent.exit root_cause"
    if not named:
        # The job recovered: each failed group's own blame (launchers that name it), else
        # every failure it listed.
        named = [
            (node, e.fields["root_cause"])
            for node, e in facts.events_named(history, ev.GROUP_FAILED)
            if isinstance(e.fields.get("root_cause"), dict)
        ]
        where = "group.failed root_cause"
    if not named:
        named = [
            (node, failure)
            for node, e in facts.events_named(history, ev.GROUP_FAILED)
            for failure in e.fields.get("failures") or []
            if isinstance(failure, dict)
        ]
        where = "group.failed"
    if not named:
        return None
    node, failure = min(named, key=lambda nf: _when(nf[1]))
    return node, failure, where


def _when(failure: Mapping[str, Any]) -> float:
    """Sub-second where the launcher knows it (an error file's timestamp is whole seconds)."""
    precise = failure.get("precise_at")
    if isinstance(precise, int | float):
        return float(precise)
    return float(failure.get("timestamp") or 0.0)


def _observed(node: int, failure: Mapping[str, Any]) -> dict[str, Any]:
    code = facts.as_int(failure.get("exit_code"))
    sig = facts.signal_name(failure.get("signal"))
    if sig is None and code is not None and code < 0:
        sig = facts.signal_name(-code)
    return {
        "rank": facts.as_int(failure.get("rank")),
        "node": node,
        "exit_code": code,
        "signal": sig,
    }


def _mismatches(observed: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    return [
        f"{key} {observed.get(key)} (expected {value})"
        for key, value in wanted.items()
        if value is not None and observed.get(key) != value
    ]


class RootCauseChecker:
    name = "root_cause"

    def applies(self, scenario: Scenario) -> bool:
        return scenario.expect.root_cause is not None

    def check(self, history: History, scenario: Scenario) -> Verdict:
        expected = scenario.expect.root_cause
        no_log = facts.no_event_log_reason(history, scenario)
        if expected is None or no_log is not None:
            return unknown(self.name, f"cannot name the root cause: {no_log or 'nothing expected'}")
        found = launcher_root_cause(history)
        if found is None:
            return verdict(self.name, False, "the launcher reported no failure at all")
        node, failure, where = found
        observed = _observed(node, failure)
        said = f"rank {observed['rank']} on node {node}, exit code {observed['exit_code']}" + (
            f" ({observed['signal']})" if observed["signal"] else ""
        )
        evidence = [f"{where}: {said}"]
        if failure.get("message"):
            evidence.append(f"message: {failure.get('message')}")
        wanted = {
            "rank": expected.rank,
            "node": expected.node,
            "exit_code": expected.exit_code,
            "signal": facts.signal_name(expected.signal),
        }
        problems = _mismatches(observed, wanted)
        kills = [
            f
            for f in facts.fault_fires(history, scenario)
            if f.kind == "kill_worker" and f.skipped is None
        ]
        matched = None
        for fire in kills:
            did = {
                "rank": facts.as_int(fire.did.get("rank")),
                "pid": facts.as_int(fire.did.get("pid")),
                "node": facts.as_int(fire.did.get("node")),
                "exit_code": facts.as_int(fire.did.get("exit_code")),
                "signal": facts.signal_name(fire.did.get("signal")),
            }
            if did["exit_code"] is not None:
                did["signal"] = None  # the worker was made to exit with a code, not signaled
            seen = {**observed, "pid": facts.as_int(failure.get("pid"))}
            evidence.append(
                f"fault {fire.index} (kill_worker at t={fire.t:.2f}s) did {dict(fire.did)}"
            )
            if not _mismatches(seen, did):
                matched = fire.index
        if kills and matched is None:
            problems.append("it matches no injected kill_worker fault")
        elif not kills:
            evidence.append("no kill_worker fault fired: compared with the expectation only")
        measured = {**observed, "fault": matched}
        if problems:
            return verdict(
                self.name, False, f"root cause {said}: " + "; ".join(problems), evidence, measured
            )
        tail = f", injected by fault {matched}" if matched is not None else ""
        return verdict(self.name, True, f"root cause {said}{tail}", evidence, measured)
