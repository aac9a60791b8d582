"""Moving the job to its next round: why (the reasons), by whom, and the record that says so.

`bump` is how every step that re-forms the job moves the `round` key (a compare-and-set from
the value the caller read); `bump_record` is how readers learn why a round exists.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from launcher.rendezvous.state.model import (
    Add,
    CompareSet,
    Feedback,
    Get,
    Keys,
    Op,
    Params,
    Set,
    round_of,
)

# Reasons a round exists; the first is round 0's.
INITIAL, WORKER_FAILURE, SCALE_UP, NODE_LOST, NODE_LEFT, CLOSER_LOST, HANG = (
    "initial",
    "worker_failure",
    "scale_up",
    "node_lost",
    "node_left",
    "closer_lost",
    "hang",
)
# Rounds that use the restart budget: the job's own failures, not membership changes.
CHARGED = frozenset({WORKER_FAILURE, HANG})

# Once a member's workers all succeeded the training is over: the rest are in their last
# steps (a final checkpoint, teardown), and a node that stopped beating has finished, not
# died. A departure or a loss must not re-form the round then (a joiner waits for the end as
# a spare: the scale-up call sites check first), while a worker failure still re-forms.
_NOT_WHILE_FINISHING = frozenset({NODE_LOST, NODE_LEFT})


def round_finishing(p: Params, rnd: int) -> Generator[Op, Feedback, bool]:
    """Whether some member of round `rnd` has entered the exit barrier with success."""
    finished, _ = yield Add(Keys(p.run_id).r(rnd, "succeeded"), 0)
    return int(finished) > 0


def bump(
    p: Params, current: str | None, *, reason: str, by: str, expected: int, detail: str = ""
) -> Generator[Op, Feedback, bool]:
    """Moves the job from the round in `current` to the next one. True if this call did it
    (False: someone else already moved it, which is just as good).

    The new round value names the writer as `<by>+<reason>` (`by`: the caller's node id):
    it must be unique to the writer, or two callers bumping from the same round would both
    read their own value back. The reason is part of it because one node can bump for two
    reasons at once: its heartbeat thread declaring its successor lost while its main
    thread reports the worker failure that loss caused.

    The record (reason, detail, expected count) goes under the writer's own key *before*
    the compare-and-set: once the round moves, its record exists. Written after it, a reply
    lost on the compare-and-set left the round without one (the re-run finds the round
    moved and does nothing): no reason, so a worker failure went uncharged, and no expected
    count, so the round waited out its last call."""
    k = Keys(p.run_id)
    rnd = round_of(current)
    if reason in _NOT_WHILE_FINISHING and rnd >= 0 and (yield from round_finishing(p, rnd)):
        return False
    writer = f"{by}+{reason}"
    record = {"reason": reason, "by": by, "detail": detail, "expected": max(expected, 0)}
    yield Set(k.bump(rnd + 1, writer), json.dumps(record, sort_keys=True))
    new = f"{rnd + 1}:{writer}"
    result, _ = yield CompareSet(k.round, current, new)
    return bool(result == new)


def bump_record(p: Params, current: str | None) -> Generator[Op, Feedback, dict[str, Any] | None]:
    """Why the round in `current` exists: the record its bumper wrote before moving the
    round ({reason, by, detail, expected}); None for round 0 (nobody bumped it)."""
    key = bump_key(p, current)
    if key is None:
        return None
    raw, _ = yield Get(key)
    return parse_bump(raw)


def bump_key(p: Params, current: str | None) -> str | None:
    """Where the bumper of the round in `current` wrote its record; None for round 0."""
    if current is None or ":" not in current:
        return None
    return Keys(p.run_id).bump(round_of(current), current.split(":", 1)[1])


def parse_bump(raw: str | None) -> dict[str, Any] | None:
    return dict(json.loads(raw)) if raw is not None else None
