from __future__ import annotations

import json
import os
import select
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from launcher.progress.file_timer import (
    TIMER_FILE_ENV,
    FileTimerServer,
    TimerExpired,
    default_timer_file_path,
)
from tests.conftest import clean_env, wait_until

pytestmark = pytest.mark.integration

ME = os.getpid()


class FakeClocks:
    """Agent monotonic and wall clocks that differ, as they do on a real machine."""

    def __init__(self) -> None:
        self.monotonic = 1000.0
        self.wall = 1_700_000_000.0


@pytest.fixture
def clocks() -> FakeClocks:
    return FakeClocks()


@pytest.fixture
def make_server(tmp_path: Path, clocks: FakeClocks) -> Iterator[Callable[..., FileTimerServer]]:
    servers: list[FileTimerServer] = []

    def make(allowed: Callable[[], set[int]] = lambda: {ME}, fake: bool = True) -> FileTimerServer:
        timing = {"clock": lambda: clocks.monotonic, "wall_clock": lambda: clocks.wall}
        server = FileTimerServer(
            tmp_path / "timer", allowed_pids=allowed, **(timing if fake else {})
        )
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def send(path: Path, **request: object) -> None:
    """What torch's FileTimerClient does: open non-blocking, one write, close."""
    fields = {"version": 1, "pid": ME, "scope_id": "s", "expiration_time": -1, "signal": 9}
    fields.update(request)
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, json.dumps(fields).encode() + b"\n")
    finally:
        os.close(fd)


def test_the_fifo_is_ready_at_once_private_and_replaces_a_stale_one(
    tmp_path: Path, make_server: Callable[..., FileTimerServer]
) -> None:
    (tmp_path / "timer").write_text("left by a dead agent")
    server = make_server()  # returns although no writer is connected
    mode = (tmp_path / "timer").stat().st_mode
    assert stat.S_ISFIFO(mode) and stat.S_IMODE(mode) == 0o600
    assert server.read_requests() == 0  # no writer: nothing, and no EOF spin either
    server.close()
    assert not (tmp_path / "timer").exists()
    server.close()  # twice is fine


def test_an_acquired_timer_expires_once_on_the_agents_clock(
    make_server: Callable[..., FileTimerServer], clocks: FakeClocks
) -> None:
    server = make_server()
    send(server.path, scope_id="step", expiration_time=clocks.wall + 10.0)
    assert server.read_requests() == 1
    clocks.wall += 3600.0  # an NTP step after receipt moves nothing
    assert server.pop_expired(now=1009.9) == []
    expected = TimerExpired(
        pid=ME, scope_id="step", expired_at=1010.0, expiration_time=1_700_000_010.0, signal=9
    )
    assert server.pop_expired(now=1010.0) == [expected]
    assert server.pop_expired(now=2000.0) == []


def test_a_release_waiting_in_the_pipe_is_applied_before_judging(
    make_server: Callable[..., FileTimerServer], clocks: FakeClocks
) -> None:
    server = make_server()
    send(server.path, scope_id="step", expiration_time=clocks.wall + 1.0)
    send(server.path, scope_id="other", expiration_time=clocks.wall + 1.0)
    send(server.path, scope_id="step", expiration_time=-1, signal=0)
    assert [t.scope_id for t in server.pop_expired(now=5000.0)] == ["other"]


def test_reacquiring_a_scope_replaces_its_deadline(
    make_server: Callable[..., FileTimerServer], clocks: FakeClocks
) -> None:
    server = make_server()
    send(server.path, scope_id="step", expiration_time=clocks.wall + 1.0)
    send(server.path, scope_id="step", expiration_time=clocks.wall + 100.0)
    assert server.pop_expired(now=1050.0) == []
    assert [t.expired_at for t in server.active()] == [1100.0]


def test_requests_from_other_pids_are_ignored(
    make_server: Callable[..., FileTimerServer], clocks: FakeClocks
) -> None:
    server = make_server(allowed=lambda: {ME})
    send(server.path, pid=1, scope_id="kill-init", expiration_time=clocks.wall)
    assert server.pop_expired(now=1e9) == []
    assert (server.requests, server.rejected) == (1, 1)


def test_timers_of_workers_that_are_gone_are_dropped(
    make_server: Callable[..., FileTimerServer], clocks: FakeClocks
) -> None:
    workers = {ME}
    server = make_server(allowed=lambda: workers)
    send(server.path, scope_id="step", expiration_time=clocks.wall + 1.0)
    assert len(server.active()) == 1
    workers.clear()  # the worker exited, the agent forgets it
    assert server.pop_expired(now=1e9) == []
    assert server.active() == []


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1, 2]",
        b'{"pid": "12", "scope_id": "s", "expiration_time": 1.0, "signal": 9}',
        b'{"pid": 12, "scope_id": 3, "expiration_time": 1.0, "signal": 9}',
        b'{"pid": 12, "scope_id": "s", "expiration_time": "soon", "signal": 9}',
        b'{"pid": 12, "scope_id": "s", "expiration_time": NaN, "signal": 9}',
        b'{"pid": true, "scope_id": "s", "expiration_time": 1.0, "signal": 9}',
        b"\xff\xfe",
    ],
)
def test_malformed_lines_are_counted_and_skipped(
    make_server: Callable[..., FileTimerServer], clocks: FakeClocks, line: bytes
) -> None:
    server = make_server()
    fd = os.open(server.path, os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, line + b"\n")
    os.close(fd)
    send(server.path, scope_id="fine", expiration_time=clocks.wall)
    assert [t.scope_id for t in server.pop_expired(now=1e9)] == ["fine"]
    assert (server.requests, server.malformed) == (2, 1)


