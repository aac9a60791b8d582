"""Whether this agent's rendezvous store answers, shared by the agent's two threads.

Each failed store step reports here and learns how long to back off, or that the outage
has lasted past `--rdzv-conf store_outage_timeout` (then the agent gives up with one line);
each answered step ends an outage under way. The window and backoff are pure logic
(state/outage.py, also what the simulator runs); this adds the lock, the clock, the events
(`rendezvous.store.lost`, `rendezvous.store.restored`) and the log lines.

`drop_events` turns the clients a store server of this agent dropped for misbehaving into
`store.client.dropped` events (the server rate-limits them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from launcher import events as ev
from launcher.errors import RendezvousConnectionError, RendezvousError
from launcher.rendezvous.state import Outage
from launcher.tcpstore.drops import DroppedClient, OnDrop

log = logging.getLogger(__name__)


class StoreHealth:
    def __init__(
        self,
        *,
        window_s: float,
        events: ev.EventSink,
        run_id: str,
        endpoint: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self._outage = Outage(window_s=window_s)
        self._lock = threading.Lock()
        self._events = events
        self._run_id = run_id
        self._endpoint = endpoint
        self._clock = clock
        # Whether any store step ever went through. A store never reached is not an outage
        # to ride out: the first join fails after read_timeout (which bounds connecting),
        # with the store's own error, as torchrun's does.
        self.reached = False

    def failed(self, err: RendezvousError) -> float | None:
        """A store step failed: seconds to back off before re-running it, or None when the
        store has been unreachable for the whole window (give up: raise `give_up()`)."""
        now = self._clock()
        # Events are written under the lock, so one outage's `lost` always precedes its
        # `restored` in the log although both threads report here.
        with self._lock:
            first = not self._outage.active
            delay = self._outage.fail(now, err.problem)
            if first:
                self._events.emit(ev.RDZV_STORE_LOST, error=err.problem, window_s=self.window_s)
        if first and delay is not None:
            log.warning(
                "lost the rendezvous store (%s); retrying for up to %g s",
                err.problem,
                self.window_s,
            )
        return delay

    def answered(self) -> None:
        """A store step went through: ends the outage under way, if any."""
        self.reached = True
        if not self._outage.active:  # unlocked peek: the common case costs nothing
            return
        now = self._clock()
        with self._lock:
            failures = self._outage.failures
            lasted = self._outage.recover(now)
            if lasted is not None:
                self._events.emit(
                    ev.RDZV_STORE_RESTORED, outage_s=round(lasted, 3), failures=failures
                )
        if lasted is not None:
            log.warning("the rendezvous store answers again after %.1f s", lasted)

    def back_off(
        self, err: RendezvousConnectionError, *, answered: bool, sleep: Callable[[float], object]
    ) -> None:
        """After a failed protocol step (`answered`: some of its operations were): waits
        before the next try, or raises once the store has been unreachable for the window."""
        if answered:
            self.reached = True
        if not self.reached:
            raise err  # never reached at all: a wrong endpoint or a store not up, not an outage
        delay = self.failed(err)
        if delay is None:
            if self.window_s <= 0:
                raise err  # store_outage_timeout=0: the first failure, as it was
            raise self.give_up() from err
        sleep(delay)

    def give_up(self) -> RendezvousConnectionError:
        """The one-line error an agent exits with once the window is over."""
        with self._lock:
            lasted = self._outage.unreachable_s(self._clock())
            error = self._outage.last_error or "no answer"
        if self.window_s <= 0:
            problem = f"store unreachable (store_outage_timeout=0: no retries): {error}"
        else:
            problem = (
                f"store unreachable for {lasted:.0f} s (store_outage_timeout="
                f"{self.window_s:g} s); last error: {error}"
            )
        return RendezvousConnectionError(problem, run_id=self._run_id, endpoint=self._endpoint)


# A forger can rewrite a key that every node polls 20 times a second: one event per key at
# most this often, with the count of values rejected since the last one.
REJECT_REPORT_EVERY_S = 10.0


class RejectReport:
    """Reports store values that failed the job secret's check (`rendezvous.value.rejected`
    and a warning), at most once per key every REJECT_REPORT_EVERY_S."""

    def __init__(
        self,
        events: ev.EventSink,
        *,
        prefix: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._events, self._prefix, self._clock = events, prefix, clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}  # key -> when it was last reported
        self._held: dict[str, int] = {}  # key -> rejections not reported yet

    def rejected(self, key: str) -> None:
        name = key.removeprefix(self._prefix)
        now = self._clock()
        with self._lock:
            count = self._held.get(name, 0) + 1
            last = self._last.get(name)
            if last is not None and now - last < REJECT_REPORT_EVERY_S:
                self._held[name] = count
                return
            self._held[name], self._last[name] = 0, now
        log.warning(
            "rendezvous: ignored %d value(s) under %r that fail the job secret's check "
            "(a process without the secret, or a node with another one, wrote there)",
            count,
            name,
        )
        self._events.emit(ev.RDZV_VALUE_REJECTED, key=name, count=count, first=last is None)


def drop_events(events: ev.EventSink, *, store: str) -> OnDrop:
    """`store`: "rendezvous" (the c10d store this agent hosts) or "workers" (MASTER_PORT)."""

    def emit(drop: DroppedClient) -> None:
        events.emit(
            ev.STORE_CLIENT_DROPPED,
            store=store,
            port=drop.port,
            peer=drop.peer,
            reason=drop.reason,
            suppressed=drop.suppressed,
        )

    return emit
