"""detection_time and recovery_time: how fast the launcher noticed a fault and came back.

For each fault.fire record:
  detection = from the fire to the first reaction in any node's log: a
      rendezvous.membership.changed or a worker.exited other than a clean finish (for a
      kill_worker that names the pid, that worker's own exit), before the next fault fires;
  recovery  = from the fire to the last worker.started of the first round formed after the
      reaction (every worker running again); without a reaction there is nothing to recover
      from, and only the detection bound judges the fault.
Measured values are always reported; they are compared with expect.detect_within_s and
expect.recover_within_s when set. kill_etcd_member is measured but not bounded (a healthy
etcd cluster hides the loss of one member: no reaction is the right answer).
Reactions up to SLACK_S before the fire record count, as the harness writes it after acting
(a round that completes before the record, though, was not caused by the fault).
"""

from __future__ import annotations

from dataclasses import dataclass

from chaos.checkers import facts
from chaos.checkers.verdict import Verdict, unknown, verdict
from chaos.history import History
from chaos.scenario.schema import Scenario
from launcher import events as ev

SLACK_S = 0.1
UNBOUNDED_FAULTS = frozenset({"kill_etcd_member"})


@dataclass(frozen=True, kw_only=True)
class FaultTiming:
    fire: facts.FaultFire
    detect_s: float | None
    detected_by: str | None
    recover_s: float | None
    recovered_round: int | None

    def describe(self) -> str:
        f = self.fire
        head = f"fault {f.index} {f.kind} at t={f.t:.2f}s"
        seen = (
            f"detected after {self.detect_s:.3f}s ({self.detected_by})"
            if self.detect_s is not None
            else "no reaction"
        )
        back = (
            f"workers running again after {self.recover_s:.3f}s (round {self.recovered_round})"
            if self.recover_s is not None
            else "workers never ran again"
            if self.detect_s is not None
            else "nothing to recover from"
        )
        return f"{head}: {seen}; {back}"

    def to_dict(self) -> dict[str, object]:
        return {
            "fault": self.fire.index,
            "kind": self.fire.kind,
            "t": self.fire.t,
            "detect_s": self.detect_s,
            "recover_s": self.recover_s,
        }


def measure(history: History, scenario: Scenario) -> list[FaultTiming]:
    origin = facts.time_origin(history)
    fires = [f for f in facts.fault_fires(history, scenario) if f.skipped is None]
    reactions = [  # a worker that finished its work (exit 0 on its own) reacted to nothing
        (node, e)
        for node, e in facts.events_named(history, ev.RDZV_CHANGED, ev.WORKER_EXITED)
        if e.name == ev.RDZV_CHANGED
        or e.fields.get("exit_code") != 0
        or e.fields.get("stopped_by_agent")
    ]
    formed = [r for r in facts.rounds(history) if not r.budget_spent]
    out = []
    for i, fire in enumerate(fires):
        start = fire.wall if fire.wall is not None else origin + fire.t
        nxt = fires[i + 1] if i + 1 < len(fires) else None
        stop = (nxt.wall if nxt.wall is not None else origin + nxt.t) if nxt else float("inf")
        pid = facts.as_int(fire.did.get("pid")) if fire.kind == "kill_worker" else None
        seen = [
            (e.wall_time, node, e)
            for node, e in reactions
            if start - SLACK_S <= e.wall_time < stop
            and (pid is None or e.name != ev.WORKER_EXITED or e.fields.get("pid") == pid)
        ]
        if pid is not None and any(e.name == ev.WORKER_EXITED for _, _, e in seen):
            seen = [s for s in seen if s[2].name == ev.WORKER_EXITED]
        detect_s = by = None
        after = start
        if seen:
            wall, node, event = min(seen, key=lambda s: s[0])
            detect_s, after = max(0.0, wall - start), max(start, wall)
            what = event.fields.get("reason") or f"rank {event.fields.get('rank')}"
            by = f"{event.name} {what} on node {node}"
        recover_s = recovered = None
        for rnd in formed if detect_s is not None else ():  # no reaction: nothing stopped
            if rnd.start_wall >= after and rnd.worker_walls:
                recover_s, recovered = max(0.0, max(rnd.worker_walls) - start), rnd.number
                break
        out.append(
            FaultTiming(
                fire=fire,
                detect_s=detect_s,
                detected_by=by,
                recover_s=recover_s,
                recovered_round=recovered,
            )
        )
    return out


class _TimingChecker:
    name = ""
    what = ""

    def applies(self, scenario: Scenario) -> bool:
        return bool(scenario.faults)

    def bound(self, scenario: Scenario) -> float | None:
        raise NotImplementedError

    def value(self, timing: FaultTiming) -> float | None:
        raise NotImplementedError

    def judged(self, timing: FaultTiming) -> bool:
        """Whether this fault's time is held to the bound."""
        return timing.fire.kind not in UNBOUNDED_FAULTS

    def check(self, history: History, scenario: Scenario) -> Verdict:
        no_log = facts.no_event_log_reason(history, scenario)
        if no_log is not None:
            return unknown(self.name, f"cannot time the {self.what}: {no_log}")
        timings = measure(history, scenario)
        skipped = [
            f"fault {f.index} {f.kind} at t={f.t:.2f}s did nothing: {f.skipped}"
            for f in facts.fault_fires(history, scenario)
            if f.skipped is not None
        ]
        if not timings:
            why = "every fault was skipped" if skipped else "no fault fired (no fault.fire record)"
            return unknown(self.name, why, skipped)
        bound = self.bound(scenario)
        values = [self.value(t) for t in timings]
        known = [v for v in values if v is not None]
        measured = {
            "faults": [t.to_dict() for t in timings],
            "max_s": max(known, default=None),
            "bound_s": bound,
        }
        late = []
        for timing, value in zip(timings, values, strict=True):
            if bound is None or not self.judged(timing):
                continue
            if value is None or value > bound:
                late.append(timing)
        evidence = [t.describe() for t in late] + [t.describe() for t in timings if t not in late]
        evidence += skipped
        shown = ", ".join("never" if v is None else f"{v:.3f}s" for v in values)
        if late:
            summary = f"{self.what} {shown}: {len(late)} fault(s) over the bound {bound}s"
            return verdict(self.name, False, summary, evidence, measured)
        wanted = f" (bound {bound}s)" if bound is not None else " (no bound set)"
        return verdict(self.name, True, f"{self.what} {shown}{wanted}", evidence, measured)


class DetectionChecker(_TimingChecker):
    name = "detection_time"
    what = "detection"

    def bound(self, scenario: Scenario) -> float | None:
        return scenario.expect.detect_within_s

    def value(self, timing: FaultTiming) -> float | None:
        return timing.detect_s


class RecoveryChecker(_TimingChecker):
    name = "recovery_time"
    what = "recovery"

    def bound(self, scenario: Scenario) -> float | None:
        return scenario.expect.recover_within_s

    def value(self, timing: FaultTiming) -> float | None:
        return timing.recover_s

    def judged(self, timing: FaultTiming) -> bool:
        # A fault nobody reacted to stopped no worker (the detection bound judges that).
        return super().judged(timing) and timing.detect_s is not None
