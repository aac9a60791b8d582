"""The agent's round and worker events, and the one log line a restart gets."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from launcher import events as ev
from launcher.failures.error_file import write_parent_error_file
from launcher.failures.report import (
    WorkerFailure,
    cause_note,
    exit_code_for,
    failure_fields,
    format_summary,
    root_cause,
    signal_name,
)
from launcher.rendezvous import RoundInfo

if TYPE_CHECKING:  # the worker side is built at the first round (launcher/node_workers.py)
    from launcher.workers.group import Worker

log = logging.getLogger("launcher.agent")


def round_complete(events: ev.EventSink, rnd: RoundInfo) -> None:
    events.emit(
        ev.RDZV_ROUND_COMPLETE,
        round=rnd.round,
        reason=rnd.reason,
        group_rank=rnd.group_rank,
        group_world_size=rnd.group_world_size,
        world_size=rnd.world_size,
        base_rank=rnd.base_global_rank,
        restart_count=rnd.restart_count,
        members=list(rnd.members),
        master_addr=rnd.master_addr,
        master_port=rnd.master_port,
        budget_spent=rnd.budget_spent,
    )


def restart(events: ev.EventSink, rnd: RoundInfo, *, max_restarts: int) -> None:
    events.emit(
        ev.GROUP_RESTART,
        reason=rnd.reason,
        restart_count=rnd.restart_count,
        max_restarts=max_restarts,
        charged=rnd.charged,
        detail=rnd.detail,
    )
    log.warning(
        "re-forming the worker group (%s%s): restart %d/%d%s",
        rnd.reason,
        f": {rnd.detail}" if rnd.detail else "",
        rnd.restart_count,
        max_restarts,
        "" if rnd.charged else " (not charged)",
    )


def workers_started(
    events: ev.EventSink, rnd: RoundInfo, workers: Sequence[Worker], attempt_dir: Path | None
) -> None:
    for worker in workers:
        r = worker.spec.ranks
        events.emit(
            ev.WORKER_STARTED,
            round=rnd.round,
            restart_count=rnd.restart_count,
            local_rank=r.local_rank,
            rank=r.global_rank,
            role_rank=r.role_rank,
            group_rank=r.group_rank,
            world_size=r.world_size,
            local_world_size=r.local_world_size,
            group_world_size=r.group_world_size,
            pid=worker.pid,
            attempt_dir=str(attempt_dir) if attempt_dir else None,
        )


def worker_exited(
    events: ev.EventSink, worker: Worker, rnd: RoundInfo | None, restart_count: int
) -> None:
    code = worker.exitcode if worker.exitcode is not None else -1
    events.emit(
        ev.WORKER_EXITED,
        round=rnd.round if rnd else -1,
        restart_count=restart_count,
        local_rank=worker.local_rank,
        rank=worker.global_rank,
        pid=worker.pid,
        exit_code=code,
        signal=signal_name(code) if code < 0 else None,
        stopped_by_agent=worker.stopped_by_agent,
        runtime_s=round((worker.exited_at or 0.0) - worker.started_at, 6),
    )


def group_failed(
    events: ev.EventSink, restart_count: int, failures: Sequence[WorkerFailure]
) -> None:
    events.emit(
        ev.GROUP_FAILED,
        restart_count=restart_count,
        failures=[failure_fields(f) for f in failures],
        root_cause=failure_fields(root_cause(failures)),
    )


def job_failed(
    failures: tuple[WorkerFailure, ...],
    *,
    entrypoint: str,
    max_restarts: int,
    remote_detail: str,
    parent_error_file: str | None,
) -> int:
    """The end of a job whose restart budget is spent: torchrun's failure summary on stderr
    (or, for a failure on another node, one line: its agent prints the summary), the root
    cause in the parent's error file when one is asked for; returns the agent's exit code."""
    if not failures:
        print(
            f"launcher: error: the job failed, restart budget ({max_restarts}) spent; last "
            f"failure: {remote_detail or 'unknown'}",
            file=sys.stderr,
        )
        return 1
    cause = root_cause(failures)
    sys.stderr.write(format_summary(entrypoint, failures) + "\n")
    note = cause_note(failures, remote_detail=remote_detail)
    sys.stderr.write(f"{note}\n" if note else "")
    sys.stderr.flush()
    if parent_error_file and cause.record is not None:
        write_parent_error_file(cause.record, Path(parent_error_file), cause.exitcode)
    return exit_code_for(cause)
