"""The versioned JSONL event log: the contract between the launcher and the chaos harness.

One JSON object per line. Every line carries the envelope below; `fields` holds the typed
payload of that event name. Changing the envelope or an event's fields means bumping
SCHEMA_VERSION and updating docs/event-log.md and the round-trip test.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

SCHEMA_VERSION = 2

# Event names, `component.subject.action`. Kept as constants so producers and checkers
# cannot drift apart by a typo.
AGENT_STARTED = "agent.started"
AGENT_SIGNAL = "agent.signal.received"
AGENT_EXIT = "agent.exit"
RDZV_ROUND_COMPLETE = "rendezvous.round.complete"
RDZV_CHANGED = "rendezvous.membership.changed"
RDZV_STORE_LOST = "rendezvous.store.lost"
RDZV_STORE_RESTORED = "rendezvous.store.restored"
RDZV_VALUE_REJECTED = "rendezvous.value.rejected"
STORE_CLIENT_DROPPED = "store.client.dropped"
WORKER_STARTED = "worker.started"
WORKER_EXITED = "worker.exited"
GROUP_FAILED = "group.failed"
GROUP_RESTART = "group.restart"
GROUP_STOPPED = "group.stopped"
GROUP_SUCCEEDED = "group.succeeded"
GROUP_DESCENDANTS_STOPPED = "group.descendants.stopped"
PROGRESS_ARMED = "progress.rank.armed"
PROGRESS_STALLED = "progress.rank.stalled"
HANG_DETECTED = "hang.incident.detected"
HANG_STACK_DUMPED = "hang.stack.dumped"
HANG_ATTRIBUTED = "hang.culprit.attributed"
STRAGGLER_DETECTED = "straggler.rank.detected"
STRAGGLER_STATS = "straggler.stats.reported"

KNOWN_EVENTS = frozenset(
    {
        AGENT_STARTED,
        AGENT_SIGNAL,
        AGENT_EXIT,
        RDZV_ROUND_COMPLETE,
        RDZV_CHANGED,
        RDZV_STORE_LOST,
        RDZV_STORE_RESTORED,
        RDZV_VALUE_REJECTED,
        STORE_CLIENT_DROPPED,
        WORKER_STARTED,
        WORKER_EXITED,
        GROUP_FAILED,
        GROUP_RESTART,
        GROUP_STOPPED,
        GROUP_SUCCEEDED,
        GROUP_DESCENDANTS_STOPPED,
        PROGRESS_ARMED,
        PROGRESS_STALLED,
        HANG_DETECTED,
        HANG_STACK_DUMPED,
        HANG_ATTRIBUTED,
        STRAGGLER_DETECTED,
        STRAGGLER_STATS,
    }
)


@dataclass(frozen=True, kw_only=True)
class Event:
    """One line of the event log."""

    name: str
    run_id: str
    node_id: str
    pid: int
    wall_time: float
    mono_time: float
    fields: Mapping[str, Any] = field(default_factory=dict)
    version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": self.version,
                "event": self.name,
                "time": self.wall_time,
                "mono": self.mono_time,
                "run_id": self.run_id,
                "node": self.node_id,
                "pid": self.pid,
                "fields": dict(self.fields),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str) -> Event:
        raw = json.loads(line)
        if not isinstance(raw, dict) or "event" not in raw:
            raise ValueError(f"not an event log line: {line[:80]!r}")
        version = int(raw.get("v", 0))
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"event log schema v{version} is newer than this reader (v{SCHEMA_VERSION})"
            )
        return cls(
            name=str(raw["event"]),
            run_id=str(raw.get("run_id", "")),
            node_id=str(raw.get("node", "")),
            pid=int(raw.get("pid", 0)),
            wall_time=float(raw.get("time", 0.0)),
            mono_time=float(raw.get("mono", 0.0)),
            fields=dict(raw.get("fields", {})),
            version=version,
        )


class EventSink(Protocol):
    def emit(self, name: str, **fields: Any) -> None: ...


class NullEventSink:
    def emit(self, name: str, **fields: Any) -> None:
        return None


class EventLog:
    """Appends events to zero or more JSONL files.

    Each event is written with one `os.write` on an O_APPEND descriptor so concurrent
    writers (several agents sharing a file) never interleave within a line.
    """

    def __init__(
        self,
        *,
        run_id: str,
        node_id: str,
        paths: list[Path] | None = None,
        wall_clock: Callable[[], float] = time.time,
        mono_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_id = run_id
        self.node_id = node_id
        self._wall = wall_clock
        self._mono = mono_clock
        self._fds: list[int] = []
        self.history: list[Event] = []
        for path in paths or []:
            self.add_path(path)

    def add_path(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fds.append(
            os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        )

    def emit(self, name: str, **fields: Any) -> None:
        event = Event(
            name=name,
            run_id=self.run_id,
            node_id=self.node_id,
            pid=os.getpid(),
            wall_time=self._wall(),
            mono_time=self._mono(),
            fields=fields,
        )
        self.history.append(event)
        data = (event.to_json() + "\n").encode()
        for fd in self._fds:
            os.write(fd, data)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def read_events(path: Path) -> Iterator[Event]:
    """Yields the events of a log; a torn last line (writer killed mid-write) is skipped."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                return
            if line.strip():
                yield Event.from_json(line)
