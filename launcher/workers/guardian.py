"""A watchdog process that kills every worker and all they started if the launcher dies.

torchrun puts workers in their own sessions and does not use PDEATHSIG, so `kill -9` of
torchrun leaves them running forever. Here the launcher forks a guardian before starting
any thread or worker. The guardian sits in its own session (so killing the launcher's
process group spares it), ignores terminal signals, and blocks reading a pipe whose only
writer is the launcher. The launcher tells it which process groups exist ("+pgid"/"-pgid")
and how its workers are contained ("c<cgroup dir>" or "t<token>", launcher.workers.
containment); when the pipe reaches EOF without a final "bye", the launcher is gone and the
guardian SIGKILLs every group it still knows, then the launcher's cgroup (cgroup.kill, then
rmdir) or every process carrying the launcher's environment token, so a descendant that left
its worker's process group dies too.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from launcher.workers import cgroup, descendants

_BYE = b"bye\n"


class Guardian:
    def __init__(self) -> None:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked child, covered by integration tests
            os.close(write_fd)
            _guard(read_fd)
        os.close(read_fd)
        self.pid = pid
        self._fd = write_fd

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}\n".encode())

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}\n".encode())

    def contain_cgroup(self, base: Path) -> None:
        self._send(f"c{base}\n".encode())

    def contain_token(self, token: str) -> None:
        self._send(f"t{token}\n".encode())

    def close(self) -> None:
        """Normal exit: every worker has been reaped, the guardian leaves quietly."""
        if self._fd < 0:
            return
        self._send(_BYE)
        os.close(self._fd)
        self._fd = -1
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            return

    def _send(self, data: bytes) -> None:
        if self._fd >= 0:
            try:
                os.write(self._fd, data)
            except BrokenPipeError:
                self._fd = -1  # the guardian was killed; nothing left to tell


def _guard(read_fd: int) -> None:  # pragma: no cover - forked child
    try:
        os.setsid()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # never hold the launcher's output pipes open
            os.dup2(devnull, fd)
        groups: set[int] = set()
        cgroup_dir: Path | None = None
        token = ""
        pending = b""
        clean = False
        while True:
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line == b"bye":
                    clean = True
                elif line[:1] == b"+":
                    groups.add(int(line[1:]))
                elif line[:1] == b"-":
                    groups.discard(int(line[1:]))
                elif line[:1] == b"c":
                    cgroup_dir = Path(line[1:].decode())
                elif line[:1] == b"t":
                    token = line[1:].decode()
        if not clean:
            for pgid in groups:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    continue
            if cgroup_dir is not None:
                cgroup.kill_tree(cgroup_dir)
                descendants.wait_gone(lambda: cgroup.tree_pids(cgroup_dir), 5.0)
                cgroup.remove_tree(cgroup_dir)
            if token:
                descendants.sweep_token(token)
    finally:
        os._exit(0)
