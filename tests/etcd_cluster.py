"""Real etcd servers for tests: one member (`EtcdServer`) or a cluster (`EtcdCluster`).

Each member runs `/usr/bin/etcd` (Debian's `etcd-server`) on 127.0.0.1 with client and peer
ports the kernel hands out (so pytest-xdist workers never collide) and a data dir in a temp
dir. Entering waits, bounded, until every member reports healthy; leaving SIGKILLs every
process it started (by PID) and removes the data, on every exit path. Members also get
PDEATHSIG (via `setpriv`), so they die with the test process even if it is killed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

# The process and HTTP helpers are the harness's own (chaos/topology/etcd.py); this module
# keeps only the test-facing cluster API (members, kill, status, context managers).
from chaos.topology.etcd import HOST, START_ATTEMPTS, etcd_binary, free_ports, http_json
from chaos.topology.etcd import die_with_parent as _die_with_parent

__all__ = ["HOST", "EtcdCluster", "EtcdServer", "etcd_binary", "free_ports", "http_json"]


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    argv: tuple[str, ...] = ()  # how it was started (restart uses it again)

    @property
    def client_url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            reply = http_json(f"{self.client_url}/health", timeout_s=1.0)
            return bool(reply.get("health") == "true")
        except (OSError, ValueError):
            return False

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class EtcdCluster:
    """`size` etcd members on loopback; a context manager that always cleans up."""

    def __init__(self, size: int = 3, *, start_timeout_s: float = 30.0) -> None:
        self.size = size
        self.start_timeout_s = start_timeout_s
        self.members: list[Member] = []
        self.start_s = 0.0  # how long the last start took until every member was healthy
        self._tmp: Path | None = None

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [(HOST, m.client_port) for m in self.members]

    def __enter__(self) -> EtcdCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
        self._tmp = Path(tempfile.mkdtemp(prefix="etcd-test-"))
        for attempt in range(1, START_ATTEMPTS + 1):
            began = time.monotonic()
            self._spawn(binary, attempt)
            problem = self._wait_healthy(began + self.start_timeout_s)
            if problem is None:
                self.start_s = time.monotonic() - began
                return
            self._kill_all()
            if attempt == START_ATTEMPTS or "address already in use" not in problem:
                raise RuntimeError(f"etcd cluster of {self.size} did not start: {problem}")

    def _spawn(self, binary: str, attempt: int) -> None:
        assert self._tmp is not None
        ports = free_ports(2 * self.size)
        self.members = [
            Member(
                name=f"m{i}",
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                data_dir=self._tmp / f"try{attempt}" / f"m{i}",
                log_path=self._tmp / f"try{attempt}" / f"m{i}.log",
            )
            for i in range(self.size)
        ]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        token = self._tmp.name
        for member in self.members:
            member.data_dir.mkdir(parents=True)
            argv = [
                binary,
                f"--name={member.name}",
                f"--data-dir={member.data_dir}",
                f"--listen-client-urls={member.client_url}",
                f"--advertise-client-urls={member.client_url}",
                f"--listen-peer-urls={member.peer_url}",
                f"--initial-advertise-peer-urls={member.peer_url}",
                f"--initial-cluster={initial}",
                f"--initial-cluster-token={token}",
                "--initial-cluster-state=new",
                "--logger=zap",
                "--log-level=warn",
            ]
            member.argv = tuple(argv)
            self._launch(member)

    @staticmethod
    def _launch(member: Member) -> None:
        with member.log_path.open("ab") as log:
            member.proc = subprocess.Popen(
                _die_with_parent(list(member.argv)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _wait_healthy(self, deadline: float) -> str | None:
        """None once every member is healthy, else what went wrong (bounded by deadline)."""
        interval = 0.02
        while True:
            for member in self.members:
                if not member.alive:
                    return f"{member.name} exited early: {member.log_tail()}"
            if all(m.healthy() for m in self.members):
                return None
            if time.monotonic() >= deadline:
                tails = "\n".join(f"--- {m.name}:\n{m.log_tail()}" for m in self.members)
                return f"not healthy within {self.start_timeout_s:g}s\n{tails}"
            time.sleep(interval)  # polling a server that is starting
            interval = min(interval * 1.5, 0.2)

    def kill(self, index: int) -> None:
        """SIGKILLs member `index` (the others keep running) and reaps it."""
        proc = self.members[index].proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self, index: int, timeout_s: float = 30.0) -> None:
        """Starts member `index` again (after `kill`) on its ports and data dir: it keeps
        its data, as a restarted etcd does. Waits, bounded, until it is healthy."""
        member = self.members[index]
        if member.alive:
            raise RuntimeError(f"{member.name} is still running")
        self._launch(member)
        deadline = time.monotonic() + timeout_s
        while not member.healthy():
            if not member.alive or time.monotonic() >= deadline:
                raise RuntimeError(f"{member.name} did not come back: {member.log_tail()}")
            time.sleep(0.05)  # polling a server that is starting

    def status(self, index: int) -> dict[str, Any]:
        return dict(http_json(f"{self.members[index].client_url}/v3/maintenance/status", {}))

    def leader_index(self, timeout_s: float = 15.0) -> int:
        """Index of the member that leads, as its live peers agree (waits for an election)."""
        deadline = time.monotonic() + timeout_s
        while True:
            ids: dict[str, int] = {}
            leaders: set[str] = set()
            for index, member in enumerate(self.members):
                if not member.alive:
                    continue
                with contextlib.suppress(OSError, ValueError):
                    status = self.status(index)
                    ids[status["header"]["member_id"]] = index
                    leaders.add(status.get("leader", "0"))
            if len(leaders) == 1 and (leader := leaders.pop()) in ids:
                return ids[leader]
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no agreed etcd leader within {timeout_s:g}s")
            time.sleep(0.05)  # polling an election in progress

    def _kill_all(self) -> None:
        for index in range(len(self.members)):
            self.kill(index)

    def stop(self) -> None:
        self._kill_all()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class EtcdServer(EtcdCluster):
    """A single etcd member."""

    def __init__(self, *, start_timeout_s: float = 30.0) -> None:
        super().__init__(1, start_timeout_s=start_timeout_s)

    def __enter__(self) -> EtcdServer:
        super().__enter__()
        return self

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.endpoints[0]
