"""The protocol steps of a formed job: watching the round, reporting a failure, leaving,
heartbeats, and the exit barrier (joining and closing rounds live in protocol.py)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

from launcher.rendezvous.state.bumps import (
    NODE_LEFT,
    NODE_LOST,
    WORKER_FAILURE,
    bump,
    bump_record,
    round_finishing,
)
from launcher.rendezvous.state.model import (
    FAILED,
    Add,
    Assignment,
    Feedback,
    Get,
    Keys,
    MultiGet,
    Op,
    Params,
    Set,
    Sleep,
    round_of,
)
from launcher.rendezvous.state.protocol import _HOST_GRACE_S

# dead/<node>: "lost" when a watcher declared it, LEFT when the node itself gave it up.
LEFT = "left"
# A gap of more than two beats between a watcher's own reads means it was stalled.
_STALLED_AFTER_BEATS = 2
# Running members check the round every monitor interval up to this many nodes; past it
# each checks less often (at most every _MAX_CHECK_S), so a running job's checks cost the
# store about the same at any N (at 100 nodes a check every 0.5 s: 200 reads a second, not
# 1,000), and a bump is seen within N/20 monitor intervals.
_FULL_RATE_CHECKERS = 20
_MAX_CHECK_S = 1.0
# Members of group rank below this bump the round's `alive` counter with their beats: the
# spares only need to know that *some* member is alive, and every bump is a store write.
ALIVE_BEATERS = 2


def check_interval_s(monitor_s: float, nodes: int) -> float:
    """How often each of `nodes` running members checks the round. Pure."""
    if nodes <= _FULL_RATE_CHECKERS:
        return monitor_s
    return max(monitor_s, min(monitor_s * nodes / _FULL_RATE_CHECKERS, _MAX_CHECK_S))


def check_round(p: Params, rnd: int) -> Generator[Op, Feedback, str | None]:
    """The running member's O(1) check: None, or why the job is re-forming."""
    k = Keys(p.run_id)
    cur, _ = yield Get(k.round)
    new = round_of(cur)
    if new == rnd:
        return None
    record = yield from bump_record(p, cur)
    return str(record["reason"]) if record is not None else "unknown"


def report_failure(
    p: Params, a: Assignment, *, by: str, detail: str, reason: str = WORKER_FAILURE
) -> Generator[Op, Feedback, None]:
    """A local worker failed (or hung: reason `hang`): every node must restart (job-wide),
    the closer of the next round decides whether it is charged to the restart budget."""
    k = Keys(p.run_id)
    cur, _ = yield Get(k.round)
    if round_of(cur) == a.round:
        yield from bump(p, cur, reason=reason, by=by, expected=a.group_world_size, detail=detail)


def mark_dumped(p: Params, a: Assignment) -> Generator[Op, Feedback, None]:
    """After a hang in round `a.round`: this node's ranks' stacks are taken."""
    yield Add(Keys(p.run_id).r(a.round, "dumped"), 1)


def dumped_count(p: Params, a: Assignment) -> Generator[Op, Feedback, int]:
    """How many nodes of round `a.round` have taken their ranks' stacks (the node that
    detected the hang waits for all of them before stopping anything)."""
    value, _ = yield Add(Keys(p.run_id).r(a.round, "dumped"), 0)
    return int(value)


def publish_window(
    p: Params, a: Assignment, *, window: int, payload: str
) -> Generator[Op, Feedback, None]:
    """This member's straggler medians for its `window`-th window of round `a.round`."""
    yield Set(Keys(p.run_id).r(a.round, f"win/{window}/{a.group_rank}"), payload)


def collect_window(p: Params, a: Assignment, *, window: int) -> Generator[Op, Feedback, list[str]]:
    """Every member's medians for `window` published so far (the scorer, group rank 0,
    reads them: one O(N) read per window, by one node)."""
    k = Keys(p.run_id)
    keys = tuple(k.r(a.round, f"win/{window}/{slot}") for slot in range(a.group_world_size))
    values, _ = yield MultiGet(keys)
    return [value for value in values if value is not None]


def leave(p: Params, a: Assignment | None, *, me: str) -> Generator[Op, Feedback, None]:
    """A deliberate exit: mark this incarnation gone and let the rest re-form at once."""
    k = Keys(p.run_id)
    yield Set(k.dead(me), LEFT)
    if a is None:
        return
    cur, _ = yield Get(k.round)
    if round_of(cur) == a.round:
        yield from bump(p, cur, reason=NODE_LEFT, by=me, expected=a.group_world_size - 1)


