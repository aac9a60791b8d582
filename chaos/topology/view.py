"""What the harness sees of a running job: every node's event log and the workload's steps.

Both files are tailed incrementally (an offset per file, whole lines only), so polling them
every few tens of milliseconds costs only the new bytes. A line still being written (or torn
by a SIGKILL mid-write) has no newline yet and is left for the next poll.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from launcher.events import Event


class JsonlTail:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def read_new(self) -> list[str]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        return [line for line in data[: end + 1].decode(errors="replace").splitlines() if line]


class JobView:
    """Events per node index and step reports, as far as they have been written."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.steps_path = run_dir / "workload" / "steps.jsonl"
        self.events: dict[int, list[Event]] = {}
        self.steps: list[dict[str, Any]] = []
        self._event_tails: dict[int, JsonlTail] = {}
        self._steps_tail = JsonlTail(self.steps_path)

    def events_path(self, node: int) -> Path:
        return self.run_dir / "nodes" / str(node) / "events.jsonl"

    def watch_node(self, node: int) -> None:
        if node not in self._event_tails:
            self._event_tails[node] = JsonlTail(self.events_path(node))
            self.events[node] = []

    def poll(self) -> None:
        for node, tail in self._event_tails.items():
            for line in tail.read_new():
                try:
                    self.events[node].append(Event.from_json(line))
                except ValueError:
                    continue  # not an event line (a newer schema is reported by checkers)
        for line in self._steps_tail.read_new():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                self.steps.append(row)

    def named(self, name: str) -> list[tuple[int, Event]]:
        """(node, event) for every event of that name, node by node in file order."""
        return [(node, e) for node, evs in self.events.items() for e in evs if e.name == name]
