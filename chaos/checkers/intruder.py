"""intruder: what the job made of an intruder's writes (the `intruder` fault).

`expect.intruder: refused` (the default for a job with `rdzv_secret: true`): after the first
intruder fault fired, no node re-formed (no `rendezvous.membership.changed`), and some node
reported refusing a value (`rendezvous.value.rejected`) when the intruder wrote one that
running members read (the round pointer or a dead mark: `bump`, `join`, `garbage`,
`mark_dead`; `close` and `oversize` write keys read only when a round forms).
`believed`: some node re-formed after it (what an unsigned store trusts). Every intruder
fault must have written its keys (a `did` with an error fails the check). With torchrun (no
event log) the verdict is unknown; the outcome checker says what became of the job.
"""

from __future__ import annotations

from chaos.checkers import facts
from chaos.checkers.verdict import Verdict, unknown, verdict
from chaos.history import History
from chaos.scenario.schema import Scenario
from launcher import events as ev

READ_WHILE_RUNNING = frozenset({"bump", "join", "garbage", "mark_dead"})


class IntruderChecker:
    name = "intruder"

    def applies(self, scenario: Scenario) -> bool:
        return scenario.expect.intruder is not None

    def check(self, history: History, scenario: Scenario) -> Verdict:
        expected = scenario.expect.intruder
        fires = [f for f in facts.fault_fires(history, scenario) if f.kind == "intruder"]
        if not fires:
            return verdict(self.name, False, "no intruder fault fired", (), {})
        failed = [f"fault {f.index}: {f.skipped}" for f in fires if f.skipped]
        if failed:
            return verdict(self.name, False, "an intruder could not write", failed, {})
        no_log = facts.no_event_log_reason(history, scenario)
        if no_log is not None:
            return unknown(self.name, f"{no_log}: whether the job believed it cannot be told")
        walls = [f.wall for f in fires if f.wall is not None]
        if not walls:
            return unknown(self.name, "the intruder's fire has no wall time")
        t0 = min(walls)
        changed = [
            (node, e)
            for node, e in facts.events_named(history, ev.RDZV_CHANGED)
            if e.wall_time >= t0
        ]
        rejected = [
            (node, e)
            for node, e in facts.events_named(history, ev.RDZV_VALUE_REJECTED)
            if e.wall_time >= t0
        ]
        actions = {str(a) for f in fires for a in f.did.get("actions") or ()}
        keys = sorted({str(e.fields.get("key")) for _, e in rejected})
        evidence = [f"actions: {', '.join(sorted(actions))}"]
        evidence.append(f"values refused: {len(rejected)} report(s), keys {keys or 'none'}")
        evidence += [f"node {n} re-formed: {e.fields.get('reason')}" for n, e in changed[:5]]
        measured = {"changed": len(changed), "rejected_reports": len(rejected), "keys": keys}
        if expected == "believed":
            ok = bool(changed)
            summary = "the job re-formed on the intruder's word" if ok else "nothing re-formed"
            return verdict(self.name, ok, summary, evidence, measured)
        must_see = bool(actions & READ_WHILE_RUNNING)
        ok = not changed and (bool(rejected) or not must_see)
        if changed:
            summary = f"{len(changed)} re-formation(s) after the intruder wrote"
        elif must_see and not rejected:
            summary = "no node reported refusing the intruder's values"
        else:
            summary = f"refused: nothing re-formed, {len(rejected)} refusal report(s)"
        return verdict(self.name, ok, summary, evidence, measured)
