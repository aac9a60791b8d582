"""Stacks of every rank at the moment of a hang: evidence first, then the stop.

Every rank of the node is dumped in parallel, each within a bounded time, into
`<incident dir>/rank-<r>.txt`:

    py-spy        `py-spy dump --pid P` (Python frames of every thread; the process keeps
                  running), then `--nonblocking` if the blocking read failed or timed out.
                  Optional: `pip install launcher[debug]`; needs ptrace rights (root, or
                  CAP_SYS_PTRACE, or Yama ptrace_scope 0).
    faulthandler  SIGCONT then SIGABRT: the worker prints every thread's traceback to its
                  stderr (the launcher exports PYTHONFAULTHANDLER=1 unless the user set it)
                  and dies. The text is copied from the rank's stderr log when it has one;
                  on a console it stays where the user sees it.

Never SIGUSR1/SIGUSR2: a worker without a handler for them dies without a word.

NCCL's Flight Recorder: when the job sets TORCH_NCCL_DEBUG_INFO_PIPE_FILE (and a trace
buffer, TORCH_NCCL_TRACE_BUFFER_SIZE > 0), every rank's process group listens on the FIFO
`<prefix><rank>.pipe`; one byte written there makes it dump its collective trace (to
TORCH_NCCL_DEBUG_INFO_TEMP_FILE + rank) without stopping. That is written first, before the
stacks, for every rank that has such a pipe.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

AUTO, PY_SPY, FAULTHANDLER = "auto", "py-spy", "faulthandler"
_FRAMES_SHOWN = 8


@dataclass(frozen=True, kw_only=True)
class DumpTarget:
    rank: int
    local_rank: int
    pid: int
    stderr_log: Path | None  # where the worker's stderr goes, when it is a file


@dataclass(frozen=True, kw_only=True)
class StackDump:
    rank: int
    local_rank: int
    pid: int
    method: str  # py-spy, faulthandler, or none
    path: Path | None
    ok: bool
    error: str | None
    duration_s: float
    text: str  # what was captured ("" when it went to the console or failed)
    flight_recorder: str | None = None  # the NCCL debug pipe written to, if any


def py_spy_binary() -> str | None:
    """py-spy next to this interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def trigger_flight_recorder(prefix: str | None, ranks: list[int]) -> dict[int, str]:
    """Writes one byte to each rank's NCCL debug pipe that exists; {rank: pipe path}."""
    written: dict[int, str] = {}
    for rank in ranks if prefix else []:
        pipe = f"{prefix}{rank}.pipe"
        try:  # non-blocking: a pipe nobody reads any more must not stall the hang path
            fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue  # no such pipe (no trace buffer, not NCCL) or nobody listening
        try:
            os.write(fd, b"1")
            written[rank] = pipe
        except OSError:
            pass  # full or closed: the dump was asked for already
        finally:
            os.close(fd)
    return written


def dump_all(
    targets: list[DumpTarget],
    out_dir: Path,
    *,
    method: str,
    timeout_s: float = 5.0,
    fr_pipe_prefix: str | None = None,
) -> list[StackDump]:
    """Dumps every target in parallel; a failed py-spy dump falls back to faulthandler."""
    out_dir.mkdir(parents=True, exist_ok=True)
    recorder = trigger_flight_recorder(fr_pipe_prefix, [t.rank for t in targets])
    spy = py_spy_binary() if method in (AUTO, PY_SPY) else None
    results: dict[int, StackDump] = {}
    if spy is not None:
        for dump in _py_spy_all(spy, targets, out_dir, timeout_s):
            if dump.ok:
                results[dump.rank] = dump
    rest = [t for t in targets if t.rank not in results]
    for dump in _faulthandler_all(rest, out_dir, timeout_s):
        results[dump.rank] = dump
    return [replace(results[t.rank], flight_recorder=recorder.get(t.rank)) for t in targets]


def _py_spy_all(
    spy: str, targets: list[DumpTarget], out_dir: Path, timeout_s: float
) -> list[StackDump]:
    started = time.monotonic()
    deadline = started + timeout_s
    done: list[StackDump] = []
    pending = {t.rank: t for t in targets}
    for extra in ([], ["--nonblocking"]):
        runs = {
            rank: subprocess.Popen(
                [spy, "dump", "--pid", str(t.pid), *extra],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            for rank, t in pending.items()
        }
        for rank, proc in runs.items():
            t = pending[rank]
            try:
                out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                out, err = "", f"py-spy did not answer within {timeout_s:g} s"
            ok = proc.returncode == 0 and bool(out.strip())
            path = out_dir / f"rank-{rank}.txt"
            if ok:
                path.write_text(out)
                del pending[rank]
            first_line = (err.strip().splitlines() or ["no output"])[-1]
            done.append(
                StackDump(
                    rank=rank,
                    local_rank=t.local_rank,
                    pid=t.pid,
                    method=PY_SPY,
                    path=path if ok else None,
                    ok=ok,
                    error=None if ok else first_line,
                    duration_s=round(time.monotonic() - started, 3),
                    text=out if ok else "",
                )
            )
        if not pending:
            break
        deadline = time.monotonic() + timeout_s
    return done


def _faulthandler_all(
    targets: list[DumpTarget], out_dir: Path, timeout_s: float
) -> list[StackDump]:
    started = time.monotonic()
    sizes = {t.rank: _size(t.stderr_log) for t in targets}
    for t in targets:
        for sig in (signal.SIGCONT, signal.SIGABRT):  # a stopped process must run to print
            try:
                os.kill(t.pid, sig)
            except ProcessLookupError:
                break
    deadline = started + timeout_s
    dumps = []
    for t in targets:
        _wait_exit(t.pid, deadline)
        text = _read_from(t.stderr_log, sizes[t.rank])
        path = out_dir / f"rank-{t.rank}.txt"
        if text:
            path.write_text(text)
        where = "captured from its stderr log" if text else "printed to the worker's console"
        dumps.append(
            StackDump(
                rank=t.rank,
                local_rank=t.local_rank,
                pid=t.pid,
                method=FAULTHANDLER,
                path=path if text else None,
                ok=bool(text) or t.stderr_log is None,
                error=None if text or t.stderr_log is None else "no traceback in its stderr log",
                duration_s=round(time.monotonic() - started, 3),
                text=text if text else f"(traceback {where})",
            )
        )
    return dumps


def _size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


def _read_from(path: Path | None, offset: int) -> str:
    if path is None:
        return ""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(1 << 20)
    except OSError:
        return ""
    text = data.decode(errors="replace")
    start = text.find("Fatal Python error")
    return text[start:] if start >= 0 else ""


def _wait_exit(pid: int, deadline: float) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    finally:
        os.close(fd)


def key_frames(text: str, limit: int = _FRAMES_SHOWN) -> list[str]:
    """The frames that matter from a dump: the main thread's innermost `limit` frames
    (py-spy's "Thread ... MainThread", or faulthandler's "Current thread"/first thread)."""
    lines = text.splitlines()
    blocks: list[list[str]] = []
    for line in lines:
        if line.startswith(("Thread ", "Current thread")):
            blocks.append([line])
        elif blocks and line.startswith(" ") and line.strip():
            blocks[-1].append(line.strip())
    if not blocks:
        return []
    main = next((b for b in blocks if "MainThread" in b[0] or "Current thread" in b[0]), None)
    chosen = main or blocks[0]
    return chosen[1 : 1 + limit]
