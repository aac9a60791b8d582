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
    observe_failure,
    only_symptoms,
    root_cause,
)
from launcher.inbox import SignalInbox
from launcher.progress.watch import Incident, ProgressWatch
from launcher.rendezvous import Rendezvous, RoundInfo, create_rendezvous
from launcher.rendezvous.driver import Interrupted
from launcher.rendezvous.health import drop_events
from launcher.tcpstore.server import StoreServer
from launcher.workers.containment import guarded
from launcher.workers.env import (
    RoundContext,
    WorkerRanks,
    base_environment,
    worker_argv,
    worker_environment,
)
from launcher.workers.group import Worker, WorkerGroup, WorkerSpec, dump_target
from launcher.workers.logs import AttemptLogs, RunLogs, route_stream
from launcher.workers.pump import OutputPump

if TYPE_CHECKING:
    from launcher.progress.incident import HangReport

log = logging.getLogger(__name__)

SUCCEEDED, FAILED, SIGNALED, MEMBERSHIP = "succeeded", "failed", "signaled", "membership"
HUNG = "hung"  # a monitor state: launcher.progress found a hang
# How long a symptom-only failure (gloo's "Connection closed by peer") waits for its cause: a
# worker can take a second to exit after its peers' collective broke (else: wrong blame).
SYMPTOM_GRACE_S = 2.0
SPARE_DONE = "spare_done"


