"""The rendezvous protocol steps, as generators (see model.py for the contract)."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from launcher.rendezvous.state.bumps import (
    CHARGED,
    CLOSER_LOST,
    INITIAL,
    NODE_LOST,
    SCALE_UP,
    bump,
    bump_key,
    parse_bump,
    round_finishing,
)
from launcher.rendezvous.state.model import (
    EXCLUDED,
    FAILED,
    MEMBERS_LISTED_UP_TO,
    OK,
    Add,
    Assignment,
    CompareSet,
    Excluded,
    Feedback,
    Get,
    JobOver,
    Keys,
    MultiGet,
    MultiSet,
    NodeInfo,
    Op,
    Params,
    RendezvousTimeout,
    Set,
    Sleep,
    round_of,
)
from launcher.rendezvous.state.pacing import PROMPT_S, JoinPace, spread_poll_s

Gen = Generator[Op, Feedback, object]

# Spares and waiters poll less often than joiners: nothing they do is urgent.
_SPARE_POLL_FACTOR = 10
# How long a store host waits for the other members' goodbyes after the job is done.
_HOST_GRACE_S = 10.0


def join(
    p: Params, me: NodeInfo, *, now: float
) -> Generator[Op, Feedback, Assignment | JobOver | Excluded]:
    """Joins the next round that can take this node and returns its assignment.

    Spares (the round is full) wait until a round has room; if the job ends first, the
    result is JobOver. Excluded: this identity was declared dead while the round formed
    and the closer left it out; the caller must join again under a new node id.
    Raises RendezvousTimeout if no round forms within join_timeout_s.
    """
    k = Keys(p.run_id)
    deadline = now + p.join_timeout_s
    while True:
        # Each read that does not depend on the one before shares its round trip: under a
        # loaded store every round trip before a joiner's slot delays the round.
        (cur, done), now = yield MultiGet((k.round, k.done))
        if done is not None:
            return JobOver(outcome=str(done))
        if cur is None:
            cur, now = yield CompareSet(k.round, None, f"0:{me.node_id}")
        rnd = round_of(cur)
        record = bump_key(p, cur)
        raws, now = yield MultiGet((k.r(rnd, "close"),) + ((record,) if record else ()))
        closed = raws[0]
        if closed is not None:
            size = members_of(closed)
            if not p.static and size < p.max_nodes and not (yield from round_finishing(p, rnd)):
                # A running job with room for us: ask every member to re-form with us.
                yield from bump(p, cur, reason=SCALE_UP, by=me.node_id, expected=size + 1)
                continue
            over = yield from wait_for_change(p, rnd, by=me.node_id)
            if over is not None:
                return over
            deadline = now + p.join_timeout_s  # a spare's wait does not count
            continue
        bumped = parse_bump(raws[1]) if record else None
        result = yield from _join_round(p, me, cur, bumped, deadline)
        if result is not None:
            return result


def _join_round(
    p: Params, me: NodeInfo, current: str, bumped: dict[str, Any] | None, deadline: float
) -> Generator[Op, Feedback, Assignment | JobOver | Excluded | None]:
    """Takes a slot in the round in `current` (`bumped`: its bump record); None means:
    start over (the round moved on, or full)."""
    k = Keys(p.run_id)
    rnd = round_of(current)
    # How many nodes the bumper expects back; watchers lower it with negative adds to
    # r<r>/expected as they declare joiners dead.
    hint = int(bumped.get("expected", 0)) if bumped is not None else 0
    seq, now = yield Add(k.r(rnd, "seq"), 1)
    slot = int(seq) - 1
    _, now = yield Set(k.node(rnd, slot), me.to_json())
    pace = JoinPace(p, joined=slot + 1, now=now)
    if slot >= p.max_nodes:
        return (yield from wait_for_change(p, rnd, by=me.node_id))
    min_seen_at: float | None = None
    if p.store_wakes and slot + 1 < (hint or p.max_nodes):
        # Woken by its assignment (the last joiner closes), it waits at once, as between
        # two polls: a poll right after joining could meet the closer's write and the
        # members' worker starts, and be answered that late (1.2 s at 100 etcd agents).
        min_seen_at = now if slot + 1 >= p.min_nodes else None  # as its own add saw
        pace.observe(slot + 1, hint, min_seen_at, now)
        mine, now = yield Sleep(pace.next_poll_s(slot + 1, now), until=k.assign(rnd, slot))
        if mine is not None:
            return _assigned(mine, rnd)
    # All a waiting joiner looks at, in one read per poll (one etcd txn, one pipelined
    # TCPStore round trip), its own assignment too: the poll that finds the round closed
    # often finds it assigned. The counters are Add's decimal strings.
    looks = (k.r(rnd, "close"), k.round, k.r(rnd, "seq"), k.r(rnd, "expected"), k.assign(rnd, slot))
    while True:
        (closed, cur, seen, lowered_raw, mine), now = yield MultiGet(looks)
        if mine is not None:
            return _assigned(mine, rnd)
        if closed is not None:
            break
        if round_of(cur) != rnd:
            return None
        joined, lowered = int(seen or 0), int(lowered_raw or 0)
        if joined >= p.min_nodes and min_seen_at is None:
            min_seen_at = now
        size = decide_size(p, joined, hint + lowered, min_seen_at, now)
        if size:
            decision = json.dumps({"size": size, "closer": me.node_id})
            closed, now = yield CompareSet(k.r(rnd, "close"), None, decision)
            if closed == decision:
                # Its own assignment, not read back behind every member's worker start.
                mine = yield from _close_round(p, rnd, decision, slot, bumped)
                if mine is not None:
                    return _assigned(mine, rnd)
            break
        if now >= deadline:
            raise RendezvousTimeout(
                run_id=p.run_id,
                waited_s=p.join_timeout_s,
                joined=joined,
                needed=p.min_nodes,
            )
        pace.observe(joined, hint + lowered, min_seen_at, now)
        # Woken (where the store can) by the closer's write of our assignment, with it.
        mine, now = yield Sleep(pace.next_poll_s(joined, now), until=looks[-1])
        if mine is not None:
            return _assigned(mine, rnd)
    size = int(json.loads(closed)["size"])
    if slot >= size:
        # Took a slot just after the round closed. With room left, ask for a new round at
        # once (as a newcomer to a running job would) instead of idling as a spare.
        members = members_of(closed)
        if not p.static and members < p.max_nodes and not (yield from round_finishing(p, rnd)):
            cur, now = yield Get(k.round)
            if round_of(cur) == rnd:
                yield from bump(p, cur, reason=SCALE_UP, by=me.node_id, expected=members + 1)
            return None
        return (yield from wait_for_change(p, rnd, by=me.node_id))
    closed_at = now
    give_up = now + p.assign_timeout_s
    while True:
        (raw, cur), now = yield MultiGet((k.assign(rnd, slot), k.round))
        if raw is not None:
            return _assigned(raw, rnd)
        if round_of(cur) != rnd:
            return None  # the closer gave the round up (see _close_round)
        if now >= give_up:
            # The closer died between deciding and assigning: nobody can finish this round.
            if round_of(cur) == rnd:
                yield from bump(p, cur, reason=CLOSER_LOST, by=me.node_id, expected=size - 1)
            return None
        # The closer publishes the assignments right after closing: worth the full rate for
        # a moment (unless the store wakes us), then the spread (it may be gone: give_up).
        prompt = now - closed_at < PROMPT_S and not p.store_wakes
        nap = p.poll_interval_s if prompt else spread_poll_s(p, size)
        raw, now = yield Sleep(nap, until=k.assign(rnd, slot))
        if raw is not None:
            return _assigned(raw, rnd)


def _assigned(raw: str, rnd: int) -> Assignment | Excluded:
    if raw == EXCLUDED:
        return Excluded(round=rnd)  # declared dead before the round closed
    return Assignment.from_json(raw)


def decide_size(
    p: Params, joined: int, expected: int, min_seen_at: float | None, now: float
) -> int:
    """How many joiners the round closes with now (0: keep waiting). Pure."""
    if joined >= p.max_nodes:
        return p.max_nodes
    if p.static or joined < p.min_nodes or min_seen_at is None:
        return 0
    # `expected` is the bumper's count of nodes coming back (0: unknown, e.g. round 0).
    if expected > 0 and joined >= expected:
        return joined
    if now - min_seen_at >= p.last_call_timeout_s:
        return joined
    return 0


def members_of(closed: str) -> int:
    """How many members a closed round has: its slots, less any the closer left out."""
    decision = json.loads(closed)
    return int(decision.get("members", decision["size"]))


def _close_round(
    p: Params, rnd: int, decision: str, own_slot: int, bumped: dict[str, Any] | None
) -> Generator[Op, Feedback, str | None]:
    """The closer's O(N) work, once per round: order members, assign ranks, publish.
    `bumped`: the round's bump record, as the closer read it when it joined. Returns
    what it wrote for its own slot (None: it published no assignments)."""
    k = Keys(p.run_id)
    size = int(json.loads(decision)["size"])
    keys = tuple(k.node(rnd, slot) for slot in range(size))
    raws, now = yield MultiGet(keys)
    give_up = now + p.assign_timeout_s
    # A joiner takes its slot and writes its descriptor in two steps; give it a moment.
    while any(raw is None for raw in raws) and now < give_up:
        yield Sleep(p.poll_interval_s)
        if (yield from _current(p, rnd)) is None:
            return None
        raws, now = yield MultiGet(keys)
    described = [(slot, NodeInfo.from_json(r)) for slot, r in enumerate(raws) if r is not None]
    # One read for the rest: the round (still this one?), `last`, dead marks (below).
    dead_keys = tuple(k.dead(n.node_id) for _, n in described)
    (cur, last_raw, *marks), now = yield MultiGet((k.round, k.last, *dead_keys))
    if round_of(cur) != rnd:
        # The joiners gave this round up while we waited (their assign timeout, or the one
        # whose descriptor is missing rejoined): it must not be handed out, nobody is in it.
        return None
    # A slot with no descriptor after assign_timeout: its joiner died (or is cut off)
    # between taking the slot and describing itself. The round forms without it; if it
    # ever writes the descriptor it reads `excluded` and rejoins as a new node.
    missing = [slot for slot, raw in enumerate(raws) if raw is None]
    # A joiner declared dead (its heartbeat stopped, or it left) while the round formed
    # must not be in it. These reads come after the close, so every declaration made
    # before the close is seen; one declared later is found by its heartbeat as usual.
    nodes = [item for item, mark in zip(described, marks, strict=True) if mark is None]
    excluded = [item for item, mark in zip(described, marks, strict=True) if mark is not None]
    # Each excluded node reads this instead of an assignment and rejoins as a new one.
    items = [(k.assign(rnd, slot), EXCLUDED) for slot in [s for s, _ in excluded] + missing]
    if len(nodes) < p.min_nodes or (p.static and excluded):
        # Joiners died between taking a slot and describing themselves, or were declared
        # dead: this round cannot form (static: every --node-rank has its place). Start a
        # new one rather than run below MIN.
        if items:
            yield MultiSet(tuple(items))
        cur, now = yield Get(k.round)
        if round_of(cur) == rnd:
            reason = NODE_LOST if excluded else CLOSER_LOST
            detail = ",".join(n.node_id for _, n in excluded)
            closer = str(json.loads(decision)["closer"])
            yield from bump(p, cur, reason=reason, by=closer, expected=len(nodes), detail=detail)
        return dict(items).get(k.assign(rnd, own_slot))
    if len(nodes) < size:
        # Newcomers must see the room left (they compare the member count with MAX). First
        # in the batch, so whoever sees an assignment or an exclusion sees this too.
        update = dict(json.loads(decision))
        update.update(members=len(nodes), excluded=[n.node_id for _, n in excluded])
        if missing:
            update.update(missing=missing)
        items.insert(0, (k.r(rnd, "close"), json.dumps(update, sort_keys=True)))
    last = json.loads(last_raw) if last_raw is not None else None
    bumped = bumped or {"reason": INITIAL, "detail": ""}
    reason, detail = str(bumped["reason"]), str(bumped.get("detail", ""))
    ordered = order_members(p, nodes, last_round=last["round"] if last else None)
    returning = sum(1 for _, n in nodes if last is not None and n.prev_round == last["round"])
    lost_someone = last is not None and returning < int(last["size"])
    if reason in CHARGED and lost_someone and last is not None:
        # A node died and its peers' workers failed at once (gloo sees the reset before any
        # watcher declares the node lost): the round exists because of the loss, so say so
        # (and do not charge it), as when the watcher is first.
        here = {n.node_id for _, n in nodes}
        gone = [m for m in last.get("members", ()) if m not in here]
        reason = NODE_LOST
        detail = ",".join(gone) or f"{int(last['size']) - returning} node(s)"
    charged = reason in CHARGED
    restart_count = (int(last["restart_count"]) if last else 0) + (1 if charged else 0)
    status = FAILED if restart_count > p.max_restarts else OK
    world = sum(n.nproc for _, n in ordered)
    master = ordered[0][1]
    members = tuple(n.node_id for _, n in ordered) if len(ordered) <= MEMBERS_LISTED_UP_TO else ()
    base = 0
    for group_rank, (slot, node) in enumerate(ordered):
        successor = ordered[(group_rank + 1) % len(ordered)][1].node_id
        assignment = Assignment(
            round=rnd,
            group_rank=group_rank,
            group_world_size=len(ordered),
            base_rank=base,
            world_size=world,
            master_addr=master.addr,
            master_port=master.master_port,
            restart_count=restart_count,
            reason=reason,
            charged=charged,
            status=status,
            watch=successor if successor != node.node_id else "",
            members=members,
            detail=detail,
        )
        items.append((k.assign(rnd, slot), assignment.to_json()))
        base += node.nproc
    last_now = {
        "round": rnd,
        "size": len(ordered),
        "restart_count": restart_count,
        "members": list(members),
    }
    # `last` after the assignments (its readers may assume them published), in one batch.
    items.append((k.last, json.dumps(last_now, sort_keys=True)))
    yield MultiSet(tuple(items))
    return dict(items).get(k.assign(rnd, own_slot))


def _current(p: Params, rnd: int) -> Generator[Op, Feedback, str | None]:
    """The round key's value if the job is still at round `rnd`, else None."""
    cur, _ = yield Get(Keys(p.run_id).round)
    return cur if cur is not None and round_of(cur) == rnd else None


