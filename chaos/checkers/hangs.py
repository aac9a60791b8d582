"""hang: the launcher noticed the hang in time, dumped every rank's stack and blamed the rank
the scenario hung.

An incident is a round in which some node logged an *originating* hang.incident.detected:
source `progress` (a rank made no progress within its timeout) or `file_timer` (a torch
`expires()` timer ran out). The other sources are echoes of one: `peer` is a node told of
another node's hang, `symptom` a worker that failed on a peer's timeout. Two nodes whose
ranks cross the deadline within one poll of each other both originate the same hang, so
incidents are counted by round (a hang ends its round): expect.hang.count is the number of
rounds with an originating incident, and every originating event is shown. Each incident is
judged on:

  detection  seconds_since_progress - timeout_s of the earliest originating event: how late
             past its deadline the hang was called (expect.hang.detect_within_s);
  dumps      every rank of the round (world size from its rendezvous.round.complete) has an
             ok hang.stack.dumped with that round, from any node: the originating node dumps
             its ranks, the others on `source: peer`. ok with a null path counts: faulthandler
             printed the traceback to the worker's console (no ptrace for py-spy, as in a
             container without SYS_PTRACE, and no stderr log to copy it from);
  culprits   the union of the ranks blamed by every node's hang.culprit.attributed for that
             round, against expect.hang.culprits: each expected rank named by some node, and
             no node naming another ([] = every node must say "culprit unknown"). Not the
             originating node's blame alone: blame is per node (an agent weighs only its own
             ranks' progress and stacks), and which node originates is a race between the
             nodes' polls (runs of scenarios/hang_rank.yaml show node 0 originating too, on
             its ranks that wait for rank 3 on node 1); a node that cannot see the culprit
             says "culprit unknown", which neither names it nor contradicts the one that
             does. Each node's `by` and `reason` are the evidence. `culprits: injected` (the
             default with a hang_worker fault) expects the ranks the hang_worker faults hit,
             from their fault.fire records (`did.rank`).

Measured values are always reported; with torchrun (no event log) the verdict is unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chaos.checkers import facts
from chaos.checkers.verdict import Verdict, unknown, verdict
from chaos.history import History
from chaos.scenario.schema import INJECTED, HangExpectation, IntRange, Scenario
from launcher import events as ev

ORIGINATING = ("progress", "file_timer")


@dataclass(frozen=True, kw_only=True)
class Blamed:
    node: int
    culprits: tuple[int, ...]
    by: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Incident:
    round: int | None
    origins: tuple[tuple[int, ev.Event], ...]  # (node, originating event), earliest first
    world_size: int | None
    dumped: dict[int, tuple[int, Mapping[str, Any]]]  # rank -> (node, ok hang.stack.dumped)
    failed: tuple[tuple[int, Mapping[str, Any]], ...]  # (node, hang.stack.dumped not ok)
    blamed: tuple[Blamed, ...]  # every node's hang.culprit.attributed of the round

    @property
    def origin_node(self) -> int:
        return self.origins[0][0]

    @property
    def lateness_s(self) -> float | None:
        fields = self.origins[0][1].fields
        since, timeout = fields.get("seconds_since_progress"), fields.get("timeout_s")
        if isinstance(since, int | float) and isinstance(timeout, int | float):
            return round(float(since) - float(timeout), 3)
        return None

    @property
    def missing(self) -> list[int] | None:
        if self.world_size is None:
            return None
        return [rank for rank in range(self.world_size) if rank not in self.dumped]

    @property
    def blamed_ranks(self) -> tuple[int, ...] | None:
        """Every rank some node blamed for the round; None when no node attributed it."""
        if not self.blamed:
            return None
        return tuple(sorted({rank for b in self.blamed for rank in b.culprits}))

    def to_dict(self) -> dict[str, Any]:
        first = self.origins[0][1].fields
        methods: dict[str, int] = {}
        for _, dump in self.dumped.values():
            method = str(dump.get("method"))
            methods[method] = methods.get(method, 0) + 1
        return {
            "round": self.round,
            "origin_nodes": [node for node, _ in self.origins],
            "source": first.get("source"),
            "rank": first.get("rank"),
            "lateness_s": self.lateness_s,
            "world_size": self.world_size,
            "dumped": sorted(self.dumped),
            "missing": self.missing,
            "to_console": sorted(r for r, (_, d) in self.dumped.items() if d.get("path") is None),
            "methods": methods,
            "blamed": None if self.blamed_ranks is None else list(self.blamed_ranks),
            "blame_by_node": {
                str(b.node): {"culprits": list(b.culprits), "by": b.by} for b in self.blamed
            },
        }


def incidents(history: History) -> list[Incident]:
    """One Incident per round with an originating hang.incident.detected, by round."""
    origins: dict[int | None, list[tuple[int, ev.Event]]] = {}
    dumps: dict[int | None, list[tuple[int, Mapping[str, Any]]]] = {}
    blamed: dict[int | None, list[Blamed]] = {}
    names = (ev.HANG_DETECTED, ev.HANG_STACK_DUMPED, ev.HANG_ATTRIBUTED)
    for node, event in facts.events_named(history, *names):
        number = facts.as_int(event.fields.get("round"))
        if event.name == ev.HANG_DETECTED:
            if event.fields.get("source") in ORIGINATING:
                origins.setdefault(number, []).append((node, event))
        elif event.name == ev.HANG_STACK_DUMPED:
            dumps.setdefault(number, []).append((node, event.fields))
        else:
            culprits = event.fields.get("culprits") or []
            blamed.setdefault(number, []).append(
                Blamed(
                    node=node,
                    culprits=tuple(
                        sorted(r for c in culprits if (r := facts.as_int(c)) is not None)
                    ),
                    by=str(event.fields.get("by")),
                    reason=str(event.fields.get("reason") or ""),
                )
            )
    sizes = {rnd.number: rnd.world_size for rnd in facts.rounds(history)}
    out = []
    for number, found in sorted(origins.items(), key=lambda kv: min(e.wall_time for _, e in kv[1])):
        ok: dict[int, tuple[int, Mapping[str, Any]]] = {}
        failed = []
        for node, dump in dumps.get(number, []):
            rank = facts.as_int(dump.get("rank"))
            if dump.get("ok") is True and rank is not None:
                ok.setdefault(rank, (node, dump))
            else:
                failed.append((node, dump))
        out.append(
            Incident(
                round=number,
                origins=tuple(sorted(found, key=lambda ne: ne[1].wall_time)),
                world_size=sizes.get(number) if number is not None else None,
                dumped=ok,
                failed=tuple((n, d) for n, d in failed if facts.as_int(d.get("rank")) not in ok),
                blamed=tuple(blamed.get(number, [])),
            )
        )
    return out


def _ranks(ranks: list[int] | tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, ranks)) + "]"


def _range(r: IntRange) -> str:
    return str(r.low) if r.low == r.high else f"{r.low}..{r.high}"


def injected_ranks(history: History, scenario: Scenario, kind: str) -> tuple[int, ...]:
    """The global ranks that faults of `kind` hit (fault.fire `did.rank`, skipped ones not)."""
    ranks = {
        rank
        for fire in facts.fault_fires(history, scenario)
        if fire.kind == kind and fire.skipped is None
        if (rank := facts.as_int(fire.did.get("rank"))) is not None
    }
    return tuple(sorted(ranks))


def _judge(
    incident: Incident, expect: HangExpectation, culprits: tuple[int, ...] | None
) -> tuple[list[str], list[str]]:
    """(problems, evidence) of one incident; `culprits`: the ranks to blame (None: any)."""
    where = f"round {incident.round}"
    problems: list[str] = []
    evidence: list[str] = []
    for node, event in incident.origins:
        fields = event.fields
        evidence.append(
            f"{where}: node {node} detected ({fields.get('source')}): {fields.get('detail')}"
        )
    late = incident.lateness_s
    if late is None:
        evidence.append(f"{where}: lateness not measurable (no seconds_since_progress/timeout_s)")
        if expect.detect_within_s is not None:
            problems.append(f"{where}: detection lateness unknown")
    else:
        bound = f" (bound {expect.detect_within_s}s)" if expect.detect_within_s is not None else ""
        evidence.append(f"{where}: detected {late:.3f}s past the deadline{bound}")
        if expect.detect_within_s is not None and late > expect.detect_within_s:
            problems.append(f"{where}: detected {late:.3f}s late (bound {expect.detect_within_s}s)")
    by_node: dict[int, list[str]] = {}
    for rank, (node, dump) in sorted(incident.dumped.items()):
        how = str(dump.get("method")) + ("" if dump.get("path") else ", to the console")
        by_node.setdefault(node, []).append(f"{rank} ({how})")
    shown = "; ".join(f"node {n}: ranks {', '.join(r)}" for n, r in sorted(by_node.items()))
    missing = incident.missing
    total = "?" if incident.world_size is None else str(incident.world_size)
    evidence.append(f"{where}: {len(incident.dumped)} of {total} ranks dumped ({shown or 'none'})")
    for node, dump in incident.failed:
        evidence.append(
            f"{where}: node {node} failed to dump rank {dump.get('rank')} "
            f"({dump.get('method')}): {dump.get('error')}"
        )
    if expect.dumps:
        if missing is None:
            problems.append(f"{where}: world size unknown (no rendezvous.round.complete)")
        elif missing:
            problems.append(f"{where}: no ok stack dump of rank(s) {_ranks(missing)}")
    origins = [node for node, _ in incident.origins]
    for b in sorted(incident.blamed, key=lambda b: (b.node not in origins, b.node)):
        role = "originating" if b.node in origins else "peer"
        evidence.append(
            f"{where}: node {b.node} ({role}) blamed {_ranks(b.culprits)} by {b.by}: {b.reason}"
        )
    if culprits is not None:
        wanted = "culprit unknown" if not culprits else _ranks(culprits)
        blamed = incident.blamed_ranks
        if blamed is None:
            problems.append(f"{where}: no node attributed the hang (expected {wanted})")
        elif blamed != culprits:
            said = _ranks(blamed) if blamed else "culprit unknown"
            problems.append(f"{where}: blamed {said}, expected {wanted}")
    return problems, evidence


class HangChecker:
    name = "hang"

    def applies(self, scenario: Scenario) -> bool:
        return scenario.expect.hang is not None

    def check(self, history: History, scenario: Scenario) -> Verdict:
        expect = scenario.expect.hang
        no_log = facts.no_event_log_reason(history, scenario)
        if expect is None or no_log is not None:
            return unknown(self.name, f"cannot judge the hang: {no_log or 'nothing expected'}")
        found = incidents(history)
        problems: list[str] = []
        evidence: list[str] = []
        culprits = expect.culprits if not isinstance(expect.culprits, str) else None
        if expect.culprits == INJECTED:
            culprits = injected_ranks(history, scenario, "hang_worker")
            evidence.append(f"hang_worker faults hung rank(s) {_ranks(culprits)}")
            if not culprits:
                problems.append("no hang_worker fault hung a rank (expected culprits: injected)")
                culprits = None  # nothing to compare the blame with
        if not expect.count.contains(len(found)):
            problems.append(f"{len(found)} hang incident(s), expected {_range(expect.count)}")
        for incident in found:
            more, seen = _judge(incident, expect, culprits)
            problems += more
            evidence += seen
        measured = {
            "count": len(found),
            "incidents": [i.to_dict() for i in found],
            "detect_bound_s": expect.detect_within_s,
        }
        if problems:
            return verdict(self.name, False, "; ".join(problems), evidence, measured)
        if not found:
            summary = f"no hang detected (expected {_range(expect.count)})"
            return verdict(self.name, True, summary, evidence, measured)
        parts = []
        for incident in found:
            blamed = incident.blamed_ranks
            said = "nobody" if blamed is None else _ranks(blamed) if blamed else "culprit unknown"
            late = "?" if incident.lateness_s is None else f"{incident.lateness_s:.3f}s"
            parts.append(
                f"round {incident.round}: node {incident.origin_node} detected {late} late, "
                f"{len(incident.dumped)}/{incident.world_size} dumped, blamed {said}"
            )
        return verdict(self.name, True, "; ".join(parts), evidence, measured)
