"""Log directory layout and where each worker stream goes.

Layout (compatible with torchrun's, except that nothing is ever deleted):
    <log_dir>/<run_id>_<random>/events.jsonl
    <log_dir>/<run_id>_<random>/attempt_<restart_count>[.<k>]/<local_rank>/{stdout,stderr}.log
    <log_dir>/<run_id>_<random>/attempt_<restart_count>[.<k>]/<local_rank>/error.json
torchrun wipes `attempt_N` when it is reused (a membership change keeps the restart count);
here a reused number gets a `.1`, `.2`, ... suffix instead.
"""

from __future__ import annotations

import os
import string
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from launcher.config import LaunchConfig, Std
from launcher.errors import ConfigError

PREFIX_TEMPLATE_ENV = "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"
INHERIT = "inherit"
DEVNULL = "devnull"
FILE = "file"
TEE = "tee"


class RunLogs:
    def __init__(self, config: LaunchConfig) -> None:
        self.enabled = not config.logs_disabled
        self.run_dir: Path | None = None
        if not self.enabled:
            return
        try:
            if config.log_dir is None:
                base = Path(tempfile.mkdtemp(prefix="torchelastic_"))
            else:
                base = config.log_dir
                base.mkdir(parents=True, exist_ok=True)
            self.run_dir = Path(tempfile.mkdtemp(prefix=f"{config.run_id}_", dir=base))
        except OSError as err:
            # resolve() checks what it can without writing; some file systems (/proc, /sys,
            # a read-only mount) refuse only the mkdir itself.
            where = err.filename or config.log_dir or tempfile.gettempdir()
            raise ConfigError(
                f"cannot create {str(where)!r}: {err.strerror or err}",
                flag="--log-dir",
                fix="choose a directory you can write to, or /dev/null for no files",
            ) from err

    def new_attempt(self, restart_count: int) -> AttemptLogs:
        if self.run_dir is None:
            return AttemptLogs(None)
        name = f"attempt_{restart_count}"
        suffix = 0
        while True:
            path = self.run_dir / (name if suffix == 0 else f"{name}.{suffix}")
            try:
                path.mkdir()
            except FileExistsError:
                suffix += 1
                continue
            return AttemptLogs(path)


@dataclass(frozen=True)
class AttemptLogs:
    """One attempt's log directory (None: logs are not kept)."""

    dir: Path | None

    def rank_dir(self, local_rank: int) -> Path | None:
        if self.dir is None:
            return None
        path = self.dir / str(local_rank)
        path.mkdir(exist_ok=True)
        return path

    def error_file(self, local_rank: int) -> str:
        rank_dir = self.rank_dir(local_rank)
        return "" if rank_dir is None else str(rank_dir / "error.json")

    def stream_file(self, local_rank: int, stream: str) -> Path | None:
        rank_dir = self.rank_dir(local_rank)
        return None if rank_dir is None else rank_dir / f"{stream}.log"


@dataclass(frozen=True, kw_only=True)
class StreamRoute:
    """Where one stream of one worker goes: INHERIT, DEVNULL, FILE or TEE."""

    mode: str
    path: Path | None = None
    console_fd: int = 1
    prefix: bytes = b""
    duplicate_path: Path | None = None
    duplicate_filters: tuple[str, ...] = ()


def line_prefix(role: str, local_rank: int, global_rank: int, env: Mapping[str, str]) -> bytes:
    template = env.get(PREFIX_TEMPLATE_ENV)
    if template is None:
        return f"[{role}{local_rank}]:".encode()
    text = string.Template(template).safe_substitute(
        role_name=role, rank=str(global_rank), local_rank=str(local_rank)
    )
    return text.encode()


def route_stream(
    config: LaunchConfig,
    attempt: AttemptLogs,
    *,
    local_rank: int,
    global_rank: int,
    stream: str,
    agent_env: Mapping[str, str],
) -> StreamRoute:
    bit = Std.OUT if stream == "stdout" else Std.ERR
    console_fd = 1 if stream == "stdout" else 2
    shown = config.local_ranks_filter is None or local_rank in config.local_ranks_filter
    path = attempt.stream_file(local_rank, stream)
    if config.tee.for_rank(local_rank) & bit:
        if not shown:
            return StreamRoute(mode=FILE, path=path) if path else StreamRoute(mode=DEVNULL)
        filters = (
            config.duplicate_stdout_filters
            if stream == "stdout"
            else config.duplicate_stderr_filters
        )
        dup = attempt.dir / f"filtered_{stream}.log" if attempt.dir and filters else None
        return StreamRoute(
            mode=TEE,
            path=path,
            console_fd=console_fd,
            prefix=line_prefix(config.role, local_rank, global_rank, agent_env),
            duplicate_path=dup,
            duplicate_filters=filters,
        )
    if config.redirects.for_rank(local_rank) & bit:
        return StreamRoute(mode=FILE, path=path) if path else StreamRoute(mode=DEVNULL)
    if not shown:
        # torchrun sends these to /dev/null; keeping them in the log file loses nothing
        return StreamRoute(mode=FILE, path=path) if path else StreamRoute(mode=DEVNULL)
    return StreamRoute(mode=INHERIT)


def open_for_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
