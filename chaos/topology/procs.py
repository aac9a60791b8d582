"""Processes and ports seen through /proc, identified safely.

A PID alone is not an identity: once a process is reaped its number can be handed to an
unrelated process. Every process the harness tracks is therefore a `ProcId` (pid + the
kernel's start time from /proc/<pid>/stat), and nothing is signalled unless both still match,
so the harness only ever kills processes it started or saw its job start.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"  # TCP state in /proc/net/tcp*


@dataclass(frozen=True, kw_only=True)
class ProcId:
    pid: int
    start: int  # clock ticks after boot (field 22 of /proc/<pid>/stat)

    def alive(self) -> bool:
        return proc_start(self.pid) == self.start


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ")".
    return text.rsplit(")", 1)[1].split()


def proc_start(pid: int) -> int | None:
    """The start time of a live (not zombie) process, else None."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def identify(pid: int) -> ProcId | None:
    start = proc_start(pid)
    return None if start is None else ProcId(pid=pid, start=start)


def comm(pid: int) -> str | None:
    """The process's command name (what it exec'd last), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def environ(pid: int) -> dict[str, str]:
    """The environment a process started with ({} when it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def marked(name: str, value: str) -> dict[int, dict[str, str]]:
    """Every live process whose environment has `name=value`, with that environment.

    An environment is inherited across fork and exec, so this finds a job's processes however
    they detached (setsid, double fork, reparented to init): no tree walk or process group
    can. It cannot see one that replaced its environment."""
    wanted = f"{name}={value}".encode()
    found: dict[int, dict[str, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if wanted in raw.split(b"\0") and proc_start(int(entry.name)) is not None:
            found[int(entry.name)] = environ(int(entry.name))
    return found


def ns_pid(pid: int) -> int | None:
    """The pid that process has in its own (innermost) PID namespace (a container's)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def children(pid: int) -> list[int]:
    """Direct children of `pid` (every thread's list: a child belongs to the thread that forked)."""
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


def tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now (breadth first)."""
    seen: list[int] = []
    queue = [root]
    while queue:
        pid = queue.pop(0)
        if pid in seen or proc_start(pid) is None:
            continue
        seen.append(pid)
        queue.extend(children(pid))
    return seen


def send(procs: Iterable[ProcId], sig: signal.Signals) -> list[int]:
    """Signals every process that is still the one we know; returns the pids signalled."""
    done: list[int] = []
    for proc in procs:
        if not proc.alive():
            continue
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            continue  # exited between the check and the kill
        done.append(proc.pid)
    return done


def _listen_sockets(base: str, wanted: set[int]) -> dict[int, set[int]]:
    """Port -> inodes of the sockets listening on it, from the tcp tables under `base`."""
    found: dict[int, set[int]] = {}
    for table in (f"{base}/tcp", f"{base}/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            port = int(cols[1].rsplit(":", 1)[1], 16)
            if cols[3] == _LISTEN and port in wanted:
                found.setdefault(port, set()).add(int(cols[9]))
    return found


def listening(ports: Iterable[int], *, pid: int | None = None) -> list[int]:
    """Which of `ports` some socket is listening on (IPv4 or IPv6): in this process's network
    namespace, or in that of process `pid` (/proc/<pid>/net shows the namespace of `pid`)."""
    base = "/proc/net" if pid is None else f"/proc/{pid}/net"
    return sorted(_listen_sockets(base, set(ports)))


def listening_owners(ports: Iterable[int]) -> dict[int, set[int]]:
    """Which of `ports` some socket listens on in this network namespace, each with the pids
    holding that socket (empty when no live process could be found holding it).

    A port number alone does not say whose it is: another job on the same host can be handed
    the ephemeral port this job used and gave back."""
    sockets = _listen_sockets("/proc/net", set(ports))
    by_inode = {inode: port for port, inodes in sockets.items() for inode in inodes}
    owners: dict[int, set[int]] = {port: set() for port in sockets}
    if not by_inode:
        return owners
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"{entry.path}/fd")
        except OSError:
            continue  # gone, or a kernel thread
        with fds:
            for fd in fds:
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    port = by_inode.get(int(target[8:-1]))
                    if port is not None:
                        owners[port].add(int(entry.name))
    return owners


def parse_signal(name: str | int) -> signal.Signals:
    """'SIGKILL', 'KILL', 'kill' or 9 -> signal.SIGKILL; ValueError for anything else."""
    if isinstance(name, int) or str(name).isdigit():
        return signal.Signals(int(name))
    text = str(name).upper()
    text = text if text.startswith("SIG") else f"SIG{text}"
    try:
        return signal.Signals[text]
    except KeyError:
        raise ValueError(f"unknown signal {name!r}") from None
