"""Clients the store server dropped for misbehaving: one warning and one report each, at most
``drop_reports_per_window`` per window, so a flood of garbage cannot flood the log too.

A drop beyond the allowance is counted, and the next report says how many went unreported
before it (``suppressed``); if no drop comes to carry that count, the server's next tick after
the window ends reports the last suppressed drop itself. A client that closes its own
connection, or one the agent closes (``reset()``), is not a drop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from launcher.tcpstore.limits import Limits

log = logging.getLogger("launcher.tcpstore.server")


@dataclass(frozen=True, kw_only=True, slots=True)
class DroppedClient:
    """A client the server closed for misbehaving."""

    port: int  # the server's
    peer: str  # the client's address, host:port
    reason: str  # one line: what it sent or failed to send
    suppressed: int  # drops since the previous report that got no report of their own


OnDrop = Callable[[DroppedClient], None]


class DropReports:
    def __init__(self, *, label: str, port: int, limits: Limits, on_drop: OnDrop | None) -> None:
        self._label = label
        self._port = port
        self._per_window = limits.drop_reports_per_window
        self._window_s = limits.drop_report_window_s
        self._on_drop = on_drop
        self.total = 0
        self._window_start: float | None = None
        self._reported = 0  # in the current window
        self._suppressed = 0
        self._last: tuple[str, str] = ("", "")  # the latest suppressed drop

    def dropped(self, peer: str, reason: str, now: float) -> None:
        self.total += 1
        self._roll(now)
        if self._reported < self._per_window:
            self._report(peer, reason, self._suppressed)
            self._suppressed = 0
        else:
            self._suppressed += 1
            self._last = (peer, reason)

    def flush(self, now: float) -> None:
        """On the server's tick: a window that ended with unreported drops reports its last."""
        if self._suppressed and self._roll(now):
            peer, reason = self._last
            self._report(peer, reason, self._suppressed - 1)
            self._suppressed = 0

    def _roll(self, now: float) -> bool:
        if self._window_start is None or now - self._window_start >= self._window_s:
            self._window_start, self._reported = now, 0
            return True
        return False

    def _report(self, peer: str, reason: str, suppressed: int) -> None:
        self._reported += 1
        more = f" ({suppressed} more dropped before it, not logged)" if suppressed else ""
        where = f"{self._label} on port {self._port}"
        log.warning("%s: dropped client %s: %s%s", where, peer, reason, more)
        if self._on_drop is None:
            return
        drop = DroppedClient(port=self._port, peer=peer, reason=reason, suppressed=suppressed)
        try:
            self._on_drop(drop)
        except Exception:  # a failing event sink must not take the store down with it
            log.exception("%s: reporting a dropped client failed", self._label)