def order_members(
    p: Params, nodes: list[tuple[int, NodeInfo]], *, last_round: int | None
) -> list[tuple[int, NodeInfo]]:
    """Group-rank order: static by --node-rank; otherwise members of the last round first,
    in their old order (survivors keep their relative order), then newcomers by address
    and id, so the order never depends on who happened to join first."""

    def key(item: tuple[int, NodeInfo]) -> tuple[int, int, str, str]:
        _, node = item
        if p.static:
            return (0, node.node_rank, "", node.node_id)
        if last_round is not None and node.prev_round == last_round:
            return (0, node.prev_group_rank, "", node.node_id)
        return (1, 0, node.addr, node.node_id)

    return sorted(nodes, key=key)


def wait_for_change(p: Params, rnd: int, *, by: str) -> Generator[Op, Feedback, JobOver | None]:
    """Waits until the round moves past `rnd` (None) or the job ends (JobOver).

    A waiting spare also watches the round's `alive` counter (every member's heartbeat
    bumps it): if every member died, nobody is left to notice, so the spare moves the job
    to a new round itself. It also asks for a scale-up if the round closed with room left
    (the closer left out a node declared dead after this spare saw the round full).
    """
    k = Keys(p.run_id)
    # Counted so that a store host waits for waiting spares to see the end of the job
    # before taking the store down (see finish).
    yield Add(k.spares, 1)
    alive_value, now = yield Add(k.r(rnd, "alive"), 0)
    alive_since = forming_since = now
    while True:
        yield Sleep(p.poll_interval_s * _SPARE_POLL_FACTOR)
        done, now = yield Get(k.done)
        if done is not None:
            yield Add(k.spares_seen_end, 1)
            return JobOver(outcome=str(done))
        cur, now = yield Get(k.round)
        if round_of(cur) != rnd:
            yield Add(k.spares, -1)
            return None
        closed, now = yield Get(k.r(rnd, "close"))
        if closed is None:
            # A spare exists only once more than MAX joined, so a live joiner closes the
            # round at once; still open after assign_timeout means every joiner died.
            if now - forming_since >= p.assign_timeout_s:
                yield Add(k.spares, -1)
                yield from bump(p, cur, reason=CLOSER_LOST, by=by, expected=0)
                return None
            continue
        members = members_of(closed)
        if not p.static and members < p.max_nodes and not (yield from round_finishing(p, rnd)):
            yield Add(k.spares, -1)
            yield from bump(p, cur, reason=SCALE_UP, by=by, expected=members + 1)
            return None
        value, now = yield Add(k.r(rnd, "alive"), 0)
        if value != alive_value:
            alive_value, alive_since = value, now
        elif now - alive_since >= p.dead_after_s and (yield from round_finishing(p, rnd)):
            alive_since = now  # members stop beating once they finish: wait for the end
        elif now - alive_since >= p.dead_after_s:
            yield Add(k.spares, -1)
            yield from bump(p, cur, reason=NODE_LOST, by=by, expected=0, detail="all")
            return None
