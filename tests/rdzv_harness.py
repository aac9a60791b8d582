"""A tiny cooperative scheduler that drives the pure rendezvous generators of several
virtual nodes against one MemoryStore on a virtual clock (seeded, deterministic)."""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from launcher.rendezvous.driver import perform
from launcher.rendezvous.state import Op, Sleep
from launcher.rendezvous.store import MemoryStore


@dataclass
class Task:
    name: str
    gen: Generator[Op, Any, Any]
    wake_at: float = 0.0
    pending: Op | None = None
    result: Any = None
    error: BaseException | None = None
    done: bool = False
    started: bool = False


@dataclass
class Sim:
    seed: int = 0
    store: MemoryStore = field(default_factory=MemoryStore)
    now: float = 0.0
    tasks: list[Task] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def spawn(self, name: str, gen: Generator[Op, Any, Any], *, at: float | None = None) -> Task:
        task = Task(name=name, gen=gen, wake_at=self.now if at is None else at)
        self.tasks.append(task)
        return task

    def _advance(self, task: Task, reply: Any) -> None:
        try:
            op = next(task.gen) if not task.started else task.gen.send((reply, self.now))
            task.started = True
        except StopIteration as stop:
            task.done, task.result = True, stop.value
            return
        except Exception as err:
            task.done, task.error = True, err
            return
        if isinstance(op, Sleep):
            task.wake_at = self.now + op.seconds
            task.pending = None
        else:
            task.pending = op

    def run(self, until: float = 1e9) -> None:
        while True:
            live = [t for t in self.tasks if not t.done]
            if not live:
                return
            ready = [t for t in live if t.wake_at <= self.now]
            if not ready:
                self.now = min(t.wake_at for t in live)
                if self.now > until:
                    return
                continue
            task = self.rng.choice(ready)
            if not task.started:
                self._advance(task, None)
                continue
            reply = perform(self.store, task.pending) if task.pending is not None else None
            self._advance(task, reply)
            if task.pending is not None:
                task.wake_at = self.now  # store ops take no virtual time here


def agent_loop(
    p: Any, info_for: Any, log: list[Any], *, end: float, poll_s: float = 0.1
) -> Generator[Op, Any, None]:
    """A virtual agent: join, then watch the round; rejoin whenever it moves; stop at `end`.

    `info_for(prev_assignment)` builds this node's NodeInfo; `log` receives each result."""
    from launcher.rendezvous.state import Assignment, WatchState, check_round, heartbeat, join

    prev = None
    _, now = yield Sleep(0)
    while now < end:
        info = info_for(prev)
        result = yield from join(p, info, now=now)
        log.append(result)
        if not isinstance(result, Assignment):
            return
        prev = result
        watch = WatchState(
            round=result.round,
            group_world_size=result.group_world_size,
            watched=result.watch,
            last_change=now,
        )
        next_beat = now
        while True:
            _, now = yield Sleep(poll_s)
            if now >= end:
                return
            if now >= next_beat:  # the real agent beats from a thread, as often
                next_beat = now + p.keep_alive_interval_s
                yield from heartbeat(p, info.node_id, watch, now=now)
            reason = yield from check_round(p, result.round)
            if reason is not None:
                break
