"""Whose port is it: the hygiene check's port attribution on the shared loopback.

Local nodes share the host's network namespace, so the ephemeral port a finished job gave
back can be handed to anything else on the host (CI runs two scenarios at once). A port
counts against a run only while one of that run's processes, or one not found, listens on it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from chaos.topology import procs
from chaos.topology.local import LocalTopology

_LISTENER = (
    "import socket, sys\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    "print(s.getsockname()[1], flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def listener() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A child listening on an ephemeral port, its environment marked as run `theirs`."""
    env = dict(os.environ, CHAOS_RUN_ID="theirs")
    child = subprocess.Popen(
        [sys.executable, "-c", _LISTENER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        yield child, int(child.stdout.readline())
    finally:
        child.kill()
        child.wait(timeout=10)


def _topology(run_id: str, ports: set[int]) -> LocalTopology:
    topo = LocalTopology.__new__(LocalTopology)  # only its ownership rules are under test
    topo.run_id = run_id
    topo._job_ports = lambda: ports  # type: ignore[method-assign]
    return topo


def test_owners_of_a_listening_port_are_the_processes_holding_it(
    listener: tuple[subprocess.Popen[str], int],
) -> None:
    child, port = listener
    with socket.socket() as mine:
        mine.bind(("127.0.0.1", 0))
        mine.listen()
        own = mine.getsockname()[1]
        owners = procs.listening_owners([port, own])
    assert owners == {port: {child.pid}, own: {os.getpid()}}
    assert procs.listening_owners([own]) == {}  # closed: nobody listens


def test_a_port_counts_against_the_run_whose_process_listens_on_it(
    listener: tuple[subprocess.Popen[str], int],
) -> None:
    _, port = listener
    assert _topology("theirs", {port}).bound_ports() == [port]
    assert _topology("ours", {port}).bound_ports() == []  # handed on to another job: not a leak
