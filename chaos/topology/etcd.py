"""A real etcd cluster (1, 3 or 5 members) for the duration of one run, on any topology, and
for the integration tests (the one etcd helper of the repository).

Members run Debian's `/usr/bin/etcd`; where each one runs (a loopback process, a process in
its own network namespace, a container) is its `Placement` (chaos.topology.etcd_members),
so member command lines, start-up retries, health, restarts and leader lookup exist once.
Logs go to `log_dir`/m<i>.log (a run's RUN_DIR/etcd; a temporary directory by default, removed
by `stop`); data stays out of it (etcd preallocates its WAL). As a context manager (the tests)
it starts on entry and always stops on exit.

Health and leader come from the members themselves: over HTTP from the harness when it can
reach them (`local`), otherwise with `etcdctl ... -w json` run inside a member's network
(`ip netns exec`, `nsenter`), since the harness's own namespace has no route to them.

With `tls` the client port speaks only TLS and wants a client certificate (etcd's
--client-cert-auth): the certificates (chaos.topology.etcd_tls) are made at start, once every
member's address is known, in `log_dir`/tls, where member containers and nodes see them.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from chaos.topology.etcd_members import (
    HOST,
    Placement,
    ProcessPlacement,
    die_with_parent,
    free_ports,
)

if TYPE_CHECKING:  # etcd_tls needs `cryptography`, imported only for a cluster with TLS
    from chaos.topology.etcd_tls import TlsFiles

__all__ = [
    "HOST",
    "START_ATTEMPTS",
    "EtcdCluster",
    "die_with_parent",
    "etcd_binary",
    "etcdctl_binary",
    "free_ports",
    "http_json",
]

START_ATTEMPTS = 3
_PROBE_TIMEOUT_S = 10.0
# urllib must never route loopback requests through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def etcd_binary() -> str | None:
    return shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").is_file() else None)


def etcdctl_binary() -> str | None:
    found = shutil.which("etcdctl")
    return found or ("/usr/bin/etcdctl" if Path("/usr/bin/etcdctl").is_file() else None)


def http_json(
    url: str,
    body: dict[str, Any] | None = None,
    timeout_s: float = 2.0,
    context: ssl.SSLContext | None = None,
) -> Any:
    opener = _OPENER
    if context is not None:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
    data = None if body is None else json.dumps(body).encode()
    with opener.open(urllib.request.Request(url, data=data), timeout=timeout_s) as reply:
        return json.loads(reply.read())


def _probe_env() -> dict[str, str]:
    """etcdctl's environment: v3 API, and no proxy (gRPC honours *_proxy variables)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["ETCDCTL_API"] = "3"
    return env


