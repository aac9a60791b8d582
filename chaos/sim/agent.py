"""A virtual agent: launcher/agent.py's loop and dynamic.py's two threads, on a virtual
clock, running the launcher's own protocol generators (launcher.rendezvous.state).

    main thread:  join -> running: every monitor interval check the round
                  -> a change (or our worker failed) -> stop workers -> re-join
                  (join says Excluded: declared dead meanwhile -> a new id, re-join)
    beat thread:  every keep-alive interval `heartbeat` (beat, am I dead?, watch my
                  successor); what it learns reaches the main thread at its next check

Both threads are generators that yield the protocol's ops and `Sleep`s; the engine runs
each as a task. A store op with no reply (lost, partitioned past the read timeout) is
thrown into the thread as StoreFailure, where the real Driver raises
RendezvousConnectionError: the main thread then exits (so does the real agent: the node
is lost to the job), the beat thread counts it and gives up after three in a row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from launcher.rendezvous.state import (
    FAILED,
    Assignment,
    Excluded,
    JobOver,
    NodeInfo,
    Op,
    Params,
    RendezvousTimeout,
    Sleep,
    WatchState,
    check_round,
    declared_dead,
    finish,
    heartbeat,
    join,
    leave,
    report_failure,
)

if TYPE_CHECKING:
    from chaos.sim.engine import Simulation

Program = Generator[Op, Any, None]

# Agent states, as the checker and the liveness check see them.
WAITING, JOINING, RUNNING, STOPPING, GONE = "waiting", "joining", "running", "stopping", "gone"
# dynamic.py: heartbeat failures in a row after which the agent gives up on the store.
MAX_STORE_FAILURES = 3
# dynamic.py's EXIT_BARRIER_TIMEOUT_S: how long a finishing member waits for the job's end.
EXIT_BARRIER_TIMEOUT_S = 300.0


class StoreFailure(Exception):
    """A store op got no reply within the read timeout (RendezvousConnectionError)."""


class Interrupted(Exception):
    """SIGTERM reached the agent while it slept (launcher.rendezvous.driver.Interrupted)."""


class Task:
    """One thread of one agent: its generator and the bookkeeping of its one pending op."""

    __slots__ = ("agent", "gen", "interrupt", "name", "rtt", "sent_at", "sleeping", "token")

    def __init__(self, agent: VirtualAgent, name: str, gen: Program) -> None:
        self.agent, self.name, self.gen = agent, name, gen
        self.token = 0  # bumped to cancel whatever is scheduled for this task
        self.sleeping = False
        self.interrupt = False  # throw Interrupted at the next Sleep
        self.sent_at = 0.0
        self.rtt = 0.0


class VirtualAgent:
    def __init__(self, sim: Simulation, index: int, addr: str, nproc: int) -> None:
        self.sim, self.index, self.addr, self.nproc = sim, index, addr, nproc
        self.incarnation = 0
        self.node_id = self._new_id()
        self.state = WAITING
        self.exit_reason = ""
        self.assignment: Assignment | None = None
        self.watch: WatchState | None = None
        self.news: str | None = None
        self.worker_failed = False
        self.sigterm = False
        self.paused_until = 0.0
        self.cut_until = 0.0  # partitioned from the store until then
        self.info: NodeInfo | None = None
        self.main = Task(self, "main", self._main())
        self.beats = Task(self, "beat", self._beats())
        self.beating = False

    def _new_id(self) -> str:
        # dynamic.py: "<addr>-<pid>-<random>"; here the index and incarnation say it all.
        self.incarnation += 1
        return f"n{self.index}-{self.incarnation}"

    @property
    def alive(self) -> bool:
        """Not gone: crashed, exited or left (one that has not started yet will come)."""
        return self.state != GONE

    def exit(self, reason: str) -> None:
        """The agent process ends: both threads stop (the engine drops their events)."""
        self.state, self.exit_reason = GONE, reason
        for task in (self.main, self.beats):
            task.token += 1
        self.sim.on_exit(self, reason)

    # -- the main thread (agent._loop + dynamic.next_round/check) -----------------------------
    def _main(self) -> Program:
        sim, p = self.sim, self.sim.params
        try:
            while True:
                self.state = JOINING
                if self.assignment is not None and (yield from declared_dead(p, self.node_id)):
                    # dynamic.next_round: peers gave this incarnation up (a long pause).
                    self.sim.on_declared_dead(self)
                    self.node_id = self._new_id()
                    self.assignment = None
                prev = self.assignment
                self.info = info = NodeInfo(
                    node_id=self.node_id,
                    addr=self.addr,
                    master_port=sim.next_port(),
                    nproc=self.nproc,
                    prev_round=prev.round if prev else -1,
                    prev_group_rank=prev.group_rank if prev else -1,
                )
                try:
                    result = yield from join(p, info, now=sim.now)
                except RendezvousTimeout:
                    self.exit("rendezvous_timeout")
                    return
                if isinstance(result, JobOver):
                    self.exit("spare_done")
                    return
                if isinstance(result, Excluded):
                    # dynamic.next_round: declared dead while the round formed, the closer
                    # left this identity out; join again as a new one.
                    self.sim.on_declared_dead(self)
                    self.node_id = self._new_id()
                    self.assignment = None
                    continue
                self.assignment = result
                self.watch = WatchState(
                    round=result.round,
                    group_world_size=result.group_world_size,
                    watched=result.watch,
                    last_change=sim.now,
                )
                self.news = None
                self.state = RUNNING
                sim.on_assignment(self, info, result)
                sim.start_beats(self)  # dynamic.py starts its heartbeat thread here, once
                if result.status == FAILED:
                    self.beats.token += 1  # finish() stops the heartbeat thread first
                    yield from finish(
                        p,
                        result,
                        hosting=False,
                        timeout_s=EXIT_BARRIER_TIMEOUT_S,
                        now=sim.now,
                        succeeded=False,
                    )
                    self.exit("budget_spent")
                    return
                failed = yield from self._monitor(p)
                self.state = STOPPING
                yield Sleep(sim.cfg.worker_stop_s)
                if failed and self.assignment is not None:
                    detail = f"rank {self.assignment.base_rank} exit code 1 on {self.node_id}"
                    yield from report_failure(p, self.assignment, by=self.node_id, detail=detail)
        except Interrupted:
            self.main.interrupt = False
            with contextlib.suppress(StoreFailure):  # dynamic.leave logs it and exits anyway
                yield from leave(p, self.assignment, me=self.node_id)
            self.exit("left")
        except StoreFailure:
            self.exit("store_error")

    def _monitor(self, p: Params) -> Generator[Op, Any, bool]:
        """agent._monitor: True if a local worker failed, False on a membership change."""
        while True:
            yield Sleep(self.sim.cfg.monitor_interval_s)
            if self.worker_failed:
                self.worker_failed = False
                return True
            news = self.news
            if news == "store_unreachable":
                raise StoreFailure("lost the rendezvous store (heartbeats failing)")
            if news == "declared_dead":
                # Peers gave up on this incarnation (a long pause): come back as a new one.
                self.sim.on_declared_dead(self)
                self.node_id = self._new_id()
                self.assignment = None
                return False
            if self.assignment is None:
                continue
            reason = yield from check_round(p, self.assignment.round)
            if reason is not None:
                return False

    # -- the heartbeat thread (dynamic._heartbeats) ------------------------------------------
    def _beats(self) -> Program:
        sim, p = self.sim, self.sim.params
        failures = 0
        while True:
            yield Sleep(p.keep_alive_interval_s)
            watch, me = self.watch, self.node_id
            try:
                news = yield from heartbeat(p, me, watch, now=sim.now)
                failures = 0
            except StoreFailure:
                failures += 1
                news = "store_unreachable" if failures >= MAX_STORE_FAILURES else None
            if news == "declared_dead" and me != self.node_id:
                news = None  # the main thread already left that identity behind
            if news is not None:
                self.news = news
