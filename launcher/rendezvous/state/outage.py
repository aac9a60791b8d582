"""How an agent rides out a store it cannot reach: a window and a backoff, as pure logic.

A failed store operation starts an outage (unless one is under way). The agent re-runs the
failed protocol step from its start after `backoff_s(n)` seconds, never past the window's
end, so the last try comes as the window closes; a failure at or after the end means
giving up. The first answered operation ends the outage. Times are the caller's monotonic
clock: the agent passes time.monotonic(), the simulator its virtual clock.
"""

from __future__ import annotations

from dataclasses import dataclass

# --rdzv-conf store_outage_timeout: long enough for a network blip, a switch or link flap, a
# c10d store host's brief disconnect or an etcd member restart (seconds each), short enough
# that a store that is gone for good (the c10d host crashed) fails the job within half a
# minute instead of hanging it. It matches last_call_timeout's 30 s.
DEFAULT_WINDOW_S = 30.0
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0


def backoff_s(failures: int) -> float:
    """The wait after the n-th failure in a row (n >= 1): 0.1 s doubling to 2 s."""
    if failures < 1:
        return 0.0
    return min(BACKOFF_FIRST_S * 2.0 ** min(failures - 1, 30), BACKOFF_MAX_S)


@dataclass
class Outage:
    """One agent's view of its store: reachable, or unreachable since `began`.

    Not thread-safe: the agent shares one between its two threads under a lock.
    """

    window_s: float
    began: float | None = None
    failures: int = 0  # failed attempts in this outage
    last_error: str = ""

    @property
    def active(self) -> bool:
        return self.began is not None

    def fail(self, now: float, error: str) -> float | None:
        """Records a failed attempt: seconds to wait before the next one, or None when the
        window is over (give up). `window_s` 0 gives up at the first failure."""
        if self.began is None:
            self.began, self.failures = now, 0
        self.failures += 1
        self.last_error = error
        left = self.began + self.window_s - now
        if left <= 0:
            return None
        return min(backoff_s(self.failures), left)

    def recover(self, now: float) -> float | None:
        """The store answered: how long it was unreachable, or None if it never stopped."""
        if self.began is None:
            return None
        lasted = max(0.0, now - self.began)
        self.began, self.failures = None, 0
        return lasted

    def unreachable_s(self, now: float) -> float:
        return 0.0 if self.began is None else max(0.0, now - self.began)
