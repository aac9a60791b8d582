"""What the members of a running round tell each other besides the round itself: stack
dumps taken after a hang, and straggler windows. Best effort, never retried: the round's
fate never depends on them, and an agent that waited out a store outage here would stop
watching its workers. A mixin of DynamicRendezvous (which owns the state it reads)."""

from __future__ import annotations

import contextlib

from launcher.errors import RendezvousConnectionError
from launcher.rendezvous.driver import Driver, Interrupted
from launcher.rendezvous.state import (
    Assignment,
    Params,
    collect_window,
    dumped_count,
    mark_dumped,
    publish_window,
)


class SideChannel:
    assignment: Assignment | None
    params: Params
    _driver: Driver
    _retry_at: float  # check() backs off from a failing store until then

    def hang_dumped(self) -> None:
        a = self.assignment
        if a is None:
            return
        try:  # best effort: without it the detecting node stops after its bounded wait
            self._driver.run(mark_dumped(self.params, a))
        except (RendezvousConnectionError, Interrupted):
            return

    def await_dumps(self, timeout_s: float) -> int:
        a = self.assignment
        if a is None:
            return 0
        deadline = self._driver.now() + timeout_s
        count = 0
        try:
            while True:
                count = self._driver.run(dumped_count(self.params, a))
                if count >= a.group_world_size or self._driver.now() >= deadline:
                    return count
                self._driver.sleep(0.1)  # a counter in the store: nothing to block on
        except (RendezvousConnectionError, Interrupted):
            return count

    def publish_window(self, window: int, payload: str) -> None:
        a = self.assignment
        if a is None or self._driver.now() < self._retry_at:
            return
        # One attempt, never retried, none while `check` backs off from a failing store:
        # a report is worth less than an agent loop that watches its workers.
        with contextlib.suppress(RendezvousConnectionError, Interrupted):
            self._driver.run(publish_window(self.params, a, window=window, payload=payload))

    def collect_window(self, window: int) -> list[str]:
        a = self.assignment
        if a is None or self._driver.now() < self._retry_at:
            return []
        try:
            return self._driver.run(collect_window(self.params, a, window=window))
        except (RendezvousConnectionError, Interrupted):
            return []
