"""A real etcd cluster (1 or 3 members) on loopback for the duration of one run.

Members run Debian's `/usr/bin/etcd` with kernel-assigned client and peer ports (parallel runs
never collide; a port taken between choosing and binding is retried), data in a temp dir
(etcd preallocates its WAL, so it stays out of the run dir) and logs in RUN_DIR/etcd/. Members
get PDEATHSIG through `setpriv`, so they die with the harness even if it is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
START_ATTEMPTS = 3
# urllib must never route loopback requests through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def etcd_binary() -> str | None:
    return shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").is_file() else None)


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


def http_json(url: str, body: dict[str, Any] | None = None, timeout_s: float = 2.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    with _OPENER.open(urllib.request.Request(url, data=data), timeout=timeout_s) as reply:
        return json.loads(reply.read())


class EtcdCluster:
    """The `Store` of an etcd-backed run (see chaos.topology.base.Store)."""

    kind = "etcd"
    host_node: int | None = None

    def __init__(self, size: int, *, log_dir: Path, enable_v2: bool = False) -> None:
        self.size = size
        self.log_dir = log_dir
        self.enable_v2 = enable_v2
        self.ports: list[tuple[int, int]] = []  # (client, peer) per member
        self.procs: list[subprocess.Popen[bytes]] = []
        self._data: Path | None = None

    @property
    def endpoint(self) -> str:
        return ",".join(f"{HOST}:{client}" for client, _ in self.ports)

    def client_url(self, index: int) -> str:
        return f"http://{HOST}:{self.ports[index][0]}"

    def start(self, timeout_s: float = 30.0) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._data = Path(tempfile.mkdtemp(prefix="chaos-etcd-"))
        for attempt in range(1, START_ATTEMPTS + 1):
            self._spawn(binary, attempt)
            problem = self._wait_healthy(time.monotonic() + timeout_s)
            if problem is None:
                return
            self._kill_all()
            if attempt == START_ATTEMPTS or "address already in use" not in problem:
                raise RuntimeError(f"etcd cluster of {self.size} did not start: {problem}")

    def _spawn(self, binary: str, attempt: int) -> None:
        assert self._data is not None
        flat = free_ports(2 * self.size)
        self.ports = [(flat[2 * i], flat[2 * i + 1]) for i in range(self.size)]
        initial = ",".join(f"m{i}=http://{HOST}:{peer}" for i, (_, peer) in enumerate(self.ports))
        self.procs = []
        for i, (client, peer) in enumerate(self.ports):
            data_dir = self._data / f"try{attempt}" / f"m{i}"
            data_dir.mkdir(parents=True)
            argv = [
                binary,
                f"--name=m{i}",
                f"--data-dir={data_dir}",
                f"--listen-client-urls=http://{HOST}:{client}",
                f"--advertise-client-urls=http://{HOST}:{client}",
                f"--listen-peer-urls=http://{HOST}:{peer}",
                f"--initial-advertise-peer-urls=http://{HOST}:{peer}",
                f"--initial-cluster={initial}",
                f"--initial-cluster-token={self._data.name}-{attempt}",
                "--initial-cluster-state=new",
                "--logger=zap",
                "--log-level=warn",
            ]
            if self.enable_v2:
                argv.append("--enable-v2")
            with (self.log_dir / f"m{i}.log").open("ab") as log:
                self.procs.append(
                    subprocess.Popen(
                        die_with_parent(argv),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )

    def _healthy(self, index: int) -> bool:
        try:
            reply = http_json(f"{self.client_url(index)}/health", timeout_s=1.0)
        except (OSError, ValueError):
            return False
        return bool(reply.get("health") == "true")

    def _log_tail(self, index: int) -> str:
        try:
            text = (self.log_dir / f"m{index}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-10:])

    def _wait_healthy(self, deadline: float) -> str | None:
        interval = 0.02
        while True:
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    return f"member m{i} exited early: {self._log_tail(i)}"
            if all(self._healthy(i) for i in range(self.size)):
                return None
            if time.monotonic() >= deadline:
                return "not healthy in time: " + " | ".join(
                    self._log_tail(i) for i in range(self.size)
                )
            time.sleep(interval)  # polling a server that is starting
            interval = min(interval * 1.5, 0.2)

    # -- the Store protocol ------------------------------------------------------------------
    def member_count(self) -> int:
        return self.size

    def member_pid(self, index: int) -> int | None:
        proc = self.procs[index]
        return proc.pid if proc.poll() is None else None

    def kill_member(self, index: int) -> int | None:
        proc = self.procs[index]
        if proc.poll() is not None:
            return None
        proc.kill()
        proc.wait(timeout=10)
        return proc.pid

    def leader_index(self, timeout_s: float = 10.0) -> int:
        """The member the live members agree leads (waits, bounded, for an election)."""
        deadline = time.monotonic() + timeout_s
        while True:
            ids: dict[str, int] = {}
            leaders: set[str] = set()
            for index in range(self.size):
                if self.member_pid(index) is None:
                    continue
                with contextlib.suppress(OSError, ValueError, KeyError):
                    status = http_json(f"{self.client_url(index)}/v3/maintenance/status", {})
                    ids[str(status["header"]["member_id"])] = index
                    leaders.add(str(status.get("leader", "0")))
            if len(leaders) == 1 and (leader := leaders.pop()) in ids:
                return ids[leader]
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no agreed etcd leader within {timeout_s:g}s")
            time.sleep(0.05)  # polling an election in progress

    def _kill_all(self) -> None:
        for index in range(len(self.procs)):
            self.kill_member(index)

    def stop(self) -> None:
        self._kill_all()
        if self._data is not None:
            shutil.rmtree(self._data, ignore_errors=True)
            self._data = None
