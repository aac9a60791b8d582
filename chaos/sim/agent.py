"""A virtual agent: launcher/agent.py's loop and dynamic.py's two threads, on a virtual
clock, running the launcher's own protocol generators (launcher.rendezvous.state).

    main thread:  join -> running: every monitor interval check the round
                  -> a change (or our worker failed) -> stop workers -> re-join
                  (join says Excluded: declared dead meanwhile -> a new id, re-join)
    beat thread:  every keep-alive interval a `beat`, and a `look` (am I dead? is my
                  successor?) at the phases `phases` gives; what it learns reaches the
                  main thread at its next check

Both threads are generators that yield the protocol's ops and `Sleep`s; the engine runs
each as a task. A store op with no reply (lost, partitioned past the read timeout) is
thrown into the thread as StoreFailure, where the real Driver raises
RendezvousConnectionError. As in dynamic.py, the failed step is re-run from its start after
a backoff (a join that had sent a write first retires this id: `retire`, a new id), a
failed check waits for a later monitor tick, and both threads share one `Outage`: once the
store has been unreachable for store_outage_timeout_s the agent exits ("store_error").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from launcher.rendezvous.state import (
    FAILED,
    Assignment,
    Excluded,
    JobOver,
    Keys,
    NodeInfo,
    Op,
    Outage,
    Params,
    RendezvousTimeout,
    Sleep,
    WatchState,
    beat,
    check_interval_s,
    check_round,
    conclude,
    declared_dead,
    goodbye,
    join,
    leave,
    look,
    next_at,
    report_failure,
    retire,
)
from launcher.rendezvous.state.signing import Seal, signed

if TYPE_CHECKING:
    from chaos.sim.engine import Simulation

Program = Generator[Op, Any, None]
SIM_SECRET = b"the simulated job's secret"
T = TypeVar("T")

# Agent states, as the checker and the liveness check see them.
WAITING, JOINING, RUNNING, STOPPING, GONE = "waiting", "joining", "running", "stopping", "gone"
# dynamic.py's EXIT_BARRIER_TIMEOUT_S: how long a finishing member waits for the job's end.
EXIT_BARRIER_TIMEOUT_S = 300.0


class StoreFailure(Exception):
    """A store op got no reply within the read timeout (RendezvousConnectionError)."""


class Interrupted(Exception):
    """SIGTERM reached the agent while it slept (launcher.rendezvous.driver.Interrupted)."""


class GaveUp(Exception):
    """The store stayed unreachable for the whole window (dynamic.py's give-up error)."""


class Task:
    """One thread of one agent: its generator and the bookkeeping of its one pending op."""

    __slots__ = (
        "agent",
        "awaiting",
        "gen",
        "interrupt",
        "name",
        "rtt",
        "seen_rev",
        "sent_at",
        "sleeping",
        "token",
        "until",
        "wrote",
    )

    def __init__(self, agent: VirtualAgent, name: str, gen: Program) -> None:
        self.agent, self.name, self.gen = agent, name, gen
        self.token = 0  # bumped to cancel whatever is scheduled for this task
        self.sleeping = False
        self.until: str | None = None  # the key its sleep watches (Sleep.until), if any
        self.interrupt = False  # throw Interrupted at the next Sleep
        self.sent_at = 0.0
        self.rtt = 0.0
        self.seen_rev = 0  # the store's revision when its last request was applied
        self.wrote = False  # sent a write since the current step began (the Driver's `wrote`)
        self.awaiting = False  # an op of this task is out, its reply not yet back


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
        self.outage = Outage(window_s=sim.cfg.store_outage_timeout_s)  # both threads share it
        self.retry_at = 0.0  # a failed check waits until then
        self.next_check = 0.0  # a big job's members check less often (check_interval_s)
        self.reached = False  # any op answered: a store never reached is no outage to ride out
        self.info: NodeInfo | None = None
        # One seal per agent process, shared by its threads and kept across its identities
        # (as dynamic.py's); what it rejects is counted for the run's result.
        self.seal = (
            Seal(SIM_SECRET, sim.params.run_id, on_reject=sim.on_rejected)
            if sim.cfg.secret
            else None
        )
        self.main = Task(self, "main", self._sealed(self._main()))
        self.beats = Task(self, "beat", self._sealed(self._beats()))
        self.beating = False

    def _sealed(self, program: Program) -> Program:
        return program if self.seal is None else signed(program, self.seal)

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
                if self.assignment is not None and (
                    yield from self._retrying(partial(declared_dead, p, self.node_id))
                ):
                    # dynamic.next_round: peers gave this incarnation up (a long pause).
                    self.sim.on_declared_dead(self)
                    self.node_id = self._new_id()
                    self.assignment = None
                result = yield from self._join(p)
                if result is None:
                    return
                self.assignment = result
                self.watch = WatchState.of(result, now=sim.now)
                self.next_check = 0.0
                self.news = None
                self.state = RUNNING
                assert self.info is not None
                sim.on_assignment(self, self.info, result)
                sim.start_beats(self)  # dynamic.py starts its heartbeat thread here, once
                if result.status == FAILED:
                    self.beats.token += 1  # finish() stops the heartbeat thread first
                    with contextlib.suppress(GaveUp, StoreFailure):  # logged, as dynamic does
                        until = sim.now + EXIT_BARRIER_TIMEOUT_S
                        yield from self._retrying(
                            partial(conclude, p, result, until=until, succeeded=False)
                        )
                        yield from goodbye(
                            p, result, hosting=False, timeout_s=EXIT_BARRIER_TIMEOUT_S
                        )
                    self.exit("budget_spent")
                    return
                failed = yield from self._monitor(p)
                self.state = STOPPING
                yield Sleep(sim.cfg.worker_stop_s)
                if failed and (a := self.assignment) is not None:
                    detail = f"rank {a.base_rank} exit code 1 on {self.node_id}"
                    yield from self._retrying(
                        partial(report_failure, p, a, by=self.node_id, detail=detail)
                    )
        except Interrupted:
            self.main.interrupt = False
            with contextlib.suppress(StoreFailure):  # dynamic.leave logs it and exits anyway
                yield from leave(p, self.assignment, me=self.node_id)
            self.exit("left")
        except (GaveUp, StoreFailure):
            self.exit("store_error")

    def _join(self, p: Params) -> Generator[Op, Any, Assignment | None]:
        """dynamic.next_round's loop: an assignment, or None once the agent has exited."""
        sim = self.sim
        started = sim.now
        while True:
            prev = self.assignment
            self.info = info = NodeInfo(
                node_id=self.node_id,
                addr=self.addr,
                master_port=sim.next_port(),
                nproc=self.nproc,
                prev_round=prev.round if prev else -1,
                prev_group_rank=prev.group_rank if prev else -1,
            )
            self.main.wrote = False
            try:
                result = yield from join(p, info, now=started)
            except RendezvousTimeout:
                self.exit("rendezvous_timeout")
                return None
            except StoreFailure as err:
                wrote = self.main.wrote
                yield from self._back_off(err)
                if wrote:
                    # dynamic._retire_identity: the failed join may hold a slot under this id.
                    old = self.node_id
                    if (yield from self._retrying(partial(retire, p, old))):
                        self.sim.on_declared_dead(self)
                        self.assignment = None
                    self.node_id = self._new_id()
                continue
            self._answered()
            if isinstance(result, JobOver):
                self.exit("spare_done")
                return None
            if isinstance(result, Excluded):
                # dynamic.next_round: declared dead while the round formed, the closer
                # left this identity out; join again as a new one.
                self.sim.on_declared_dead(self)
                self.node_id = self._new_id()
                self.assignment = None
                started = sim.now
                continue
            return result

    def _monitor(self, p: Params) -> Generator[Op, Any, bool]:
        """agent._monitor: True if a local worker failed, False on a membership change."""
        sim = self.sim
        while True:
            yield Sleep(sim.cfg.monitor_interval_s)
            if self.worker_failed:
                self.worker_failed = False
                return True
            news = self.news
            if news == "store_unreachable":
                raise GaveUp()
            if news == "declared_dead":
                # Peers gave up on this incarnation (a long pause): come back as a new one.
                self.sim.on_declared_dead(self)
                self.node_id = self._new_id()
                self.assignment = None
                return False
            # dynamic.check: the beat thread saw the round move (or moved it): look now
            if urgent := news in ("round_moved", "node_lost"):
                self.news = None
            if self.assignment is None or sim.now < self.retry_at:
                continue
            if sim.now < self.next_check and not urgent:
                continue
            every = check_interval_s(sim.cfg.monitor_interval_s, self.assignment.group_world_size)
            self.next_check = sim.now + every
            try:
                reason = yield from check_round(p, self.assignment.round)
            except StoreFailure as err:
                # dynamic.check: the workers run on; a later tick tries again.
                delay = self.outage.fail(sim.now, str(err))
                if delay is None:
                    raise GaveUp() from err
                self.retry_at = sim.now + delay
                continue
            self._answered()
            if reason is not None:
                return False

    def _retrying(self, make: Callable[[], Generator[Op, Any, T]]) -> Generator[Op, Any, T]:
        """dynamic._retrying: re-runs a step from its start while the store is out."""
        while True:
            try:
                result = yield from make()
            except StoreFailure as err:
                yield from self._back_off(err)
                continue
            self._answered()
            return result

    def _back_off(self, err: StoreFailure) -> Generator[Op, Any, None]:
        if not self.reached:
            raise GaveUp()  # dynamic._back_off: the first join fails as it did
        delay = self.outage.fail(self.sim.now, str(err))
        if delay is None:
            raise GaveUp()
        yield Sleep(delay)

    def _answered(self) -> None:
        self.outage.recover(self.sim.now)

    # -- the heartbeat thread (dynamic._heartbeats) ------------------------------------------
    def _beats(self) -> Program:
        """dynamic.py's thread (beats.py): a beat and a look each interval, each at its own
        phase of the shared clock (the virtual one)."""
        sim, p = self.sim, self.sim.params
        interval = p.keep_alive_interval_s
        round_key = Keys(p.run_id).round if sim.cfg.store_wakes else None
        watch: WatchState | None = None
        beat_at = look_at = sim.now
        at_beat, at_look = 0.0, 0.5
        until = round_key
        while True:
            if self.watch is not watch:  # a new round: its members' phases
                watch = self.watch
                at_beat, at_look = (watch.beat_phase, watch.look_phase) if watch else (0.0, 0.5)
                beat_at = next_at(sim.now, at_beat, interval)
                look_at = next_at(sim.now, at_look, interval)
            moved, _ = yield Sleep(max(0.0, min(beat_at, look_at) - sim.now), until=until)
            if moved is not None:  # the round key was written since this thread's last read
                self.news, until = "round_moved", None
                continue
            if self.watch is not watch:
                continue
            me, news, until = self.node_id, None, round_key
            try:
                if beat_at <= sim.now:
                    beat_at = next_at(sim.now, at_beat, interval)
                    yield from beat(p, me, watch, now=sim.now)
                else:
                    look_at = next_at(sim.now, at_look, interval)
                    news = yield from look(p, me, watch, now=sim.now)
            except StoreFailure as err:
                gone = self.outage.fail(sim.now, str(err)) is None
                news = "store_unreachable" if gone else None
            else:
                self._answered()
            if news == "declared_dead" and me != self.node_id:
                news = None  # the main thread already left that identity behind
            if news is not None:
                self.news = news
