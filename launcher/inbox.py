"""Signals to the launcher, turned into something the agent's waits can block on."""

from __future__ import annotations

import os


class SignalInbox:
    """Signals caught by the CLI's handlers, delivered to the agent through a pipe so a
    blocked wait wakes at once (the CLI installs handlers before anything starts)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.received: list[int] = []

    def drain(self) -> list[int]:
        try:
            while data := os.read(self.read_fd, 64):
                self.received.extend(data)
        except BlockingIOError:
            pass
        return self.received
