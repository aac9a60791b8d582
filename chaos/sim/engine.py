"""The discrete-event loop: one heap of (time, seq, kind, task, token, payload) tuples, one
seeded random.Random for every choice (start times, latencies, losses, tie-breaks).

A store op is two events: it reaches the store after half its round trip (that is where
it takes effect, in arrival order, so ops of different agents interleave as they would on
a real store) and its reply reaches the agent after the other half plus its size over the
bandwidth. The same seed gives the same heap, hence the same run, event for event.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections.abc import Callable
from statistics import NormalDist
from typing import Any

from chaos.sim.agent import (
    GONE,
    JOINING,
    RUNNING,
    WAITING,
    Interrupted,
    StoreFailure,
    Task,
    VirtualAgent,
)
from chaos.sim.checks import Checker, liveness_bound_s
from chaos.sim.config import SimConfig
from chaos.sim.faults import Fault, quiet_at, resolve
from chaos.sim.forger import FORGE_EVERY_S, forge
from chaos.sim.store import SimStore
from launcher.rendezvous.state import Keys, MultiSet, NodeInfo, Op, Sleep, is_write, round_of

STEP, ARRIVE, CALL = 0, 1, 2
_START = object()  # the payload that primes a task's generator
_ORPHAN = -1  # the token of a request whose client already gave up: no reply goes back
# Round trips are drawn from a table of this many lognormal quantiles: one random() each.
_QUANTILES = 4096
# After SIGCONT the two threads of an agent race; up to 1 ms decides who goes first.
_RESUME_JITTER_S = 0.001


class Simulation:
    def __init__(self, cfg: SimConfig) -> None:
        cfg.validate()
        self.wall_started = time.perf_counter()
        self.cfg = cfg
        self.params = cfg.params()
        self.rng = random.Random(cfg.seed)
        self.now = 0.0
        self.heap: list[tuple[float, int, int, Any, int, Any]] = []
        self._seq = itertools.count()
        self.checker = Checker(self)
        self.store = SimStore(self.params.run_id, cfg.nodes, self.checker)
        self._keys = Keys(self.params.run_id)
        self._round_key = self._keys.round
        self.forged = self.rejected = 0  # forge faults: values written, values readers refused
        self.agents = [
            VirtualAgent(self, i, cfg.addr(i), cfg.nproc_per_node) for i in range(cfg.nodes)
        ]
        self.faults = resolve(cfg.faults, cfg.nodes, self.rng)
        self._cap = cfg.latency_median_s * cfg.latency_cap_factor
        self._rtts = _quantiles(cfg.latency_median_s, cfg.latency_sigma, self._cap)
        self._per_byte = 1.0 / cfg.bandwidth_bytes_per_s
        self._service = 1.0 / cfg.store_ops_per_s if cfg.store_ops_per_s > 0 else 0.0
        self._store_free = 0.0
        self.latency_factor, self.drop_p, self.delay_s = 1.0, 0.0, 0.0
        self._windows: dict[str, list[float]] = {"spike": [], "drop": [], "delay": []}
        self.store_down_until = 0.0
        self._ports = itertools.count(20000)
        self.trace: list[tuple[Any, ...]] | None = [] if cfg.trace else None
        # watched key -> {task: the token it slept under}: one watch per task and key
        self._waiters: dict[str, dict[Task, int]] = {}
        self._rev = 0  # the store's revision: one per write, as etcd's
        self._mod: dict[str, int] = {}  # key -> the revision that last wrote it
        self.events = 0
        self.stopped = False
        starts = [self.rng.random() * cfg.start_spread_s for _ in range(cfg.nodes)]
        for fault in self.faults:
            if fault.kind == "late":
                for node in fault.nodes:
                    starts[node] = fault.at_s
        faults_over = quiet_at(
            self.faults, read_timeout_s=cfg.read_timeout_s, latency_cap_s=self._cap
        )
        self.quiet_s = max(*starts, faults_over)
        self.bound_s = liveness_bound_s(cfg)
        detect = cfg.keep_alive_interval_s * (cfg.keep_alive_max_attempt + 1)
        self.settle_s = cfg.settle_s if cfg.settle_s is not None else detect + 1.0
        self.until_s = (
            cfg.until_s if cfg.until_s is not None else self.quiet_s + self.bound_s + self.settle_s
        )
        for agent, at in zip(self.agents, starts, strict=True):
            self._push(at, CALL, None, 0, self._starter(agent))
        for fault in self.faults:
            self._schedule(fault)
        self._push(self.quiet_s + self.settle_s, CALL, None, 0, self._check_settled)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        heap, pop, until = self.heap, heapq.heappop, self.until_s
        while heap and not self.stopped:
            if heap[0][0] > until:
                self.now = until
                return
            t, _, kind, task, token, payload = pop(heap)
            self.now = t
            self.events += 1
            if kind == STEP:
                if token != task.token:
                    continue  # cancelled: the agent died, or the task was woken early
                paused = task.agent.paused_until
                if paused > t:
                    when = paused + self.rng.random() * _RESUME_JITTER_S
                    self._push(when, STEP, task, token, payload)
                    continue
                self._resume(task, payload)
            elif kind == ARRIVE:
                self._arrive(task, token, payload)
            else:
                payload()

    def _push(self, t: float, kind: int, task: Task | None, token: int, payload: Any) -> None:
        heapq.heappush(self.heap, (t, next(self._seq), kind, task, token, payload))

    def _resume(self, task: Task, payload: Any) -> None:
        gen = task.gen
        task.sleeping = False
        if task.awaiting:  # the reply to its op, or the op's failure
            task.awaiting = False
            if not isinstance(payload, BaseException):
                task.agent.reached = True  # dynamic.py: the Driver's `answered`
        try:
            if payload is _START:
                op = next(gen)
            elif isinstance(payload, BaseException):
                op = gen.throw(payload)
            else:
                op = gen.send((payload, self.now))
        except StopIteration:
            return
        self._dispatch(task, op)

    def _dispatch(self, task: Task, op: Op) -> None:
        while op.__class__ is Sleep:
            if not task.interrupt:
                task.sleeping, task.until = True, op.until
                until = op.until
                if until is not None and self.cfg.store_wakes and self._await(task, until):
                    return
                when = self.now + op.seconds
                heapq.heappush(self.heap, (when, next(self._seq), STEP, task, task.token, None))
                return
            # SIGTERM arrived while the thread was busy: the real Driver raises at the
            # next sleep.
            task.interrupt = False
            try:
                op = task.gen.throw(Interrupted())
            except StopIteration:
                return
        self._send(task, op)

    def _send(self, task: Task, op: Op) -> None:
        now = self.now
        rtt = self._rtt()
        task.sent_at, task.rtt = now, rtt
        if not task.wrote and is_write(op):
            task.wrote = True
        task.awaiting = True
        heal = task.agent.cut_until
        if heal > now:  # partitioned: TCP holds the request until the link heals
            self._hold(task, task.token, op, heal + rtt * 0.5)
            return
        if rtt * 0.5 > self.cfg.read_timeout_s:
            # Slower than the client waits (a latency spike): it gives up at its read
            # timeout; the request still lands, late, and its reply goes nowhere.
            self._push(now + rtt * 0.5, ARRIVE, task, _ORPHAN, op)
            self._push(now + self.cfg.read_timeout_s, STEP, task, task.token, StoreFailure("slow"))
            return
        heapq.heappush(self.heap, (now + rtt * 0.5, next(self._seq), ARRIVE, task, task.token, op))

    def _hold(self, task: Task, token: int, op: Op, deliver_at: float) -> None:
        """Delivers `op` at `deliver_at` if the client's read timeout allows, else fails it.

        `token` is the one the request was sent under: if its agent died meanwhile, the
        reply (or failure) must not wake the dead agent's thread."""
        give_up = task.sent_at + self.cfg.read_timeout_s
        if deliver_at <= give_up:
            self._push(deliver_at, ARRIVE, task, token, op)
        else:
            self._push(give_up, STEP, task, token, StoreFailure("read timeout"))

    def _arrive(self, task: Task, token: int, op: Op) -> None:
        # A request that left before its agent died still takes effect: it was on the wire.
        now = self.now
        if self.store_down_until > now:
            if token != _ORPHAN:
                self._hold(task, token, op, self.store_down_until)
            return
        reply, size = self.store.apply(op, task.agent.index)
        if is_write(op):
            self._rev += 1
            for key in _written(op):
                self._mod[key] = self._rev
            if self._waiters:
                self._notify(op)
        task.seen_rev = self._rev
        if self.trace is not None:
            self.trace.append((now, task.agent.index, task.name, op, reply))
        if token == _ORPHAN:
            return
        back = task.rtt * 0.5 + size * self._per_byte
        if self._service:
            start = now if now > self._store_free else self._store_free
            self._store_free = start + self._service
            back += self._store_free - now
        if self.drop_p and self.rng.random() < self.drop_p:
            give_up = task.sent_at + self.cfg.read_timeout_s
            self._push(give_up, STEP, task, token, StoreFailure("reply lost"))
            return
        if self.delay_s:
            back += self.rng.random() * self.delay_s
        give_up = task.sent_at + self.cfg.read_timeout_s
        if now + back > give_up:  # too slow: the client gave up (the op took effect anyway)
            self._push(give_up, STEP, task, token, StoreFailure("read timeout"))
            return
        heapq.heappush(self.heap, (now + back, next(self._seq), STEP, task, token, reply))

    def _await(self, task: Task, key: str) -> bool:
        """A watch on `key` for a sleeping task (the real agent's etcd watch): True if it
        fired already, i.e. `key` was written since the task's last request was applied
        (etcd_watch.py compares revisions so). The watch stays for the task's later sleeps
        on the same key (a 0 s Sleep starts it), as the real store keeps a watch that did
        not fire."""
        value = self.store.data.get(key)
        if value is not None and self._mod.get(key, 0) > task.seen_rev:
            self._push(self.now + self._rtt() * 0.5, STEP, task, task.token, value)
            return True
        self._waiters.setdefault(key, {})[task] = task.token
        return False

    def _notify(self, op: Op) -> None:
        """Wakes the tasks watching a key `op` wrote, once the event reaches them."""
        for key in [key for key in _written(op) if key in self._waiters]:
            value = self.store.data.get(key)
            for task, token in self._waiters.pop(key).items():
                if token == task.token and task.sleeping and task.until == key and value:
                    task.token += 1  # the sleep's own timer no longer wakes it
                    self._push(self.now + self._rtt() * 0.5, STEP, task, task.token, value)

    def _rtt(self) -> float:
        return self._rtts[int(self.rng.random() * _QUANTILES)] * self.latency_factor

    def wake(self, task: Task, payload: Any = None) -> None:
        """Ends `task`'s sleep now (a signal or a worker exit wakes the real agent)."""
        task.token += 1
        task.sleeping = False
        self._push(self.now, STEP, task, task.token, payload)

    # -- agents ------------------------------------------------------------------------------
    def _starter(self, agent: VirtualAgent) -> Callable[[], None]:
        def start() -> None:
            if agent.state == GONE:  # crashed or stopped before it started
                return
            agent.state = JOINING
            self._push(self.now, STEP, agent.main, agent.main.token, _START)

        return start

    def start_beats(self, agent: VirtualAgent) -> None:
        if not agent.beating:
            agent.beating = True
            self._push(self.now, STEP, agent.beats, agent.beats.token, _START)

    def next_port(self) -> int:
        return next(self._ports)

    def on_assignment(self, agent: VirtualAgent, info: NodeInfo, a: Any) -> None:
        self.checker.on_assignment(agent, info, a)

    def on_round_complete(self, complete_at: float) -> None:
        self._push(
            max(complete_at, self.quiet_s) + self.settle_s, CALL, None, 0, self._check_settled
        )

    def on_declared_dead(self, agent: VirtualAgent) -> None:
        self.checker.on_declared_dead(agent)

    def on_exit(self, agent: VirtualAgent, reason: str) -> None:
        self.checker.on_exit(agent, reason)

    # -- faults ------------------------------------------------------------------------------
    def _schedule(self, fault: Fault) -> None:
        act: Callable[[], None]
        if fault.kind == "late":
            return  # its start time is the fault
        if fault.kind in ("spike", "drop", "delay"):
            self._push(fault.at_s, CALL, None, 0, lambda: self._window(fault, True))
            self._push(fault.end_s, CALL, None, 0, lambda: self._window(fault, False))
            return
        if fault.kind == "forge":
            self._push(fault.at_s, CALL, None, 0, lambda: self._forge(fault))
            return
        if fault.kind == "restart":
            act = lambda: self._restart(fault)  # noqa: E731
        else:
            act = lambda: self._hit(fault)  # noqa: E731
        self._push(fault.at_s, CALL, None, 0, act)

    def _window(self, fault: Fault, on: bool) -> None:
        active = self._windows[fault.kind]
        if on:
            active.append(fault.value)
        else:
            active.remove(fault.value)
        self.latency_factor = math.prod(self._windows["spike"])
        self.drop_p = 1.0 - math.prod(1.0 - p for p in self._windows["drop"])
        self.delay_s = max(self._windows["delay"], default=0.0)

    def _forge(self, fault: Fault) -> None:
        live = [a.node_id for a in self.agents if a.state != GONE]
        self.forged += forge(self.store, self._keys, live_ids=live, max_nodes=self.cfg.max_nodes)
        if self.now + FORGE_EVERY_S < fault.end_s:
            self._push(self.now + FORGE_EVERY_S, CALL, None, 0, lambda: self._forge(fault))

    def on_rejected(self, key: str) -> None:
        self.rejected += 1

    def _restart(self, fault: Fault) -> None:
        self.store_down_until = max(self.store_down_until, fault.end_s)
        if fault.value:
            self.store.wipe()

    def _hit(self, fault: Fault) -> None:
        for node in fault.nodes:
            agent = self.agents[node]
            if agent.state == GONE:
                continue
            if fault.kind == "crash":
                agent.exit("crashed")
            elif fault.kind == "pause":
                agent.paused_until = max(agent.paused_until, fault.end_s)
            elif fault.kind == "partition":
                agent.cut_until = max(agent.cut_until, fault.end_s)
            elif fault.kind == "fail":
                if agent.state == RUNNING:  # no workers run while it joins
                    agent.worker_failed = True
                    if agent.main.sleeping:
                        self.wake(agent.main)
            elif fault.kind == "leave":
                if agent.state == WAITING:
                    agent.exit("left")  # never started: nothing to announce
                elif agent.main.sleeping:
                    self.wake(agent.main, Interrupted())
                else:
                    agent.main.interrupt = True

    # -- settling ----------------------------------------------------------------------------
    def converged_round(self) -> int | None:
        """The round every live agent runs (spares aside), if the job is settled in one."""
        live = [a for a in self.agents if a.state != GONE]
        if len(live) < self.cfg.min_nodes:
            return None
        rnd = round_of(self.store.value(self._round_key))
        record = self.checker.rounds.get(rnd)
        if record is None or record.complete_at is None:
            return None
        running = sum(
            1
            for a in live
            if a.state == RUNNING and a.assignment is not None and a.assignment.round == rnd
        )
        want = min(len(live), self.cfg.max_nodes)
        return rnd if running == record.gws == want else None

    def _check_settled(self) -> None:
        rnd = self.converged_round()
        if rnd is None or self.now < self.quiet_s + self.settle_s:
            return
        complete_at = self.checker.rounds[rnd].complete_at
        if complete_at is not None and complete_at + self.settle_s <= self.now + 1e-9:
            self.stopped = True


def _quantiles(median_s: float, sigma: float, cap_s: float) -> list[float]:
    """The lognormal's quantiles at (i + 0.5) / _QUANTILES, capped at cap_s."""
    normal = NormalDist(math.log(median_s), sigma)
    return [min(cap_s, math.exp(normal.inv_cdf((i + 0.5) / _QUANTILES))) for i in range(_QUANTILES)]


def _written(op: Op) -> list[str]:
    """The keys a write op writes."""
    if isinstance(op, MultiSet):
        return [key for key, _ in op.items]
    key = getattr(op, "key", None)
    return [key] if isinstance(key, str) else []
