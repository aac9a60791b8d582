"""On a hang: evidence first (every rank's stack), then blame; the agent stops and restarts.

    respond(incident, ...)   dumps every local rank in parallel (launcher.progress.dumps) into
                             <run dir>/incidents/<round>-<restart>/, reads each rank's last
                             progress and process state, blames (detector.blame), writes
                             incident.json, emits the events, and returns a `HangReport`
                             whose `failures` put the culprit, with its key frames, at the
                             head of the failure summary

The culprit is who is *behind* (lowest step, oldest beat, a stopped or D-state process),
never who timed out first: in a collective hang the rank that notices is a victim.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from launcher import events as ev
from launcher.failures.error_file import ErrorRecord
from launcher.failures.report import WorkerFailure
from launcher.progress.detector import Blame, RankEvidence, blame, evidence
from launcher.progress.dumps import DumpTarget, StackDump, dump_all, key_frames
from launcher.progress.reader import RankProgress
from launcher.progress.watch import Incident
from launcher.workers.descendants import state

log = logging.getLogger("launcher.agent")

# Frames that mean "waiting for the other ranks": torch.distributed's collectives, and the
# autograd engine under DDP (its gradient all_reduce runs inside backward, in C++).
_COLLECTIVE = ("distributed_c10d", "_engine_run_backward", "torch/nn/parallel/distributed.py")


@dataclass(frozen=True, kw_only=True)
class HangReport:
    incident: Incident
    dir: Path
    dumps: tuple[StackDump, ...]
    blame: Blame
    blamed: tuple[DumpTarget, ...]  # this node's culprits (else the rank that tripped)
    node: str

    def failures(self, exit_codes: Mapping[int, int]) -> tuple[WorkerFailure, ...]:
        """The blamed ranks as failures, once stopped (`exit_codes` by global rank): the
        summary shows the culprit's key frames where torch would show a traceback."""
        frames = {d.rank: key_frames(d.text) for d in self.dumps}
        return tuple(
            _failure(self, t, frames.get(t.rank, []), exit_codes.get(t.rank, -15))
            for t in self.blamed
        )


def respond(
    incident: Incident,
    targets: Sequence[DumpTarget],
    *,
    snapshots: dict[int, RankProgress],
    run_dir: Path | None,
    round_no: int,
    name: str,
    method: str,
    events: ev.EventSink,
    node: str,
    fr_pipe_prefix: str | None = None,
    timed_out: Sequence[int] = (),
) -> HangReport:
    base = run_dir if run_dir is not None else Path(tempfile.mkdtemp(prefix="launcher_hang_"))
    out = base / "incidents" / name
    out.mkdir(parents=True, exist_ok=True)
    detected_at = time.monotonic()
    events.emit(ev.HANG_DETECTED, **incident.fields(), round=round_no, incident_dir=str(out))
    states = {t.rank: state(t.pid) for t in targets}  # before the dumps signal anyone
    dumps = tuple(dump_all(list(targets), out, method=method, fr_pipe_prefix=fr_pipe_prefix))
    for dump in dumps:
        events.emit(
            ev.HANG_STACK_DUMPED,
            round=round_no,
            rank=dump.rank,
            local_rank=dump.local_rank,
            pid=dump.pid,
            method=dump.method,
            path=str(dump.path) if dump.path else None,
            ok=dump.ok,
            error=dump.error,
            seconds_after_detection=round(time.monotonic() - detected_at, 3),
            flight_recorder=dump.flight_recorder,
        )
    now = time.monotonic()
    proof = [
        evidence(t.rank, snapshots.get(t.rank), now, node=node, state=states[t.rank])
        for t in targets
    ]
    frames = {d.rank: key_frames(d.text) for d in dumps}
    verdict = _blame(incident, proof, frames, timed_out)
    events.emit(
        ev.HANG_ATTRIBUTED,
        round=round_no,
        culprits=list(verdict.culprits),
        by=verdict.by,
        reason=verdict.reason,
        evidence=[_evidence_fields(e) for e in verdict.evidence],
        frames={str(r): frames.get(r, []) for r in verdict.culprits},
        incident_dir=str(out),
    )
    (out / "incident.json").write_text(
        json.dumps(
            {
                "incident": incident.fields(),
                "blame": {
                    "culprits": list(verdict.culprits),
                    "by": verdict.by,
                    "reason": verdict.reason,
                },
                "evidence": [_evidence_fields(e) for e in verdict.evidence],
                "dumps": [
                    {
                        "rank": d.rank,
                        "pid": d.pid,
                        "method": d.method,
                        "ok": d.ok,
                        "path": str(d.path) if d.path else None,
                        "error": d.error,
                    }
                    for d in dumps
                ],
            },
            indent=2,
        )
        + "\n"
    )
    log.warning(
        "hang (%s): %s; blamed: %s; stacks in %s",
        incident.source,
        incident.detail,
        verdict.reason,
        out,
    )
    return HangReport(
        incident=incident,
        dir=out,
        dumps=dumps,
        blame=verdict,
        blamed=tuple(_blamed_targets(incident, verdict, targets)),
        node=node,
    )


