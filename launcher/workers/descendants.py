"""Finding every descendant of the workers without cgroups: subreaper, tree, token.

Without a cgroup (no cgroup2, or not allowed to create one) the agent makes itself a child
subreaper (PR_SET_CHILD_SUBREAPER): a process whose parent dies is reparented to the agent
instead of init, so whatever a worker started, however it detached (setsid, double fork),
stays in the agent's process tree, and a walk of /proc/<pid>/task/*/children finds it.
Those adopted orphans are the agent's children: it reaps them (waitpid by pid, never -1,
which would steal the workers' exit statuses from Popen).

When the agent itself is gone the tree is gone too (everything is reparented to init), so
the guardian needs another handle: every worker's environment carries LAUNCHER_AGENT_TOKEN,
which its descendants inherit across fork and exec. The guardian SIGKILLs every process
whose /proc/<pid>/environ names its agent's token, and scans again until none is left. A
process that replaced its environment (env -i, execve with a fresh one) escapes the token
but not the tree, so only the guardian's last-resort sweep can miss it.
"""

from __future__ import annotations

import ctypes
import os
import selectors
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

TOKEN_VAR = "LAUNCHER_AGENT_TOKEN"
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphans of this process's descendants are reparented to it (Linux 3.4+); OSError if not."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def with_token(env_value: str | None, token: str) -> str:
    """The token list a worker gets: an agent inside another agent's worker keeps the outer
    token too, so the outer guardian still finds the inner agent's workers."""
    return token if not env_value else f"{env_value},{token}"


def state(pid: int) -> str | None:
    """The /proc state letter of `pid` (R, S, D, T, Z...), None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[0]


def children(pid: int) -> list[int]:
    """Direct children of `pid`, zombies included (each thread keeps its own list)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue  # the thread ended while we looked
    return found


def tree(roots: Iterable[int]) -> list[int]:
    """The live (not zombie) processes below and including `roots`, breadth first."""
    seen: set[int] = set()
    order: list[int] = []
    queue = list(roots)
    while queue:
        pid = queue.pop(0)
        if pid in seen:
            continue
        seen.add(pid)
        letter = state(pid)
        if letter is None:
            continue
        if letter not in ("Z", "X"):
            order.append(pid)
        queue.extend(children(pid))
    return order


def token_pids(token: str) -> list[int]:
    """Live processes whose environment names `token` in LAUNCHER_AGENT_TOKEN."""
    wanted = TOKEN_VAR.encode() + b"="
    found: list[int] = []
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            raw = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue  # gone, a zombie, or another user's
        for item in raw.split(b"\0"):
            if item.startswith(wanted) and token in item[len(wanted) :].decode().split(","):
                found.append(int(entry.name))
                break
    return found


def sweep_token(token: str, timeout_s: float = 1.0) -> int:
    """SIGKILLs the token's processes until a scan finds none (forks in flight are caught by
    the next scan). Returns how many were signalled. For the guardian."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = [p for p in token_pids(token) if state(p) not in (None, "Z", "X")]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.add(pid)
        wait_gone(_alive_of(pids), 0.2)
    return len(killed)


def _alive_of(pids: list[int]) -> Callable[[], list[int]]:
    return lambda: [p for p in pids if state(p) not in (None, "Z", "X")]


def send(pids: Iterable[int], sig: int) -> list[int]:
    """Signals each pid that still exists; returns those signalled."""
    sent = []
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
        sent.append(pid)
    return sent


def reap(pids: Iterable[int]) -> None:
    """waitpid for adopted orphans that have exited (never for pids Popen owns)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue


def wait_gone(list_pids: Callable[[], list[int]], timeout_s: float) -> bool:
    """Waits until `list_pids()` is empty; True if it became empty in time.

    Blocks on pidfds of what it lists (woken by each exit), then lists again, so processes
    forked meanwhile are waited for too."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = list_pids()
        if not pids:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        fds = []
        with selectors.DefaultSelector() as sel:
            for pid in pids:
                try:
                    fd = os.pidfd_open(pid)
                except ProcessLookupError:
                    continue
                fds.append(fd)
                sel.register(fd, selectors.EVENT_READ)
            try:
                if len(fds) == len(pids):
                    sel.select(min(remaining, 0.5))
            finally:
                for fd in fds:
                    os.close(fd)
