"""The heartbeat thread of a running member (dynamic.py starts it after the first join).

Every keep-alive interval it beats, and it looks at the member it watches (its successor)
half an interval after that one's beat: each at its own phase of an interval on the wall
clock the members share (state.phases says why). Between the two, where the store can say
(etcd), it also waits on the round key: a bump wakes the agent at once, instead of at its
next check of the round. Whatever it learns goes to the agent through `tell`.

Only the grid's alignment comes from the wall clock, once per round; the waits themselves
run on the monotonic clock, so a clock step never stalls the beats.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from launcher.errors import RendezvousAccessError, RendezvousConnectionError
from launcher.rendezvous.driver import Driver, Interrupted, first_line
from launcher.rendezvous.health import StoreHealth
from launcher.rendezvous.state import Keys, Params, WatchState, beat, look, next_at

log = logging.getLogger(__name__)

Tell = Callable[[str, RendezvousAccessError | None], None]


def _grid(watch: WatchState | None, interval_s: float, *, now: float) -> tuple[float, float]:
    """When the first beat and the first look of `watch`'s round are due (monotonic)."""
    if watch is None:  # nothing to look at yet: beat now, and once an interval
        return now, now + interval_s
    offset = time.time() - now  # the shared clock, as of this round
    beat_at = next_at(now + offset, watch.beat_phase, interval_s) - offset
    return beat_at, next_at(now + offset, watch.look_phase, interval_s) - offset


def _after(due: float, now: float, interval_s: float) -> float:
    """The slot after `due` on its grid that is still ahead (slots missed are skipped)."""
    due += interval_s
    while due <= now:
        due += interval_s
    return due


def run_heartbeats(
    driver: Driver,
    params: Params,
    *,
    current: Callable[[], tuple[WatchState | None, str]],
    tell: Tell,
    health: StoreHealth,
    stopped: Callable[[], bool],
) -> None:
    """Beats and looks until `stopped()` or the driver's interrupt fd is written."""
    interval = params.keep_alive_interval_s
    round_key = Keys(params.run_id).round if params.store_wakes else None
    watch, me = current()
    now = time.monotonic()
    beat_at, look_at = _grid(watch, interval, now=now)
    # The round watch opens at this member's phase of the first second: every member
    # starts this thread as its round completes, and a hundred watches opened at once (a
    # connection, a stream and a watch each) slowed the store in the worker-start storm.
    phase = watch.beat_phase if watch is not None else 0.0
    arm_at = now + phase * min(interval, 1.0) if round_key is not None else math.inf
    until: str | None = None
    while not stopped():
        due = min(beat_at, look_at, arm_at)
        # A step already due (the last one was slow) goes first: a sleep of no time with a
        # key would only open the watch, for up to a second when the store is slowest.
        wait = due - time.monotonic()
        try:
            # A watch reports writes since this thread's last read: so once per step.
            moved = driver.sleep(wait, until=until) if wait > 0 else None
        except Interrupted:
            return  # the agent is done with this rendezvous
        if moved is not None:
            tell("round_moved", None)
            until = None
            continue
        now = time.monotonic()
        latest, me = current()
        if latest is not watch:  # a new round: its members' phases
            watch, (beat_at, look_at) = latest, _grid(latest, interval, now=now)
            continue
        if arm_at <= now:
            until, arm_at = round_key, math.inf
            continue
        if arm_at == math.inf:  # armed: again after each step (see the sleep)
            until = round_key
        news = None
        try:
            if beat_at <= now:
                beat_at = _after(beat_at, now, interval)
                driver.run(beat(params, me, watch, now=now))
            else:
                look_at = _after(look_at, now, interval)
                news = driver.run(look(params, me, watch, now=now))
        except RendezvousAccessError as err:
            tell("store_refused", err)  # no retry fixes it: tell the agent
            continue
        except (RendezvousConnectionError, RuntimeError, OSError, ValueError) as err:
            if not isinstance(err, RendezvousConnectionError):
                err = RendezvousConnectionError(first_line(err))
            log.debug("heartbeat to the rendezvous store failed: %s", err)
            # Beats carry on every interval; the agent gives up only once the store has
            # been unreachable for the whole window (the main thread raises).
            if health.failed(err) is None:
                tell("store_unreachable", None)
            continue
        health.answered()
        if news is not None and not (news == "declared_dead" and current()[1] != me):
            tell(news, None)  # (a dead identity next_round already left behind: not news)