class EtcdCluster:
    """The `Store` of an etcd-backed run (see chaos.topology.base.Store)."""

    kind = "etcd"
    host_node: int | None = None

    def __init__(
        self,
        size: int,
        *,
        log_dir: Path | None = None,
        enable_v2: bool = False,
        placement: Placement | None = None,
        tls: bool | TlsFiles = False,
    ) -> None:
        """`tls`: True makes the certificates at start; TlsFiles brings them (tests that
        need an odd one, such as an expired server certificate)."""
        self.size = size
        self._own_logs = log_dir is None
        self.log_dir = log_dir if log_dir is not None else Path(tempfile.mkdtemp(prefix="etcd-"))
        self.enable_v2 = enable_v2
        self.placement: Placement = placement if placement is not None else ProcessPlacement()
        self.ports: list[tuple[int, int]] = []  # (client, peer) per member
        self._argv: dict[int, list[str]] = {}  # how each member was started (restart_member)
        self._etcdctl: str | None = None
        self._want_tls = tls is not False
        self.tls: TlsFiles | None = None if isinstance(tls, bool) else tls
        self._context: ssl.SSLContext | None = None  # the harness's own client context

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

    @property
    def endpoint(self) -> str:
        """Every member's client address, comma-separated (the launcher's --rdzv-endpoint)."""
        return ",".join(self.client_addr(i) for i in range(len(self.ports)))

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        """(host, client port) of every member (what EtcdStore takes)."""
        return [(self.placement.address(i), client) for i, (client, _) in enumerate(self.ports)]

    def addresses(self) -> list[str]:
        """Every member's address (what a partition cuts a node from)."""
        return [self.placement.address(i) for i in range(self.size)]

    def client_addr(self, index: int) -> str:
        return f"{self.placement.address(index)}:{self.ports[index][0]}"

    def client_url(self, index: int) -> str:
        return f"{'https' if self._want_tls else 'http'}://{self.client_addr(index)}"

    def _make_tls(self) -> None:
        if self._want_tls and self.tls is None:
            from chaos.topology.etcd_tls import make_tls_files

            hosts = [self.placement.address(i) for i in range(self.size)]
            # 127.0.0.1: where a store-link proxy listens in front of a member.
            tls_dir = (self.log_dir / "tls").resolve()  # agents may run in another directory
            self.tls = make_tls_files(tls_dir, [*hosts, "127.0.0.1", "localhost"])
        if self.tls is not None and self._context is None:
            self._context = ssl.create_default_context(cafile=str(self.tls.ca))
            self._context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))

    def start(self, timeout_s: float = 30.0) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
        if not self.placement.direct:
            self._etcdctl = etcdctl_binary()
            if self._etcdctl is None:
                raise RuntimeError("etcdctl is not installed (apt-get install etcd-client)")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._make_tls()
        token = f"chaos-{uuid.uuid4().hex[:8]}"
        for attempt in range(1, START_ATTEMPTS + 1):
            self._spawn(binary, f"{token}-{attempt}", attempt)
            problem = self._wait_healthy(time.monotonic() + timeout_s)
            if problem is None:
                return
            self._kill_all()
            if attempt == START_ATTEMPTS or "address already in use" not in problem:
                raise RuntimeError(f"etcd cluster of {self.size} did not start: {problem}")

    def _spawn(self, binary: str, token: str, attempt: int) -> None:
        self.ports = self.placement.ports(self.size)
        peers = [f"http://{self.placement.address(i)}:{p}" for i, (_, p) in enumerate(self.ports)]
        initial = ",".join(f"m{i}={url}" for i, url in enumerate(peers))
        for i in range(self.size):
            argv = [
                binary,
                f"--name=m{i}",
                f"--data-dir={self.placement.data_dir(i, attempt)}",
                f"--listen-client-urls={self.client_url(i)}",
                f"--advertise-client-urls={self.client_url(i)}",
                f"--listen-peer-urls={peers[i]}",
                f"--initial-advertise-peer-urls={peers[i]}",
                f"--initial-cluster={initial}",
                f"--initial-cluster-token={token}",
                "--initial-cluster-state=new",
                "--logger=zap",
                "--log-level=warn",
            ]
            if self.enable_v2:
                argv.append("--enable-v2")
            if self.tls is not None:
                argv += self.tls.etcd_args()
            self._argv[i] = argv
            self.placement.spawn(i, argv, self.log_dir / f"m{i}.log")

    def restart_member(self, index: int, timeout_s: float = 30.0) -> None:
        """Starts member `index` again (after `kill_member`) on its address, ports and data
        dir, so it keeps its data as a restarted etcd does; waits, bounded, until healthy."""
        if self.member_pid(index) is not None:
            raise RuntimeError(f"etcd member m{index} is still running")
        self.placement.spawn(index, self._argv[index], self.log_dir / f"m{index}.log")
        deadline = time.monotonic() + timeout_s
        while index not in self._healthy_members():
            if self.member_pid(index) is None or time.monotonic() >= deadline:
                raise RuntimeError(
                    f"etcd member m{index} did not come back: {self._log_tail(index)}"
                )
            time.sleep(0.05)  # polling a server that is starting

    # -- probes ------------------------------------------------------------------------------
    def _ctl(self, *args: str) -> list[dict[str, Any]]:
        """`etcdctl ARGS -w json` against every live member, run inside the network of the
        first live one; the replies that came back (an unreachable member is left out)."""
        live = [i for i in range(self.size) if self.member_pid(i) is not None]
        if not live or self._etcdctl is None:
            return []
        urls = ",".join(self.client_url(i) for i in live)
        argv = [*self.placement.probe_exec(live[0]), self._etcdctl, f"--endpoints={urls}"]
        argv += ["--dial-timeout=1s", "--command-timeout=1s", *args, "-w", "json"]
        if self.tls is not None:
            argv += [f"--cacert={self.tls.ca}", f"--cert={self.tls.client_cert}"]
            argv += [f"--key={self.tls.client_key}"]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=_PROBE_TIMEOUT_S,
                env=_probe_env(),
                check=False,  # etcdctl exits 1 when any endpoint fails: read what came back
            )
            replies = json.loads(done.stdout)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return []  # the member died under us, or etcdctl printed nothing to parse
        return [r for r in replies if isinstance(r, dict)] if isinstance(replies, list) else []

    def _index_of(self, url: object) -> int | None:
        for index in range(self.size):
            if url == self.client_url(index):
                return index
        return None

    def _healthy(self, index: int) -> bool:
        try:
            url = f"{self.client_url(index)}/health"
            reply = http_json(url, timeout_s=1.0, context=self._context)
        except (OSError, ValueError):
            return False
        return bool(reply.get("health") == "true")

    def _healthy_members(self) -> set[int | None]:
        if self.placement.direct:
            return {i for i in range(self.size) if self._healthy(i)}
        return {
            self._index_of(r.get("endpoint"))
            for r in self._ctl("endpoint", "health")
            if r.get("health") is True
        }

    def _all_healthy(self) -> bool:
        return self._healthy_members() >= set(range(self.size))

    def _statuses(self) -> dict[int, tuple[str, str]]:
        """Live member -> (its member id, the leader id it reports), for those that answer.
        A member without a leader omits the field (proto3 zero): it reports "0", no agreement."""
        found: dict[int, tuple[str, str]] = {}
        if self.placement.direct:
            for index in range(self.size):
                if self.member_pid(index) is None:
                    continue
                try:
                    url = f"{self.client_url(index)}/v3/maintenance/status"
                    status = http_json(url, {}, context=self._context)
                    found[index] = (
                        str(status["header"]["member_id"]),
                        str(status.get("leader", "0")),
                    )
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # not answering (yet): no say in who leads
            return found
        for reply in self._ctl("endpoint", "status"):
            member = self._index_of(reply.get("Endpoint"))
            said = reply.get("Status")
            if member is None or not isinstance(said, dict):
                continue
            try:
                found[member] = (str(said["header"]["member_id"]), str(said.get("leader", "0")))
            except (KeyError, TypeError):
                continue
        return found

    def _log_tail(self, index: int) -> str:
        try:
            text = (self.log_dir / f"m{index}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-10:])

    def _wait_healthy(self, deadline: float) -> str | None:
        interval = 0.02
        while True:
            for i in range(self.size):
                if self.member_pid(i) is None:
                    return f"member m{i} exited early: {self._log_tail(i)}"
            if self._all_healthy():
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
        return self.placement.pid(index)

    def kill_member(self, index: int) -> int | None:
        return self.placement.kill(index)

    def leader_index(self, timeout_s: float = 10.0) -> int:
        """The member the live members agree leads (waits, bounded, for an election)."""
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = self._statuses()
            ids = {member: index for index, (member, _) in statuses.items()}
            leaders = {leader for _, leader in statuses.values()}
            if len(leaders) == 1 and (leader := leaders.pop()) in ids:
                return ids[leader]
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no agreed etcd leader within {timeout_s:g}s")
            time.sleep(0.05)  # polling an election in progress

    def _kill_all(self) -> None:
        for index in range(self.size):
            self.kill_member(index)

    def stop(self) -> None:
        """Kills every member and removes what its placement made (data, containers)."""
        try:
            self._kill_all()
        finally:
            if self._own_logs:
                shutil.rmtree(self.log_dir, ignore_errors=True)
            failed = self.placement.close()
            if failed:
                raise RuntimeError(f"etcd members not removed: {failed}")
