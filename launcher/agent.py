"""The per-node agent: rendezvous, start workers, watch them, restart or finish.

    next_round -> start workers -> wait for an event:
        all exited 0        -> SUCCEEDED, exit 0
        a worker failed     -> stop all, restart while the budget lasts, else FAILED
        nodes waiting       -> stop all, re-rendezvous (not charged to the budget)
        signal to the agent -> forward it, stop all with grace, exit 128+N

The agent is the only module that uses both rendezvous and workers.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher import announce
from launcher import events as ev
from launcher.config import LaunchConfig
from launcher.errors import LauncherError
from launcher.failures.report import (
    WorkerFailure,
    brief,
    failure_fields,
    only_symptoms,
    root_cause,
)
from launcher.inbox import SignalInbox
from launcher.rendezvous import Rendezvous, RoundInfo, create_rendezvous
from launcher.rendezvous.driver import Interrupted
from launcher.rendezvous.health import drop_events
from launcher.tcpstore.server import StoreServer
from launcher.workers.containment import guarded
from launcher.workers.logs import RunLogs

if TYPE_CHECKING:
    from launcher.node_workers import NodeWorkers
    from launcher.progress.incident import HangReport
    from launcher.progress.watch import Incident

log = logging.getLogger(__name__)

SUCCEEDED, FAILED, SIGNALED, MEMBERSHIP = "succeeded", "failed", "signaled", "membership"
HUNG = "hung"  # a monitor state: launcher.progress found a hang
# How long a symptom-only failure (gloo's "Connection closed by peer") waits for its cause: a
# worker can take a second to exit after its peers' collective broke (else: wrong blame).
SYMPTOM_GRACE_S = 2.0
SPARE_DONE = "spare_done"


@dataclass(frozen=True, kw_only=True)
class AgentResult:
    """How the agent ended."""

    outcome: str
    exit_code: int
    restarts: int
    failures: tuple[WorkerFailure, ...] = ()


class Agent:
    def __init__(
        self,
        config: LaunchConfig,
        *,
        inbox: SignalInbox,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.inbox = inbox
        # torchrun names the FQDN; with --local-addr (several agents on one machine, or a
        # chosen interface) that address tells the nodes apart in the summary.
        self.host = config.local_addr or socket.getfqdn()
        self.node_id = self.host
        self._agent_env = dict(os.environ if environ is None else environ)
        self.logs = RunLogs(config)  # first: a log dir that cannot be made starts nothing
        # Fork before any thread exists (the stores, the heartbeats and the output pump start
        # threads): the cgroup probe and the guardian.
        self.containment, self.guardian = guarded(config.containment)
        paths = [config.event_log] if config.event_log else []
        if self.logs.run_dir is not None:
            paths.append(self.logs.run_dir / "events.jsonl")
        if config.event_log_console:  # --event-log-handler console
            paths.append(Path("/dev/stderr"))
        self.events = ev.EventLog(run_id=config.run_id, node_id=self.node_id, paths=paths)
        self._wakeups = [inbox.read_fd]
        self._side: NodeWorkers | None = None
        self._incident: Incident | None = None
        self._changed: str | None = None  # the rendezvous's reason to re-form
        self.restart_count = 0
        self._round: RoundInfo | None = None
        self._rendezvous: Rendezvous | None = None

    # -- public ----------------------------------------------------------------------------
    def run(self) -> AgentResult:
        cfg = self.config
        self.events.emit(
            ev.AGENT_STARTED,
            nproc_per_node=cfg.nproc_per_node,
            min_nodes=cfg.min_nodes,
            max_nodes=cfg.max_nodes,
            max_restarts=cfg.max_restarts,
            rdzv_backend=cfg.rdzv_backend,
            rdzv_endpoint=cfg.rdzv_endpoint,
            entrypoint=cfg.entrypoint.name,
            run_dir=str(self.logs.run_dir) if self.logs.run_dir else None,
            containment=self.containment.mechanism,
            containment_reason=self.containment.reason,
        )
        try:
            result = self._loop()
        except LauncherError as err:
            self._close(outcome="error", exit_code=err.exit_code, reason=str(err))
            raise
        except BaseException:
            self._close()
            raise
        self._close(
            outcome=result.outcome,
            exit_code=result.exit_code,
            restarts=result.restarts,
            root_cause=failure_fields(root_cause(result.failures)) if result.failures else None,
        )
        return result

    # -- the loop --------------------------------------------------------------------------
    def _loop(self) -> AgentResult:
        drops = drop_events(self.events, store="workers")
        self._rendezvous = rdzv = create_rendezvous(
            self.config,
            node_id=self.node_id,
            interrupt_fd=self.inbox.read_fd,
            # The workers' bootstrap store (see StoreServer's docstring).
            serve_store=partial(StoreServer, label="the workers' store", on_drop=drops),
            events=self.events,
        )
        wake = rdzv.wakeup_fd()
        if wake is not None:
            self._wakeups.append(wake)
        failures: tuple[WorkerFailure, ...] = ()
        while True:
            if self.inbox.drain():
                return self._signaled(self.inbox.received[0])
            try:
                rnd = rdzv.next_round()
            except Interrupted:
                self.inbox.drain()
                return self._signaled(self.inbox.received[0])
            if rnd is None:
                log.warning("the job ended while this node waited as a spare; exiting")
                return AgentResult(outcome=SPARE_DONE, exit_code=0, restarts=self.restart_count)
            self._round = rnd
            announce.round_complete(self.events, rnd)
            if rnd.budget_spent:
                rdzv.finish(succeeded=False)
                return self._failed(failures, remote_detail=rnd.detail)
            self.restart_count = rnd.restart_count
            if rnd.reason != "initial":
                announce.restart(self.events, rnd, max_restarts=self.config.max_restarts)
            failures = ()
            side = self._workers()
            side.start(rnd, self._rendezvous)
            state = self._monitor(side)
            if state == SUCCEEDED:
                self.events.emit(ev.GROUP_SUCCEEDED, restart_count=self.restart_count)
                rdzv.finish()
                return AgentResult(outcome=SUCCEEDED, exit_code=0, restarts=self.restart_count)
            if state == SIGNALED:
                return self._signaled(self.inbox.received[0])
            hang = self._evidence(side, state, rnd)
            side.group.stop(signal.SIGTERM, grace_s=self.config.restart_grace_s)
            if hang is not None and hang.incident.source != "peer":  # blamed here
                codes = {w.global_rank: w.exitcode or 0 for w in side.group.workers}
                failures = hang.failures(codes)
                blamed = {f.global_rank for f in failures}  # each worker once, as the culprit
                failures += tuple(f for f in side.failures if f.global_rank not in blamed)
                announce.group_failed(self.events, self.restart_count, failures)
            elif state == FAILED:
                failures = tuple(side.failures)
                announce.group_failed(self.events, self.restart_count, failures)
                rdzv.report_failure(f"{brief(root_cause(failures))} on {self.node_id}")

    def _evidence(self, side: NodeWorkers, state: str, rnd: RoundInfo) -> HangReport | None:
        """Every running rank's stack before anything is stopped, when a hang may be why
        (imported here: dumps are rare, and every agent's start pays for its imports)."""
        from launcher.progress.evidence import gather
        from launcher.workers.group import dump_target

        return gather(
            detected=self._incident if state == HUNG else None,
            moved_for=self._changed if state == MEMBERSHIP else None,
            failed=side.failures if state == FAILED else (),
            peers=self._rendezvous,
            targets=[dump_target(w) for w in side.group.running],
            snapshots=side.watch.snapshots(),
            run_dir=self.logs.run_dir,
            round_no=rnd.round,
            name=f"{rnd.round}-{self.restart_count}",
            method=self.config.hang_dump,
            events=self.events,
            node=self.node_id,
            fr_pipe_prefix=self._agent_env.get("TORCH_NCCL_DEBUG_INFO_PIPE_FILE"),
        )

    def _monitor(self, side: NodeWorkers) -> str:
        cfg = self.config
        next_check = time.monotonic() + cfg.monitor_interval_s
        next_poll = time.monotonic() + side.watch.interval_s
        self._incident = None
        self._changed = None
        grace_end = float("inf")
        while True:
            if self.inbox.drain():
                return SIGNALED
            if side.failures:
                # Failures that only say a peer went away wait (bounded) for their cause: a
                # local worker's own exit, or another node's report (the round moves).
                grace_end = min(grace_end, time.monotonic() + SYMPTOM_GRACE_S)
                if not only_symptoms(side.failures) or time.monotonic() >= grace_end:
                    return FAILED
            elif not side.group.running:
                return SUCCEEDED
            timeout = max(0.0, min(next_check, next_poll, grace_end) - time.monotonic())
            woke = side.group.wait(timeout)
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + side.watch.interval_s
                self._incident = side.watch.poll(now)
                if self._incident is not None:
                    return HUNG
            # Woken (the rendezvous's pipe: the round moved), look now: check() itself
            # reads the store only when due or told to.
            if now >= next_check or woke:
                next_check = now + cfg.monitor_interval_s
                reason = self._rendezvous.check() if self._rendezvous is not None else None
                if reason is not None:
                    self._changed = reason
                    self.events.emit(ev.RDZV_CHANGED, reason=reason)
                    return MEMBERSHIP

    def _workers(self) -> NodeWorkers:
        """The worker side, built at the first round (see launcher/node_workers.py: why not at
        the start)."""
        if self._side is None:
            from launcher.node_workers import NodeWorkers

            self._side = NodeWorkers(
                self.config,
                logs=self.logs,
                containment=self.containment,
                guardian=self.guardian,
                events=self.events,
                node=self.node_id,
                host=self.host,
                agent_env=self._agent_env,
                wakeups=self._wakeups,
            )
        return self._side

    # -- endings ---------------------------------------------------------------------------
    def _failed(self, failures: tuple[WorkerFailure, ...], *, remote_detail: str) -> AgentResult:
        if self._side is not None:
            self._side.group.wait_output()
        code = announce.job_failed(
            failures,
            entrypoint=self.config.entrypoint.name,
            max_restarts=self.config.max_restarts,
            remote_detail=remote_detail,
            parent_error_file=self._agent_env.get("TORCHELASTIC_ERROR_FILE"),
        )
        return AgentResult(
            outcome=FAILED, exit_code=code, restarts=self.restart_count, failures=failures
        )

    def _signaled(self, signum: int) -> AgentResult:
        name = signal.Signals(signum).name
        self.events.emit(ev.AGENT_SIGNAL, signal=name)
        if self._rendezvous is not None:
            self._rendezvous.leave()
        log.warning(
            "received %s: stopping workers (grace %.0fs)", name, self.config.shutdown_timeout_s
        )
        if self._side is not None:
            self._side.group.stop(signum, grace_s=self.config.shutdown_timeout_s)
        self.events.emit(ev.GROUP_STOPPED, reason=f"signal {name}")
        return AgentResult(outcome=SIGNALED, exit_code=128 + signum, restarts=self.restart_count)

    def _close(self, **exit_fields: Any) -> None:
        """Stops everything; with `exit_fields`, logs `agent.exit` and closes the event log
        and the guardian (an unexpected exception leaves them to the interpreter's exit)."""
        # Also after success: what the workers started and left running is stopped.
        if self._side is not None:
            self._side.close(grace_s=self.config.shutdown_timeout_s)
        if self._rendezvous is not None:
            self._rendezvous.shutdown()
        if exit_fields:
            self.events.emit(ev.AGENT_EXIT, **exit_fields)
            self.events.close()
            self.guardian.close()
