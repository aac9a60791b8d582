"""Where the members of a harness-run etcd cluster live: one small "placement" per backend.

`EtcdCluster` (chaos.topology.etcd) builds the member command lines, waits for health and
finds the leader the same way on every backend; what differs is only where each member runs:

- `local`: child processes of the harness on 127.0.0.1, kernel-assigned ports (parallel runs
  never collide). The harness reaches them directly (`direct`), so probes are plain HTTP.
- `netns`: child processes too, but each started through a prefix (`ip netns exec
  <prefix>-e<i>`) inside its own namespace on the run's bridge, at its own address with the
  standard ports (each namespace has its own port space). The harness, in the root namespace,
  cannot reach those addresses, so probes (`etcdctl`) run through the same prefix.
- `docker`: containers on the run's network (chaos.topology.etcd_docker).

A `ProcessPlacement` keeps each member as the `Popen` of an unreaped child: its pid cannot be
handed to another process before the harness waits for it, so killing it never hits a
stranger. Members get PDEATHSIG through `setpriv`, so they die with the harness even if it is
SIGKILLed (`ip netns exec` and setpriv both exec: the Popen's pid is etcd's).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

HOST = "127.0.0.1"
CLIENT_PORT = 2379  # the standard ports, for members that have a network of their own
PEER_PORT = 2380


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Ports free right now (held together while choosing, so all distinct)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def die_with_parent(argv: list[str]) -> list[str]:
    """argv under `setpriv --pdeathsig KILL` (setpriv execs, so the pid stays the program's)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


class Placement(Protocol):
    """How and where the members of one cluster run (see the module docstring)."""

    @property
    def direct(self) -> bool:
        """Whether the harness's own network reaches the members (else probes go through
        `probe_exec`)."""
        ...

    def address(self, index: int) -> str:
        """Member `index`'s address, as agents and the other members reach it."""
        ...

    def ports(self, size: int) -> list[tuple[int, int]]:
        """(client, peer) port of every member, for one start attempt."""
        ...

    def data_dir(self, index: int, attempt: int) -> str:
        """A fresh data directory for the member, as the member sees its file system."""
        ...

    def spawn(self, index: int, argv: list[str], log: Path) -> None:
        """Starts member `index` (argv[0] is the etcd binary) with its output in `log`."""
        ...

    def pid(self, index: int) -> int | None:
        """The live member's pid as the harness sees it; None once it exited or was killed."""
        ...

    def kill(self, index: int) -> int | None:
        """SIGKILLs the member and waits for it; its pid, or None if it was already gone."""
        ...

    def probe_exec(self, index: int) -> list[str]:
        """The command prefix that runs a probe inside member `index`'s network."""
        ...

    def close(self) -> list[str]:
        """Kills every member and removes what the placement made; what could not be removed."""
        ...


class ProcessPlacement:
    """Members as child processes of the harness: on loopback with kernel-assigned ports
    (`local`, the default), or each behind a command prefix that puts it in its own network
    namespace, at `address(i)` with the standard ports (`netns`).

    `address` and `prefix` are called when members spawn, not when the placement is made: the
    netns topology may still rename its namespaces (a taken prefix) before `up()`."""

    def __init__(
        self,
        *,
        address: Callable[[int], str] | None = None,
        prefix: Callable[[int], list[str]] | None = None,
    ) -> None:
        if (address is None) != (prefix is None):
            raise ValueError("a namespaced placement needs both address and prefix")
        self._address = address
        self._prefix = prefix
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._data: Path | None = None

    @property
    def direct(self) -> bool:
        return self._prefix is None

    def address(self, index: int) -> str:
        return HOST if self._address is None else self._address(index)

    def ports(self, size: int) -> list[tuple[int, int]]:
        if self._address is not None:
            return [(CLIENT_PORT, PEER_PORT)] * size
        flat = free_ports(2 * size)
        return [(flat[2 * i], flat[2 * i + 1]) for i in range(size)]

    def data_dir(self, index: int, attempt: int) -> str:
        # etcd preallocates its WAL (64 MB), so the data stays out of the run directory.
        if self._data is None:
            self._data = Path(tempfile.mkdtemp(prefix="chaos-etcd-"))
        path = self._data / f"try{attempt}" / f"m{index}"
        path.mkdir(parents=True)
        return str(path)

    def probe_exec(self, index: int) -> list[str]:
        return [] if self._prefix is None else self._prefix(index)

    def spawn(self, index: int, argv: list[str], log: Path) -> None:
        self.kill(index)  # a retry replaces the member of the failed attempt
        with log.open("ab") as out:
            self._procs[index] = subprocess.Popen(
                [*self.probe_exec(index), *die_with_parent(argv)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def pid(self, index: int) -> int | None:
        proc = self._procs.get(index)
        return proc.pid if proc is not None and proc.poll() is None else None

    def kill(self, index: int) -> int | None:
        proc = self._procs.get(index)
        if proc is None or proc.poll() is not None:
            return None
        proc.kill()
        proc.wait(timeout=10)
        return proc.pid

    def close(self) -> list[str]:
        for index in list(self._procs):
            self.kill(index)
        if self._data is not None:
            shutil.rmtree(self._data, ignore_errors=True)
            self._data = None
        return []
