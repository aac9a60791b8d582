"""straggler: the launcher reported the rank the scenario slowed, and no other.

Reads `straggler.rank.detected` from every node's event log: an agent scores the ranks it
sees (or, job-wide, one agent scores all and reports once), so the reports of all nodes
together are the job's. A rank counts as reported once, whatever the number of reports
(one per window while it stays slow). expect.straggler:

  none                     no rank reported: an unfaulted run must not cry straggler;
  {ranks: [r, ...]}        exactly these ranks reported (each one, and no other);
  {ranks: injected}        the ranks the slow_worker faults hit (fault.fire `did.rank`; the
                           default with a slow_worker fault);
  section: NAME            only reports for that section count.

The `straggler.stats.reported` events say how many windows were scored: a run with none
(a window longer than the run, a workload without sections) cannot show a straggler or its
absence, and is judged unknown rather than passed.
"""

from __future__ import annotations

from dataclasses import dataclass

from chaos.checkers import facts
from chaos.checkers.hangs import injected_ranks
from chaos.checkers.verdict import Verdict, unknown, verdict
from chaos.history import History
from chaos.scenario.schema import INJECTED, Scenario
from launcher import events as ev


@dataclass(frozen=True, kw_only=True)
class Report:
    rank: int
    node: int  # the node whose log has it
    section: str
    t: float  # run time of the first report
    score: float | None
    windows: int | None


def reports(history: History, section: str | None = None) -> dict[int, Report]:
    """The first straggler report of each rank (of `section`, when given), across nodes."""
    origin = facts.time_origin(history)
    first: dict[int, Report] = {}
    found = facts.events_named(history, ev.STRAGGLER_DETECTED)
    for node, event in sorted(found, key=lambda item: item[1].wall_time):
        fields = event.fields
        rank = facts.as_int(fields.get("rank"))
        name = str(fields.get("section"))
        if rank is None or rank in first or (section is not None and name != section):
            continue
        score, windows = fields.get("score"), facts.as_int(fields.get("windows"))
        first[rank] = Report(
            rank=rank,
            node=node,
            section=name,
            t=round(event.wall_time - origin, 3),
            score=float(score) if isinstance(score, int | float) else None,
            windows=windows,
        )
    return first


def scored_windows(history: History) -> int:
    """Windows scored by the busiest node (every scoring node reports each of its windows)."""
    counts = [sum(e.name == ev.STRAGGLER_STATS for e in evs) for evs in history.events.values()]
    return max(counts, default=0)


def _ranks(ranks: tuple[int, ...] | list[int]) -> str:
    return "[" + ", ".join(map(str, ranks)) + "]"


class StragglerChecker:
    name = "straggler"

    def applies(self, scenario: Scenario) -> bool:
        return scenario.expect.straggler is not None

    def check(self, history: History, scenario: Scenario) -> Verdict:
        expect = scenario.expect.straggler
        no_log = facts.no_event_log_reason(history, scenario)
        if expect is None or no_log is not None:
            return unknown(self.name, f"cannot judge stragglers: {no_log or 'nothing expected'}")
        evidence: list[str] = []
        if isinstance(expect.ranks, str):
            wanted = injected_ranks(history, scenario, "slow_worker")
            evidence.append(f"slow_worker faults slowed rank(s) {_ranks(wanted)}")
        else:
            wanted = expect.ranks
        found = reports(history, expect.section)
        windows = scored_windows(history)
        for r in found.values():
            score = "?" if r.score is None else f"{r.score:.2f}"
            evidence.append(
                f"node {r.node}: rank {r.rank} reported at t={r.t:.2f}s in section "
                f"{r.section!r} (score {score}, {r.windows} slow windows)"
            )
        evidence.append(f"{windows} straggler window(s) scored")
        reported = sorted(found)
        measured = {
            "expected": list(wanted),
            "reported": reported,
            "first_report_t": {str(r.rank): r.t for r in found.values()},
            "windows_scored": windows,
        }
        problems = []
        if expect.ranks == INJECTED and not wanted:
            problems.append("no slow_worker fault slowed a rank (expected ranks: injected)")
        missing = [rank for rank in wanted if rank not in found]
        extra = [rank for rank in reported if rank not in wanted]
        if missing:
            problems.append(f"rank(s) {_ranks(missing)} never reported as stragglers")
        if extra:
            problems.append(f"rank(s) {_ranks(extra)} reported but not slowed (false report)")
        if problems:
            return verdict(self.name, False, "; ".join(problems), evidence, measured)
        if windows == 0:
            return unknown(
                self.name,
                "no straggler window was scored (a window longer than the run, or no "
                "progress.section() in the workload): nothing to judge",
                evidence,
                measured,
            )
        if not wanted:
            summary = f"no straggler reported over {windows} window(s)"
        else:
            summary = f"rank(s) {_ranks(reported)} reported as stragglers, no other"
        return verdict(self.name, True, summary, evidence, measured)
