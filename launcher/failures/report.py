"""Failed workers, the root cause among them, and torchrun's failure summary.

The root cause is sought by kind first (classify.py: a worker's own failure or a hang, then
a peer's symptom, then a worker the agent stopped), by time only within a kind.

`format_summary` reproduces the message of torch's `ChildFailedError` character for character
(users grep for it and tools parse it), including its quirks: the exit-code line ends in a
space when no signal is involved, and a signal name is preceded by two spaces.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from launcher.failures.classify import FailureKind, classify, is_peer_timeout
from launcher.failures.error_file import ErrorRecord, read_error_file

__all__ = [
    "WorkerFailure",
    "cause_note",
    "exit_code_for",
    "failure_message",
    "format_summary",
    "observe_failure",
    "only_symptoms",
    "peer_timed_out",
    "root_cause",
    "signal_name",
]

NO_TRACEBACK_HINT = "To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html"

# torch caps the rules at 60 columns however long the tracebacks are.
_MAX_WIDTH = 60


@dataclass(frozen=True, kw_only=True)
class WorkerFailure:
    """One worker that exited non-zero, as observed by the agent on `host`.

    `exitcode` follows `Popen.returncode`: negative means killed by signal -exitcode.
    `timestamp` is when the agent observed the exit (epoch seconds); `record` is the worker's
    parsed error file, None when it wrote none.
    """

    local_rank: int
    global_rank: int
    pid: int
    exitcode: int
    error_file: Path | None
    record: ErrorRecord | None
    timestamp: float
    host: str
    # When it happened as precisely as the agent knows: the earlier of the error file's write
    # time (mtime, ns) and the exit it observed (pidfd, at once). torch orders by whole
    # seconds with ties to the lowest rank, which names the wrong worker when a peer's
    # collective fails in the same second as the worker that really died (its error file
    # then says "Connection reset by peer"). None: order by `failed_at`, as torch does.
    precise_at: float | None = None
    # The agent itself signalled it (the group was being stopped): a consequence, not a cause.
    stopped_by_agent: bool = False
    # The agent declared it hung (and then stopped it): a cause, although the agent stopped it.
    hung: bool = False

    @property
    def kind(self) -> FailureKind:
        """Its own failure, a peer's symptom, or the agent's stop (see classify.py)."""
        message = self.record.message if self.record is not None else None
        return classify(message=message, stopped_by_agent=self.stopped_by_agent, hung=self.hung)

    @property
    def failed_at(self) -> int:
        """When the failure happened, in whole seconds: the worker's own clock when it
        recorded one, else when it was observed. Root cause ordering and `time` use this."""
        if self.record is not None and self.record.timestamp > 0:
            return self.record.timestamp
        return int(self.timestamp)


def observe_failure(
    *,
    local_rank: int,
    global_rank: int,
    pid: int,
    exitcode: int,
    error_file: str | None,
    exited_at: float,
    host: str,
    stopped_by_agent: bool,
    hung: bool = False,
) -> WorkerFailure:
    """A worker that exited non-zero at `exited_at`, with what its error file says."""
    record = read_error_file(Path(error_file)) if error_file else None
    stamp = float(record.timestamp) if record and record.timestamp > 0 else exited_at
    precise = exited_at
    if record is not None and error_file:
        with contextlib.suppress(OSError):
            precise = min(exited_at, os.stat(error_file).st_mtime)
    return WorkerFailure(
        local_rank=local_rank,
        global_rank=global_rank,
        pid=pid,
        exitcode=exitcode,
        error_file=Path(error_file) if record and error_file else None,
        record=record,
        timestamp=stamp,
        host=host,
        precise_at=precise,
        stopped_by_agent=stopped_by_agent,
        hung=hung,
    )


def signal_name(exitcode: int) -> str | None:
    """The signal's name for a negative exit code (-15 -> "SIGTERM"), else None."""
    if exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return None


def failure_message(f: WorkerFailure) -> str:
    """What the summary prints after `traceback :` (before indentation)."""
    if f.record is not None:
        text = f.record.message if f.record.is_flat else f.record.traceback or f.record.message
        if text:
            return text
    name = signal_name(f.exitcode)
    if f.exitcode < 0:
        return f"Signal {-f.exitcode} ({name or '<N/A>'}) received by PID {f.pid}"
    return NO_TRACEBACK_HINT


def root_cause(failures: Sequence[WorkerFailure]) -> WorkerFailure:
    """The first failure of the most causal kind present (hang or own failure, then
    symptom, then stopped by the agent): earliest `precise_at` where known, else `failed_at`
    (whole seconds); ties to the earliest listed.

    Its `kind` is `symptom` when every failure here is a peer's symptom (or the agent's
    stop): the cause happened on another node."""
    return failures[_root_index(failures)]


def cause_note(failures: Sequence[WorkerFailure], *, remote_detail: str = "") -> str | None:
    """One line to print after the summary when its root cause is not a cause: every worker
    here failed because a peer went away (or was stopped by the agent). None otherwise.

    `remote_detail` is what the rendezvous knows of the failure elsewhere, if anything."""
    kind = root_cause(failures).kind
    if kind.blame_rank == 0:
        return None
    what = (
        "a symptom: a peer went away or timed out"
        if kind is FailureKind.SYMPTOM
        else ("stopped by the launcher")
    )
    where = f": {remote_detail}" if remote_detail else ""
    return f"launcher: note: the root cause above is {what}; the cause is on another node{where}"