def test_the_thread_drains_the_fifo_and_stops_on_close(
    tmp_path: Path, make_server: Callable[..., FileTimerServer], clocks: FakeClocks
) -> None:
    server = make_server()
    server.start()
    fd = os.open(server.path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        for i in range(2000):  # ~180 KB, more than a pipe holds: only a reader lets this end
            line = json.dumps({"pid": ME, "scope_id": f"s{i}", "expiration_time": 1.0e10})
            while True:
                try:
                    os.write(fd, line.encode() + b"\n")
                    break
                except BlockingIOError:  # full: wait for the thread to drain it
                    assert select.select([], [fd], [], 10.0)[1], "nobody drains the FIFO"
    finally:
        os.close(fd)
    assert len(server.active()) == 2000
    server.close()
    assert not (tmp_path / "timer").exists()


def test_close_leaves_a_path_someone_else_recreated(
    tmp_path: Path, make_server: Callable[..., FileTimerServer]
) -> None:
    server = make_server()
    (tmp_path / "timer").unlink()
    os.mkfifo(tmp_path / "timer")  # another agent's FIFO now
    server.close()
    assert (tmp_path / "timer").exists()


def test_the_default_path_is_torchs() -> None:
    path = default_timer_file_path()
    assert path.parent == Path(tempfile.gettempdir())
    assert path.name.startswith("watchdog_timer_")
    uuid.UUID(path.name.removeprefix("watchdog_timer_"))
    assert default_timer_file_path() != path


@pytest.mark.timeout(60)
def test_a_timer_file_the_agent_cannot_make_is_one_line_and_starts_no_worker(
    tmp_path: Path,
) -> None:
    stamp = tmp_path / "started"
    script = tmp_path / "worker.py"
    script.write_text(f"open({str(stamp)!r}, 'w').close()\n")
    bad = tmp_path / "missing" / "timer"
    env = clean_env(TORCHELASTIC_ENABLE_FILE_TIMER="1", **{TIMER_FILE_ENV: str(bad)})
    result = subprocess.run(
        [sys.executable, "-m", "launcher", "--nproc-per-node", "1", str(script)],
        check=False, env=env, capture_output=True, text=True, timeout=50,
    )  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and TIMER_FILE_ENV in lines[0] and str(bad) in lines[0], lines
    assert not stamp.exists()


# A real worker: torch's own client and `expires()`, talking to our server.
WORKER = textwrap.dedent(
    """
    import os, sys, time
    from torch.distributed.elastic import timer
    timer.configure(timer.FileTimerClient(os.environ["TORCHELASTIC_TIMER_FILE"]))
    with timer.expires(after=30, scope="released"):
        pass
    print("acquiring", flush=True)
    with timer.expires(after=float(sys.argv[1]), scope="step"):
        time.sleep(float(sys.argv[2]))
    """
)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(timer_file: Path, after_s: float, sleep_s: float) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(after_s), str(sleep_s)],
            env=clean_env(**{TIMER_FILE_ENV: str(timer_file)}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.communicate(timeout=10)


@pytest.mark.timeout(120)
def test_torchs_client_gets_its_expiry_reported_not_executed(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    pytest.importorskip("torch")
    workers: set[int] = set()
    with FileTimerServer(tmp_path / "timer", allowed_pids=lambda: workers) as server:
        server.start()
        proc = spawn(server.path, after_s=1.0, sleep_s=300.0)
        workers.add(proc.pid)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "acquiring\n", proc.stderr
        started = time.monotonic()
        expired: list[TimerExpired] = []

        def reported() -> bool:
            expired.extend(server.pop_expired(time.monotonic()))
            return bool(expired)

        assert wait_until(reported, timeout_s=30.0)
        (timer,) = expired
        assert (timer.pid, timer.scope_id, timer.signal) == (proc.pid, "step", 9)
        assert started - 0.5 < timer.expired_at < started + 1.5
        assert timer.expired_at <= time.monotonic()
        assert proc.poll() is None  # reported, not killed: the agent decides
        assert server.active() == []  # "released" was released, "step" was reported once
        assert server.rejected == 0 and server.malformed == 0


@pytest.mark.timeout(120)
def test_torchs_client_released_in_time_reports_nothing(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    pytest.importorskip("torch")
    workers: set[int] = set()
    with FileTimerServer(tmp_path / "timer", allowed_pids=lambda: workers) as server:
        proc = spawn(server.path, after_s=1.0, sleep_s=0.0)
        workers.add(proc.pid)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert server.read_requests() == 4  # two acquires, two releases
        assert server.pop_expired(time.monotonic() + 3600.0) == []


@pytest.mark.timeout(120)
def test_torchs_client_from_a_foreign_pid_is_ignored(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    pytest.importorskip("torch")
    with FileTimerServer(tmp_path / "timer", allowed_pids=lambda: {ME}) as server:
        proc = spawn(server.path, after_s=0.1, sleep_s=0.0)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        server.read_requests()
        assert (server.requests, server.rejected) == (4, 4)
        assert server.pop_expired(time.monotonic() + 3600.0) == []