def finish(
    p: Params,
    a: Assignment,
    *,
    hosting: bool,
    timeout_s: float,
    now: float,
    succeeded: bool = True,
) -> Generator[Op, Feedback, str]:
    """The exit barrier of a member: its workers all succeeded, or the job failed (the
    restart budget is spent): `conclude`, then `goodbye`.

    On success the last member to finish marks the job done; every member waits, bounded,
    until the job is done or moved on. Then each says goodbye, and the member hosting the
    store waits (bounded) for the other members' goodbyes and for the waiting spares to see
    the end, so the store never vanishes under a node still using it.
    Returns "succeeded", "failed", "moved_on" or "timeout".
    """
    outcome = yield from conclude(p, a, until=now + timeout_s, succeeded=succeeded)
    yield from goodbye(p, a, hosting=hosting, timeout_s=timeout_s)
    return outcome


def conclude(
    p: Params, a: Assignment, *, until: float, succeeded: bool = True, counted: bool = False
) -> Generator[Op, Feedback, str]:
    """The first half of `finish`: count this member's success (or mark the job failed)
    and wait, until `until`, for the job's end. `counted`: an earlier try's count was
    answered, so this one only reads the counter (re-running must not count twice)."""
    k = Keys(p.run_id)
    if not succeeded:
        yield Set(k.done, FAILED)
        return FAILED
    count, _ = yield Add(k.r(a.round, "succeeded"), 0 if counted else 1)
    if int(count) >= a.group_world_size:
        yield Set(k.done, "succeeded")
    return (yield from _await_job_end(p, a, until=until))


def goodbye(
    p: Params, a: Assignment, *, hosting: bool, timeout_s: float
) -> Generator[Op, Feedback, None]:
    """The second half of `finish`: say goodbye; the store host waits for the others'."""
    k = Keys(p.run_id)
    released, now = yield Add(k.r(a.round, "released"), 1)
    if hosting:
        give_up = now + min(timeout_s, _HOST_GRACE_S)
        while now < give_up:
            spares, now = yield Add(k.spares, 0)
            seen, now = yield Add(k.spares_seen_end, 0)
            if int(released) >= a.group_world_size and int(seen) >= int(spares):
                break
            yield Sleep(p.poll_interval_s)
            released, now = yield Add(k.r(a.round, "released"), 0)


def declared_dead(p: Params, me: str) -> Generator[Op, Feedback, bool]:
    """Whether peers gave this incarnation up for dead (then it must rejoin as a new one:
    a dead identity never enters a round again)."""
    mine, _ = yield Get(Keys(p.run_id).dead(me))
    return mine is not None


def retire(p: Params, me: str) -> Generator[Op, Feedback, bool]:
    """Gives this incarnation up after a join the store may have half-applied (the store
    failed after this node took a slot): its slot may hold `me`, and the same id in a
    second slot would make it a member twice. Marks `me` left, as a deliberate exit does,
    so a closer that has not closed yet leaves that slot out; one that already did gave it
    an assignment nobody reads, and its watcher finds the silent id as a lost node.

    True if peers had already declared `me` dead (the caller then rejoins as a newcomer,
    as after `declared_dead`)."""
    k = Keys(p.run_id)
    mine, _ = yield Get(k.dead(me))
    if mine is None:
        yield Set(k.dead(me), LEFT)
    return mine is not None and mine != LEFT


def mark_failed(p: Params) -> Generator[Op, Feedback, None]:
    yield Set(Keys(p.run_id).done, FAILED)


@dataclass
class WatchState:
    """What one member knows about the one it watches (mutable, owned by its driver)."""

    round: int
    group_world_size: int
    watched: str
    last_value: str | None = None
    last_change: float = 0.0
    last_seen: float = 0.0  # when this watcher last read the watched counter
    quiet_looks: int = 0  # looks since the counter last changed
    beats_alive: bool = True  # this member bumps the round's `alive` (see ALIVE_BEATERS)
    beat_phase: float = 0.0  # where in each keep-alive interval it beats (see phases)
    look_phase: float = 0.5  # ... and looks at the node it watches

    @classmethod
    def of(cls, a: Assignment, *, now: float) -> WatchState:
        """What a member of the round `a` assigns watches, as of `now`."""
        beat, look = phases(a.group_rank, a.group_world_size)
        return cls(
            round=a.round,
            group_world_size=a.group_world_size,
            watched=a.watch,
            last_change=now,
            beats_alive=a.group_rank < ALIVE_BEATERS,
            beat_phase=beat,
            look_phase=look,
        )


