"""An agent started by an integration test: its process, output file and event log."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from launcher import events as ev
from launcher.events import Event, read_events

EXIT_TIMEOUT_S = 60.0


@dataclass
class Node:
    addr: str
    proc: subprocess.Popen[str]
    log: Path
    events: Path

    def wait(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"agent {self.addr} still running after {timeout_s:g}s\n{self.describe()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def read(self) -> list[Event]:
        return list(read_events(self.events)) if self.events.exists() else []

    def named(self, name: str) -> list[Event]:
        return [e for e in self.read() if e.name == name]

    def describe(self) -> str:
        lines = [f"{e.name} {dict(e.fields)}" for e in self.read() if e.name != ev.WORKER_EXITED]
        events = "\n  ".join(lines[-15:])
        return f"--- {self.addr} rc={self.proc.poll()}\n{self.output()[-3000:]}\n  {events}"
