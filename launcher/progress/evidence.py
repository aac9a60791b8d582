"""Before a stop: whether this node owes evidence, and the fan-out that gets every node's.

    gather(...)   decides whether the ranks still running must be dumped before the stop,
                  and does it (launcher.progress.incident.respond):
                    - this node detected a hang: it reports the hang first (the round's reason
                      becomes `hang`), dumps, then waits (bounded) until every node of the
                      round has dumped, so nobody's ranks die of broken connections first;
                      if another node already reported one, this is that hang, not a second;
                    - another node's hang: the round moved with reason `hang` (seen by the
                      monitor, or by this node's workers failing on the broken connections);
                    - a worker here failed because a peer timed out (gloo, NCCL, a store): the
                      rank that hung is still running somewhere, its stack is the evidence; this
                      node reports it as a hang, as if it had detected one, so every node dumps.

The rendezvous is reached through the small `Peers` protocol, so this module does not import
it (only the agent uses both the rendezvous and the workers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from launcher import events as ev
from launcher.failures.report import WorkerFailure, peer_timed_out
from launcher.progress.dumps import DumpTarget
from launcher.progress.incident import HangReport, respond
from launcher.progress.reader import RankProgress
from launcher.progress.watch import Incident

HANG = "hang"  # the rendezvous reason of a round re-formed after a hang
DUMP_WAIT_S = 10.0  # py-spy's bounded dumps take up to 5 s; a dead node must not stall us


class Peers(Protocol):
    def report_failure(self, detail: str, *, reason: str = ...) -> None: ...
    def check(self) -> str | None: ...
    def hang_dumped(self) -> None: ...
    def await_dumps(self, timeout_s: float) -> int: ...


def gather(
    *,
    detected: Incident | None,
    moved_for: str | None,
    failed: Sequence[WorkerFailure],
    peers: Peers | None,
    targets: Sequence[DumpTarget],
    snapshots: dict[int, RankProgress],
    run_dir: Path | None,
    round_no: int,
    name: str,
    method: str,
    events: ev.EventSink,
    node: str,
    fr_pipe_prefix: str | None = None,
) -> HangReport | None:
    """`detected`: this node's own hang; `moved_for`: why the rendezvous re-forms (None if
    it did not say); `failed`: this attempt's failed workers. None: nothing was dumped."""
    incident = detected
    timed = peer_timed_out(failed)
    if incident is None and timed is not None and moved_for != HANG:
        # A collective or store timed out here: some rank is stuck, maybe on another node.
        incident = Incident(source="symptom", rank=timed.global_rank, pid=timed.pid)
    if incident is not None and peers is not None:
        if peers.check() == HANG:
            incident = replace(incident, source="peer")  # someone else's report: one hang
        else:
            peers.report_failure(f"{incident.detail} on {node}", reason=HANG)
    elif moved_for == HANG or (failed and peers is not None and peers.check() == HANG):
        incident = Incident(source="peer", rank=None, pid=None)
    if incident is None or not targets:
        return None
    report = respond(
        incident,
        targets,
        snapshots=snapshots,
        run_dir=run_dir,
        round_no=round_no,
        name=name,
        method=method,
        events=events,
        node=node,
        fr_pipe_prefix=fr_pipe_prefix,
        timed_out=[f.global_rank for f in failed if peer_timed_out([f]) is not None],
    )
    if peers is not None:
        peers.hang_dumped()
        if incident.source != "peer":  # this node reported it: wait for everyone's stacks
            peers.await_dumps(DUMP_WAIT_S)
    return report
