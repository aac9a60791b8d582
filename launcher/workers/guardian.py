"""A watchdog process that kills every worker process group if the launcher dies.

torchrun puts workers in their own sessions and does not use PDEATHSIG, so `kill -9` of
torchrun leaves them running forever. Here the launcher forks a guardian before starting
any thread or worker. The guardian sits in its own session (so killing the launcher's
process group spares it), ignores terminal signals, and blocks reading a pipe whose only
writer is the launcher. The launcher tells it which process groups exist ("+pgid"/"-pgid");
when the pipe reaches EOF without a final "bye", the launcher is gone and the guardian
SIGKILLs every group it still knows, which also takes the workers' own children.
"""

from __future__ import annotations

import os
import signal

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
        if not clean:
            for pgid in groups:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    continue
    finally:
        os._exit(0)
