"""How often a waiting joiner looks at its forming round (pure: counts and times in, a sleep
out). The store's load from a forming round should stay about flat in N, yet every joiner
should learn of the close at once: on a loaded machine a joiner that learns of it half a
second late competes for CPU with every peer already starting its workers (at 100 agents on
2 cores their store replies then took up to a second).

- Spread: up to _FULL_RATE_POLLERS joiners poll at the full rate (`poll_interval_s`); past it
  each polls less often (at 100 joiners every 0.5 s instead of 2000 reads a second), never
  slower than _MAX_POLL_S.
- Paced: a joiner does not sleep past the moment the round should reach the count it waits
  for, at the pace the count has grown since it joined (one more read for each joiner, timed
  to the close instead of up to a spread interval after it).
- Prompt: once the count is within a tenth of it, or the last call ends within PROMPT_S, the
  joiner polls at the full rate, for at most PROMPT_S (a bounded burst, should the last
  joiners never come).
- Woken: where the store wakes a joiner when its assignment is written (`store_wakes`:
  etcd's watches), a joiner polls only as a fallback (every _MAX_POLL_S: for a round that
  moved on while it formed): the last joiner sees its own count and closes, and everyone
  else is woken by the assignments, with them. A poll is worse than useless then: one that
  falls just before the assignments are written is answered after every member that was
  woken has started its workers (at 100 agents on 2 cores, 2 s later). So a fallback poll
  that would fall around the predicted close comes a nap after it instead. Only the end
  of a last call still calls for the full rate (someone must look to close then).
"""

from __future__ import annotations

from launcher.rendezvous.state.model import Params

_FULL_RATE_POLLERS = 10
_MAX_POLL_S = 1.0
_IMMINENT_FRACTION = 0.1
PROMPT_S = 0.5  # also: how long a joiner polls its assignment at the full rate after a close


def spread_poll_s(p: Params, pollers: int) -> float:
    """How long each of `pollers` nodes polling the same keys sleeps between looks."""
    if p.store_wakes:
        return _MAX_POLL_S  # a fallback only (see the module's doc)
    if pollers <= _FULL_RATE_POLLERS:
        return p.poll_interval_s
    spread = p.poll_interval_s * pollers / _FULL_RATE_POLLERS
    return max(p.poll_interval_s, min(spread, _MAX_POLL_S))


def close_imminent(
    p: Params, joined: int, expected: int, min_seen_at: float | None, now: float
) -> bool:
    """Whether a round the close decision keeps open will likely close within moments."""
    target = _target(p, expected)
    if not p.store_wakes and joined >= target - max(1, int(target * _IMMINENT_FRACTION)):
        return True
    return (
        not p.static
        and min_seen_at is not None
        and now >= min_seen_at + p.last_call_timeout_s - PROMPT_S
    )


def _target(p: Params, expected: int) -> int:
    """The count a round waits for: its bumper's expectation, else (round 0) max_nodes."""
    return expected if expected > 0 else p.max_nodes


def until_target_s(joined: int, target: int, since: tuple[int, float], now: float) -> float:
    """When the count reaches `target` at its pace since `since` = (count, time); inf if it
    has not grown."""
    count0, at = since
    if joined >= target:
        return 0.0
    if joined <= count0 or now <= at:
        return float("inf")
    return (target - joined) * (now - at) / (joined - count0)


class JoinPace:
    """One joiner's polling of one forming round."""

    def __init__(self, p: Params, *, joined: int, now: float) -> None:
        self._p = p
        self._since = (joined, now)
        self._target = p.max_nodes
        self._prompt_since: float | None = None
        self._timed = False  # the last sleep ended at a predicted close
        self._prompt_at = float("inf")  # when the last call's final PROMPT_S begins

    def observe(self, joined: int, expected: int, min_seen_at: float | None, now: float) -> None:
        self._target = _target(self._p, expected)
        if min_seen_at is not None and not self._p.static:
            self._prompt_at = min_seen_at + self._p.last_call_timeout_s - PROMPT_S
        if self._prompt_since is None and close_imminent(
            self._p, joined, expected, min_seen_at, now
        ):
            self._prompt_since = now

    def next_poll_s(self, joined: int, now: float) -> float:
        p = self._p
        if self._prompt_since is not None and now - self._prompt_since < PROMPT_S:
            return p.poll_interval_s
        # Not past the start of the last call's final moments, whatever the spread.
        until_prompt = max(self._prompt_at - now, 0.0)
        nap = spread_poll_s(p, joined)
        if p.store_wakes:
            # A fallback poll due around the predicted close waits a nap longer: woken by
            # its assignment, the joiner needs no read then (see the module's doc).
            eta = until_target_s(joined, self._target, self._since, now)
            nap = nap + eta if eta < nap else nap
            return max(p.poll_interval_s, min(nap, until_prompt))
        nap = min(nap, until_prompt)
        # A predicted close that did not come is not predicted again at once: a wrong
        # prediction costs one read, not a poll at the full rate until the close.
        eta = (
            float("inf") if self._timed else until_target_s(joined, self._target, self._since, now)
        )
        self._timed = eta < nap
        return max(p.poll_interval_s, min(nap, eta))