def _blame(
    incident: Incident,
    proof: list[RankEvidence],
    frames: dict[int, list[str]],
    timed_out: Sequence[int],
) -> Blame:
    if incident.source == "file_timer" and incident.rank is not None:
        return Blame(
            culprits=(incident.rank,),
            by="file_timer",
            reason=f"rank {incident.rank}: torch timer {incident.scope_id!r} expired",
            evidence=tuple(proof),
        )
    verdict = blame(proof)
    stacks = {rank: f for rank, f in frames.items() if f}
    waiting = {
        rank for rank, f in stacks.items() if any(m in frame for frame in f for m in _COLLECTIVE)
    } | set(timed_out)  # ranks that already failed waiting for a peer waited in one too
    if verdict.culprits and verdict.by.startswith("step"):
        return _mismatch(verdict, proof, waiting) or verdict
    if verdict.culprits:
        return verdict
    # Every rank equally stale: the ranks wait for each other. The one that is not waiting
    # inside a collective is holding the rest up.
    outside = sorted(set(stacks) - waiting)
    if not waiting or not outside:
        return verdict
    where = stacks[outside[0]][0]
    return Blame(
        culprits=tuple(outside),
        by="stack",
        reason=(
            f"{_ranks(outside)} outside any collective (in {where}) "
            f"while {_ranks(sorted(waiting))} "
            f"{'wait' if len(waiting) > 1 else 'waits'} in one"
        ),
        evidence=verdict.evidence,
    )


def _mismatch(verdict: Blame, proof: Sequence[RankEvidence], waiting: set[int]) -> Blame | None:
    """Ranks at different steps, every one of them waiting in a collective: the ranks behind
    are not stuck in their own work, they wait for a collective that the ranks ahead skipped
    (or called once more) and never join. Those ranks ahead are the culprits."""
    ranks = {e.rank for e in proof}
    if not ranks or not ranks <= waiting:
        return None
    ahead = sorted(ranks - set(verdict.culprits))
    if not ahead:
        return None
    return Blame(
        culprits=tuple(ahead),
        by="stack",
        reason=(
            f"{_ranks(ahead)} went on to a later collective while {_ranks(verdict.culprits)} "
            "still wait in an earlier one (a collective skipped or called out of order)"
        ),
        evidence=verdict.evidence,
    )


def _blamed_targets(
    incident: Incident, verdict: Blame, targets: Sequence[DumpTarget]
) -> list[DumpTarget]:
    """Culprits on this node; none here (elsewhere, or unknown): the rank that tripped."""
    chosen = [t for t in targets if t.rank in verdict.culprits]
    if not chosen:
        chosen = [t for t in targets if t.rank == incident.rank] or list(targets[:1])
    return chosen


def _failure(report: HangReport, target: DumpTarget, frames: list[str], code: int) -> WorkerFailure:
    verdict, incident = report.blame, report.incident
    known = target.rank in verdict.culprits
    headline = f"hang: {verdict.reason}" if known else f"hang: {incident.detail}; {verdict.reason}"
    stack = "\n".join(f"  {frame}" for frame in frames) or "  (no stack captured)"
    text = (
        f"{headline}\nstack of rank {target.rank} (pid {target.pid}):\n{stack}\n"
        f"all stacks: {report.dir}"
    )
    now = time.time()
    return WorkerFailure(
        local_rank=target.local_rank,
        global_rank=target.rank,
        pid=target.pid,
        exitcode=code,
        error_file=None,
        record=ErrorRecord(message=headline, traceback=text, timestamp=int(now)),
        timestamp=now,
        host=report.node,
        precise_at=now,
        stopped_by_agent=True,
        hung=True,
    )


def _ranks(ranks: Sequence[int]) -> str:
    return ("ranks " if len(ranks) > 1 else "rank ") + ", ".join(map(str, ranks))


def _evidence_fields(e: RankEvidence) -> dict[str, object]:
    age = e.seconds_since_progress
    return {
        "rank": e.rank,
        "node": e.node,
        "step": e.step,
        "beats": e.beats,
        "seconds_since_progress": None if age is None else round(age, 3),
        "state": e.state,
    }