def exit_code_for(f: WorkerFailure) -> int:
    """The launcher's exit code for root cause `f`: the worker's code, or 128+N for signal N.

    A failure never maps to 0: a root cause that somehow exited 0 gives 1.
    """
    if f.exitcode > 0:
        return f.exitcode
    if f.exitcode < 0:
        return 128 - f.exitcode
    return 1


def format_summary(name: str, failures: Sequence[WorkerFailure]) -> str:
    """torchrun's failure table for entrypoint `name`, starting with a newline like torch's.

    `[idx]` is each failure's position in `failures`; the root cause is listed last.
    """
    root = _root_index(failures)
    title = f"{name} FAILED"
    blocks = [_format_failure(idx, f) for idx, f in enumerate(failures)]
    width = min(_MAX_WIDTH, max(len(line) for b in [title, *blocks] for line in b.split("\n")))
    others = [b for idx, b in enumerate(blocks) if idx != root] or ["  <NO_OTHER_FAILURES>"]
    lines = [
        "",
        "=" * width,
        title,
        "-" * width,
        "Failures:",
        *others,
        "-" * width,
        "Root Cause (first observed failure):",
        blocks[root],
        "=" * width,
    ]
    return "\n".join(lines)


# Failures closer together than this are one moment to the agent: its observation of a
# signal death (no error file) can lag a peer's error file by a scheduling delay.
_SAME_MOMENT_S = 1.0


def _root_index(failures: Sequence[WorkerFailure]) -> int:
    if not failures:
        raise ValueError("no failures: a root cause needs at least one failed worker")
    # Kinds before times: a peer's symptom is often written (and its file stamped) before
    # the exit that caused it is observed, and the agent stops workers only after a failure.
    kinds = [f.kind.blame_rank for f in failures]
    candidates = [i for i in range(len(failures)) if kinds[i] == min(kinds)]
    # min() keeps the first of equal keys, which is torch's tie-break.
    first = min(candidates, key=lambda i: _order_key(failures[i]))
    if any(f.precise_at is None for f in failures):
        return first  # torch's rule, for failures built without precise times
    # Within one moment causality decides: a worker killed by a signal nobody in the agent
    # sent (SIGKILL, SIGSEGV) leaves no error file, and its peers' failures without one
    # look like their own; the signal is what they come from.
    start = _order_key(failures[first])
    near = [i for i in candidates if _order_key(failures[i]) - start <= _SAME_MOMENT_S]
    return min(near, key=lambda i: (failures[i].exitcode >= 0, _order_key(failures[i])))


def _order_key(f: WorkerFailure) -> float:
    return f.precise_at if f.precise_at is not None else float(f.failed_at)


def _format_failure(idx: int, f: WorkerFailure) -> str:
    name = signal_name(f.exitcode)
    signal_part = f" ({name})" if name else ""
    # torch prints <N/A> whenever there is no readable file, whatever path the worker had.
    error_file = str(f.error_file) if f.error_file is not None and f.record is not None else "<N/A>"
    message = failure_message(f)
    if f.record is None or not f.record.is_flat:
        # Indent continuation lines under "traceback :"; torch leaves flat messages as they are.
        message = message.replace("\n", "\n  ")
    when = datetime.fromtimestamp(f.failed_at).strftime("%Y-%m-%d_%H:%M:%S")
    return "\n".join(
        [
            f"[{idx}]:",
            f"  time      : {when}",
            f"  host      : {f.host}",
            f"  rank      : {f.global_rank} (local_rank: {f.local_rank})",
            f"  exitcode  : {f.exitcode} (pid: {f.pid}) {signal_part}",
            f"  error_file: {error_file}",
            f"  traceback : {message}",
        ]
    )


def failure_fields(failure: WorkerFailure) -> dict[str, object]:
    """The failure as the event log records it (docs/event-log.md, "failure object")."""
    return {
        "rank": failure.global_rank,
        "local_rank": failure.local_rank,
        "pid": failure.pid,
        "exit_code": failure.exitcode,
        "signal": signal_name(failure.exitcode) if failure.exitcode < 0 else None,
        "message": failure.record.message if failure.record else None,
        "timestamp": failure.timestamp,
        "host": failure.host,
        "precise_at": failure.precise_at,
        "kind": failure.kind.value,
        "stopped_by_agent": failure.stopped_by_agent,
    }


def only_symptoms(failures: Sequence[WorkerFailure]) -> bool:
    """Every failure says a peer went away or timed out: the cause is somewhere else."""
    return bool(failures) and all(f.kind is FailureKind.SYMPTOM for f in failures)


def peer_timed_out(failures: Sequence[WorkerFailure]) -> WorkerFailure | None:
    """The first failure that says a peer did not answer in time (a hang somewhere)."""
    for f in failures:
        if is_peer_timeout(f.record.message if f.record is not None else None):
            return f
    return None


def brief(failure: WorkerFailure) -> str:
    """One line for logs and for other nodes: which worker failed and how."""
    how = signal_name(failure.exitcode) if failure.exitcode < 0 else None
    how = how or f"exit code {failure.exitcode}"
    line = f"rank {failure.global_rank} (local_rank {failure.local_rank}, pid {failure.pid}) {how}"
    # Other nodes read this as the failure's detail: say when it is not the cause.
    if failure.kind is FailureKind.SYMPTOM:
        return f"{line}, a symptom (a peer went away or timed out)"
    if failure.kind is FailureKind.STOPPED:
        return f"{line}, stopped by the launcher"
    return line