def phases(group_rank: int, nodes: int) -> tuple[float, float]:
    """When member `group_rank` of `nodes` beats and when it looks at its successor, as
    fractions of the keep-alive interval on a clock the members share (the wall clock).
    Pure.

    Beats are spread evenly over the interval, so the store never takes them in one burst.
    A look comes half an interval after its successor's beat: it always sees the beat just
    made, never races it. A member whose last beat was at t is then declared dead at
    t + 0.5 + max_attempt intervals, whenever in the interval it died (2.5 to 3.5 s with
    1 s beats). Looking at no particular time gave 2 to 4 s, and members that all started
    beating together (one store wake formed the round) raced their successor's beat: half
    of the looks saw a beat a whole interval old. Clocks that disagree by more than half an
    interval only lose that gain; nothing here depends on them for correctness."""
    beat = group_rank / nodes if nodes > 0 else 0.0
    look = ((group_rank + 1) % max(nodes, 1) / max(nodes, 1) + 0.5) % 1.0
    return beat, look


def next_at(now: float, phase: float, interval_s: float) -> float:
    """The first time after `now` that lies `phase` (a fraction) into an interval of the
    shared clock. Pure."""
    due = now + (phase * interval_s - now) % interval_s
    return due if due > now else due + interval_s


def beat(
    p: Params, me: str, watch: WatchState | None, *, now: float
) -> Generator[Op, Feedback, None]:
    """One keep-alive beat: any new value is one (this node's own clock will do: only it
    writes the key)."""
    k = Keys(p.run_id)
    yield Set(k.hb(me), repr(now))
    if watch is not None and watch.beats_alive:
        yield Add(k.r(watch.round, "alive"), 1)  # lets spares see the round is alive


def heartbeat(
    p: Params, me: str, watch: WatchState | None, *, now: float
) -> Generator[Op, Feedback, str | None]:
    """A beat and a look at once (the agents beat and look at their own phases)."""
    yield from beat(p, me, watch, now=now)
    return (yield from look(p, me, watch, now=now))


def look(
    p: Params, me: str, watch: WatchState | None, *, now: float
) -> Generator[Op, Feedback, str | None]:
    """Checks that this node is not declared dead, and looks at the node it watches.

    Returns "declared_dead" if this incarnation was declared dead (it must rejoin under a
    new id), "node_lost" if it just declared its watched node dead, else None.
    """
    k = Keys(p.run_id)
    started = now
    # Both reads in one round trip: a slow look delays the next one.
    watched = watch.watched if watch is not None else ""
    seen, now = yield MultiGet((k.dead(me), k.hb(watched)) if watched else (k.dead(me),))
    if seen[0] is not None:
        return "declared_dead"
    if watch is None or not watched:
        return None
    value = seen[1]
    # A watcher that could not look for a while (its own store access failed, or it was
    # paused) has no evidence against the watched node: its beats may have failed for the
    # same reason (a store outage stalls every node). It starts counting afresh. Only the
    # idle time before this look counts as not looking: under a slow store every look is
    # slow, the watched node's beats too, and a gap that included them would reset every look.
    stalled = started - watch.last_seen > _STALLED_AFTER_BEATS * p.keep_alive_interval_s
    watch.last_seen = now
    if value != watch.last_value or stalled:
        watch.last_value, watch.last_change, watch.quiet_looks = value, now, 0
        return None
    watch.quiet_looks += 1
    # Silent over as many looks as beats it may miss, one per interval on the grid (when
    # the store is slow, one look can fall just before a beat and the next just after the
    # one after it), and for the whole window less half an interval: each look ends a
    # round trip after its grid time, and a quicker trip than the one that saw the last
    # change must not cost another interval.
    silent = now - watch.last_change >= p.dead_after_s - p.keep_alive_interval_s / 2
    if not silent or watch.quiet_looks < p.keep_alive_max_attempt:
        return None
    if (yield from round_finishing(p, watch.round)):
        return None  # it stopped beating because it finished: its exit barrier has begun
    yield Set(k.dead(watch.watched), "lost")
    cur, _ = yield Get(k.round)
    if round_of(cur) == watch.round:
        yield from bump(
            p,
            cur,
            reason=NODE_LOST,
            by=me,
            expected=watch.group_world_size - 1,
            detail=watch.watched,
        )
    else:
        # The job is already re-forming: tell the forming round not to wait for the dead.
        yield Add(k.r(round_of(cur), "expected"), -1)
    watch.watched = ""
    return "node_lost"


def _await_job_end(p: Params, a: Assignment, *, until: float) -> Generator[Op, Feedback, str]:
    k = Keys(p.run_id)
    now = -float("inf")
    while now < until:
        done, now = yield Get(k.done)
        if done is not None:
            return str(done)
        cur, now = yield Get(k.round)
        if round_of(cur) != a.round:
            return "moved_on"
        yield Sleep(p.poll_interval_s)
    return "timeout"
