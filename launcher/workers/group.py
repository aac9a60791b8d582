"""Starting, watching and stopping the local workers of one attempt.

Exits are noticed as they happen: each worker has a pidfd in a selector, so the agent
wakes the moment a worker dies instead of at the next poll. Every worker leads its own
process group (like torchrun), so a stop reaches the worker's children too; when a worker
is reaped, whatever is left of its group is killed, so nothing it started outlives it.
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

from launcher.errors import WorkerStartError
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


class WorkerGroup:
    def __init__(
        self,
        *,
        guardian: Guardian,
        pump: OutputPump,
        on_exit: Callable[[Worker], None],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._guardian = guardian
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

        try:
            stdout, stderr = target(spec.stdout), target(spec.stderr)
            proc = subprocess.Popen(
                spec.argv, env=spec.env, stdout=stdout, stderr=stderr, start_new_session=True
            )
        except OSError as err:
            for fd, _ in tee_reads:
                os.close(fd)
            raise WorkerStartError(
                err.strerror or str(err), local_rank=spec.ranks.local_rank, command=spec.argv[0]
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

    def stop(self, sig: int = signal.SIGTERM, *, grace_s: float) -> None:
        """Sends `sig` to every running worker, SIGKILLs those alive after `grace_s`."""
        live = self.running
        for worker in live:
            worker.stopped_by_agent = True
        self.signal_all(sig)
        self._wait_all(time.monotonic() + grace_s)
        if self.running:
            self.signal_all(signal.SIGKILL)
            self._wait_all(time.monotonic() + _KILL_WAIT_S)
        for worker in self.running:
            log.error(
                "worker pid %d (local_rank %d) did not exit after SIGKILL; it is probably "
                "stuck in the kernel (D state) and the host may need attention",
                worker.pid,
                worker.local_rank,
            )

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


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return
