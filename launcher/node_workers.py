"""This node's worker side: the group, its output pump and progress watch, and the failures
of the running attempt. Part of the agent, the one layer that uses both rendezvous and
workers.

The agent builds it when its first round completes, not at its start: these modules are a
fifth of an agent's start-up CPU, and where many agents start on one machine the first round
waits for the last of them to join.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from launcher import announce
from launcher import events as ev
from launcher.config import LaunchConfig
from launcher.failures.report import WorkerFailure, observe_failure
from launcher.progress.watch import ProgressWatch
from launcher.rendezvous import Rendezvous, RoundInfo
from launcher.workers.containment import Containment
from launcher.workers.env import (
    RoundContext,
    WorkerRanks,
    base_environment,
    worker_argv,
    worker_environment,
)
from launcher.workers.group import Worker, WorkerGroup, WorkerSpec
from launcher.workers.guardian import Guardian
from launcher.workers.logs import AttemptLogs, RunLogs, route_stream
from launcher.workers.pump import OutputPump


class NodeWorkers:
    def __init__(
        self,
        config: LaunchConfig,
        *,
        logs: RunLogs,
        containment: Containment,
        guardian: Guardian,
        events: ev.EventSink,
        node: str,
        host: str,
        agent_env: Mapping[str, str],
        wakeups: Sequence[int],
    ) -> None:
        self.config = config
        self.logs = logs
        self.events = events
        self.host = host
        self._agent_env = agent_env
        self.pump = OutputPump()
        self.group = WorkerGroup(
            guardian=guardian,
            containment=containment,
            pump=self.pump,
            on_exit=self._on_exit,
            events=events,
        )
        for fd in wakeups:
            self.group.register_wakeup(fd)
        self.watch = ProgressWatch.configured(
            config,
            run_dir=logs.run_dir,
            agent_env=agent_env,
            events=events,
            node=node,
            allowed_pids=self.group.pids,
        )
        self.failures: list[WorkerFailure] = []  # this attempt's, in the order seen
        self._round: RoundInfo | None = None

    def start(self, rnd: RoundInfo, rendezvous: Rendezvous | None) -> None:
        cfg = self.config
        self._round = rnd
        self.failures = []
        attempt = self.logs.new_attempt(rnd.restart_count)
        base = base_environment(self._agent_env, nproc_per_node=cfg.nproc_per_node)
        ctx = RoundContext(
            role=cfg.role,
            run_id=cfg.run_id,
            master_addr=rnd.master_addr,
            master_port=rnd.master_port,
            restart_count=rnd.restart_count,
            max_restarts=cfg.max_restarts,
            use_agent_store=rnd.use_agent_store,
            signals_to_handle=cfg.signals_to_handle_text,
            virtual_local_rank=cfg.virtual_local_rank,
        )
        specs = [self._spec(rnd, ctx, base, attempt, lr) for lr in range(cfg.nproc_per_node)]
        self.watch.clear_files()
        self.group.start(specs)
        self.watch.begin(self.group.workers, time.monotonic(), rnd, rendezvous)
        announce.workers_started(self.events, rnd, self.group.workers, attempt.dir)

    def close(self, grace_s: float) -> None:
        """Stops what runs (also after success: what the workers started and left running)."""
        self.group.stop(grace_s=grace_s)
        self.group.close()
        self.watch.close()
        self.group.wait_output()
        self.pump.stop()

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
        restarts = self._round.restart_count if self._round is not None else 0
        announce.worker_exited(self.events, worker, self._round, restarts)
        if code != 0:
            self.failures.append(
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
