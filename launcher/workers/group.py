"""Starting, watching and stopping the local workers of one attempt.

Exits are noticed as they happen: each worker has a pidfd in a selector, so the agent
wakes the moment a worker dies instead of at the next poll. Every worker leads its own
process group (like torchrun); when a worker is reaped, whatever is left of its group is
killed. A group's workers also share one containment scope (a cgroup, or the subreaper's
tree: launcher.workers.containment), so a stop reaches every process they started, even one
that left the process group and its session; the group is over only once the scope is empty.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from launcher import events as ev
from launcher.errors import WorkerStartError
from launcher.progress.dumps import DumpTarget
from launcher.workers.containment import Containment, Scope
from launcher.workers.descendants import TOKEN_VAR, with_token
from launcher.workers.env import WorkerRanks
from launcher.workers.guardian import Guardian
from launcher.workers.logs import DEVNULL, FILE, TEE, StreamRoute, open_for_append
from launcher.workers.pump import OutputPump

log = logging.getLogger(__name__)

# How long to wait for a SIGKILLed process before declaring it stuck (D state).
_KILL_WAIT_S = 5.0


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    ranks: WorkerRanks
    argv: list[str]
    env: dict[str, str]
    stdout: StreamRoute
    stderr: StreamRoute
    error_file: str


@dataclass(eq=False, kw_only=True)
class Worker:
    spec: WorkerSpec
    proc: subprocess.Popen[bytes]
    pidfd: int
    started_at: float
    exitcode: int | None = None
    exited_at: float | None = None
    stopped_by_agent: bool = False
    output_done: list[Any] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def local_rank(self) -> int:
        return self.spec.ranks.local_rank

    @property
    def global_rank(self) -> int:
        return self.spec.ranks.global_rank


class WorkerGroup:
    def __init__(
        self,
        *,
        guardian: Guardian,
        containment: Containment,
        pump: OutputPump,
        on_exit: Callable[[Worker], None],
        events: ev.EventSink,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._guardian = guardian
        self._containment = containment
        self._scope: Scope | None = None
        self._events = events
        self._pump = pump
        self._on_exit = on_exit
        self._clock = wall_clock
        self._selector = selectors.DefaultSelector()
        self.workers: list[Worker] = []

    def register_wakeup(self, fd: int) -> None:
        """Makes `wait` return when `fd` becomes readable (signals, rendezvous events)."""
        self._selector.register(fd, selectors.EVENT_READ, None)

    # -- start ---------------------------------------------------------------------------
    def start(self, specs: Iterable[WorkerSpec]) -> None:
        self.workers = []
        self._scope = self._containment.new_scope(owned=self._unreaped)
        try:
            for spec in specs:
                self.workers.append(self._spawn(spec))
        except WorkerStartError:
            self.stop(signal.SIGKILL, grace_s=0)
            raise

    def _spawn(self, spec: WorkerSpec) -> Worker:
        closers: list[int] = []
        tee_reads: list[tuple[int, StreamRoute]] = []

        def target(route: StreamRoute) -> int | IO[Any] | None:
            if route.mode == DEVNULL:
                return subprocess.DEVNULL
            if route.mode == FILE and route.path is not None:
                fd = open_for_append(route.path)
                closers.append(fd)
                return fd
            if route.mode == TEE:
                read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
                closers.append(write_fd)
                tee_reads.append((read_fd, route))
                return write_fd
            return None

        assert self._scope is not None  # start() made it
        env = dict(spec.env)
        env[TOKEN_VAR] = with_token(env.get(TOKEN_VAR), self._containment.token)
        try:
            stdout, stderr = target(spec.stdout), target(spec.stderr)
            proc = subprocess.Popen(
                spec.argv,
                env=env,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                # Only an os.write on an open fd (CgroupScope.preexec): no lock to deadlock on.
                preexec_fn=self._scope.preexec(),  # noqa: PLW1509
            )
        except (OSError, subprocess.SubprocessError) as err:
            for fd, _ in tee_reads:
                os.close(fd)
            problem = err.strerror if isinstance(err, OSError) else None
            raise WorkerStartError(
                problem or str(err), local_rank=spec.ranks.local_rank, command=spec.argv[0]
            ) from err
        finally:
            for fd in closers:
                os.close(fd)
        self._guardian.watch(proc.pid)
        pidfd = os.pidfd_open(proc.pid)
        self._selector.register(pidfd, selectors.EVENT_READ, proc.pid)
        worker = Worker(spec=spec, proc=proc, pidfd=pidfd, started_at=self._clock())
        worker.output_done = [self._pump.add(fd, route) for fd, route in tee_reads]
        return worker

    # -- watch ---------------------------------------------------------------------------
    @property
    def running(self) -> list[Worker]:
        return [w for w in self.workers if w.exitcode is None]

    def _unreaped(self) -> set[int]:
        return {w.pid for w in self.running}

    def pids(self) -> set[int]:
        """The running workers' pids (the ones torch's file timer may speak for)."""
        return self._unreaped()

    def wait(self, timeout_s: float | None) -> bool:
        """Blocks until a worker exits, a wakeup fd is readable or the timeout passes.

        Returns True if something happened. Exited workers are reaped (and reported
        through `on_exit`) before this returns.
        """
        events = self._selector.select(timeout_s)
        reaped = False
        for key, _ in events:
            if key.data is not None:
                reaped |= self._reap_pid(int(key.data))
        return bool(events) or reaped

    def _reap_pid(self, pid: int) -> bool:
        for worker in self.workers:
            if worker.pid == pid and worker.exitcode is None:
                code = worker.proc.poll()
                if code is None:
                    return False
                self._finish(worker, code)
                return True
        return False

    def _finish(self, worker: Worker, code: int) -> None:
        worker.exitcode = code
        worker.exited_at = self._clock()
        self._selector.unregister(worker.pidfd)
        os.close(worker.pidfd)
        # The worker led its process group: take whatever it left behind with it.
        _killpg(worker.pid, signal.SIGKILL)
        self._guardian.forget(worker.pid)
        self._on_exit(worker)

    # -- stop ----------------------------------------------------------------------------
    def signal_all(self, sig: int) -> None:
        for worker in self.running:
            _killpg(worker.pid, sig)
        if self._scope is not None:
            self._scope.signal(sig)

    def stop(self, sig: int = signal.SIGTERM, *, grace_s: float) -> None:
        """Sends `sig` to every process of the group (workers and whatever they started),
        SIGKILLs what is alive after `grace_s`, and ends the group's scope. Also the sweep
        after a group whose workers all exited: their detached descendants go the same way."""
        scope = self._scope
        for worker in self.running:
            worker.stopped_by_agent = True
        workers = {w.pid for w in self.workers}
        strays = [p for p in scope.pids() if _pgid(p) not in workers] if scope is not None else []
        self.signal_all(sig)
        deadline = time.monotonic() + grace_s
        self._wait_all(deadline)
        if scope is not None:
            scope.wait_empty(max(0.0, deadline - time.monotonic()))
        killed: list[int] = []
        if self.running or (scope is not None and scope.pids()):
            for worker in self.running:
                _killpg(worker.pid, signal.SIGKILL)
            killed = scope.kill() if scope is not None else []
            self._wait_all(time.monotonic() + _KILL_WAIT_S)
            if scope is not None:
                scope.wait_empty(max(0.0, _KILL_WAIT_S))
        for worker in self.running:
            log.error(
                "worker pid %d (local_rank %d) did not exit after SIGKILL; it is probably "
                "stuck in the kernel (D state) and the host may need attention",
                worker.pid,
                worker.local_rank,
            )
        if strays:
            self._events.emit(
                ev.GROUP_DESCENDANTS_STOPPED,
                pids=strays,
                signal=signal.Signals(sig).name,
                killed=sorted(set(killed) - workers),
                mechanism=self._containment.mechanism,
            )
            log.warning(
                "stopped %d process(es) the workers started outside their process groups: %s",
                len(strays),
                ", ".join(map(str, strays)),
            )
        if scope is not None:
            scope.remove()
            self._scope = None

    def close(self) -> None:
        """The agent is done with workers: removes the containment (the launcher's cgroup)."""
        self._containment.close()

    def _wait_all(self, deadline: float) -> None:
        while self.running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            for key, _ in self._selector.select(remaining):
                if key.data is not None:
                    self._reap_pid(int(key.data))

    def wait_output(self, timeout_s: float = 2.0) -> None:
        """Waits until tee'd output of exited workers has reached the console."""
        deadline = time.monotonic() + timeout_s
        for worker in self.workers:
            for done in worker.output_done:
                done.wait(max(0.0, deadline - time.monotonic()))


def dump_target(worker: Worker) -> DumpTarget:
    """What the hang path needs of a worker: who it is and where its stderr goes."""
    route = worker.spec.stderr
    return DumpTarget(
        rank=worker.global_rank,
        local_rank=worker.local_rank,
        pid=worker.pid,
        stderr_log=route.path if route.mode in (FILE, TEE) else None,
    )


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return