@dataclass(frozen=True, kw_only=True)
class AgentResult:
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
        # Fork before any thread exists (the pump and the store start threads): the cgroup
        # probe and the guardian.
        self.containment, self.guardian = guarded(config.containment)
        self.pump = OutputPump()
        paths = [config.event_log] if config.event_log else []
        if self.logs.run_dir is not None:
            paths.append(self.logs.run_dir / "events.jsonl")
        if config.event_log_console:  # --event-log-handler console
            paths.append(Path("/dev/stderr"))
        self.events = ev.EventLog(run_id=config.run_id, node_id=self.node_id, paths=paths)
        self.group = WorkerGroup(
            guardian=self.guardian,
            containment=self.containment,
            pump=self.pump,
            on_exit=self._on_exit,
            events=self.events,
        )
        self.group.register_wakeup(inbox.read_fd)
        self.watch = ProgressWatch.configured(
            config,
            run_dir=self.logs.run_dir,
            agent_env=self._agent_env,
            events=self.events,
            node=self.node_id,
            allowed_pids=self.group.pids,
        )
        self._incident: Incident | None = None
        self._changed: str | None = None  # the rendezvous's reason to re-form
        self.restart_count = 0
        self._attempt_failures: list[WorkerFailure] = []
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
            self.group.register_wakeup(wake)
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
            self._start_workers(rnd)
            state = self._monitor()
            if state == SUCCEEDED:
                self.events.emit(ev.GROUP_SUCCEEDED, restart_count=self.restart_count)
                rdzv.finish()
                return AgentResult(outcome=SUCCEEDED, exit_code=0, restarts=self.restart_count)
            if state == SIGNALED:
                return self._signaled(self.inbox.received[0])
            hang = self._evidence(state, rnd)
            self.group.stop(signal.SIGTERM, grace_s=self.config.restart_grace_s)
            if hang is not None and hang.incident.source != "peer":  # blamed here
                codes = {w.global_rank: w.exitcode or 0 for w in self.group.workers}
                failures = hang.failures(codes)
                blamed = {f.global_rank for f in failures}  # each worker once, as the culprit
                failures += tuple(f for f in self._attempt_failures if f.global_rank not in blamed)
                announce.group_failed(self.events, self.restart_count, failures)
            elif state == FAILED:
                failures = tuple(self._attempt_failures)
                announce.group_failed(self.events, self.restart_count, failures)
                rdzv.report_failure(f"{brief(root_cause(failures))} on {self.node_id}")

    def _evidence(self, state: str, rnd: RoundInfo) -> HangReport | None:
        """Every running rank's stack before anything is stopped, when a hang may be why
        (imported here: dumps are rare, and every agent's start pays for its imports)."""
        from launcher.progress.evidence import gather

        return gather(
            detected=self._incident if state == HUNG else None,
            moved_for=self._changed if state == MEMBERSHIP else None,
            failed=self._attempt_failures if state == FAILED else (),
            peers=self._rendezvous,
            targets=[dump_target(w) for w in self.group.running],
            snapshots=self.watch.snapshots(),
            run_dir=self.logs.run_dir,
            round_no=rnd.round,
            name=f"{rnd.round}-{self.restart_count}",
            method=self.config.hang_dump,
            events=self.events,
            node=self.node_id,
            fr_pipe_prefix=self._agent_env.get("TORCH_NCCL_DEBUG_INFO_PIPE_FILE"),
        )

    def _monitor(self) -> str:
        cfg = self.config
        next_check = time.monotonic() + cfg.monitor_interval_s
        next_poll = time.monotonic() + self.watch.interval_s
        self._incident = None
        self._changed = None
        grace_end = float("inf")
        while True:
            if self.inbox.drain():
                return SIGNALED
            if self._attempt_failures:
                # Failures that only say a peer went away wait (bounded) for their cause: a
                # local worker's own exit, or another node's report (the round moves).
                grace_end = min(grace_end, time.monotonic() + SYMPTOM_GRACE_S)
                if not only_symptoms(self._attempt_failures) or time.monotonic() >= grace_end:
                    return FAILED
            elif not self.group.running:
                return SUCCEEDED
            timeout = max(0.0, min(next_check, next_poll, grace_end) - time.monotonic())
            woke = self.group.wait(timeout)
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + self.watch.interval_s
                self._incident = self.watch.poll(now)
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

    def _start_workers(self, rnd: RoundInfo) -> None:
        cfg = self.config
        self._attempt_failures = []
        attempt = self.logs.new_attempt(self.restart_count)
        base = base_environment(self._agent_env, nproc_per_node=cfg.nproc_per_node)
        ctx = RoundContext(
            role=cfg.role,
            run_id=cfg.run_id,
            master_addr=rnd.master_addr,
            master_port=rnd.master_port,
            restart_count=self.restart_count,
            max_restarts=cfg.max_restarts,
            use_agent_store=rnd.use_agent_store,
            signals_to_handle=cfg.signals_to_handle_text,
            virtual_local_rank=cfg.virtual_local_rank,
        )
        specs = [self._spec(rnd, ctx, base, attempt, lr) for lr in range(cfg.nproc_per_node)]
        self.watch.clear_files()
        self.group.start(specs)
        self.watch.begin(self.group.workers, time.monotonic(), rnd, self._rendezvous)
        announce.workers_started(self.events, rnd, self.group.workers, attempt.dir)

    def _spec(
        self,
        rnd: RoundInfo,
        ctx: RoundContext,
        base: dict[str, str],
        attempt: AttemptLogs,
        local_rank: int,
    ) -> WorkerSpec:
        cfg = self.config
        ranks = WorkerRanks(
            local_rank=local_rank,
            global_rank=rnd.base_global_rank + local_rank,
            role_rank=rnd.base_role_rank + local_rank,
            local_world_size=cfg.nproc_per_node,
            world_size=rnd.world_size,
            role_world_size=rnd.role_world_size,
            group_rank=rnd.group_rank,
            group_world_size=rnd.group_world_size,
        )
        error_file = attempt.error_file(local_rank)
        routes = {
            stream: route_stream(
                cfg,
                attempt,
                local_rank=local_rank,
                global_rank=ranks.global_rank,
                stream=stream,
                agent_env=self._agent_env,
            )
            for stream in ("stdout", "stderr")
        }
        env = worker_environment(base, ranks=ranks, round_ctx=ctx, error_file=error_file)
        env.update(self.watch.worker_env(ranks.global_rank, base))
        return WorkerSpec(
            ranks=ranks,
            argv=worker_argv(cfg.entrypoint.argv, local_rank),
            env=env,
            stdout=routes["stdout"],
            stderr=routes["stderr"],
            error_file=error_file,
        )

    def _on_exit(self, worker: Worker) -> None:
        code = worker.exitcode if worker.exitcode is not None else -1
        announce.worker_exited(self.events, worker, self._round, self.restart_count)
        if code != 0:
            self._attempt_failures.append(
                observe_failure(
                    local_rank=worker.local_rank,
                    global_rank=worker.spec.ranks.global_rank,
                    pid=worker.pid,
                    exitcode=code,
                    error_file=worker.spec.error_file or None,
                    exited_at=worker.exited_at or time.time(),
                    host=self.host,
                    stopped_by_agent=worker.stopped_by_agent,
                )
            )

    # -- endings ---------------------------------------------------------------------------
    def _failed(self, failures: tuple[WorkerFailure, ...], *, remote_detail: str) -> AgentResult:
        self.group.wait_output()
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
        self.group.stop(signum, grace_s=self.config.shutdown_timeout_s)
        self.events.emit(ev.GROUP_STOPPED, reason=f"signal {name}")
        return AgentResult(outcome=SIGNALED, exit_code=128 + signum, restarts=self.restart_count)

    def _close(self, **exit_fields: Any) -> None:
        """Stops everything; with `exit_fields`, logs `agent.exit` and closes the event log
        and the guardian (an unexpected exception leaves them to the interpreter's exit)."""
        # Also after success: what the workers started and left running is stopped.
        self.group.stop(signal.SIGTERM, grace_s=self.config.shutdown_timeout_s)
        self.group.close()
        self.watch.close()
        self.group.wait_output()
        self.pump.stop()
        if self._rendezvous is not None:
            self._rendezvous.shutdown()
        if exit_fields:
            self.events.emit(ev.AGENT_EXIT, **exit_fields)
            self.events.close()
            self.guardian.close()
