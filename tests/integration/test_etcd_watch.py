"""etcd watches as wake-ups (etcd_watch.py, Driver.sleep's `until`), on a real etcd member:
a sleeping joiner is woken with the value written, a write between its last read and the
watch is not lost, a watch outlives a timed-out sleep for the next one, and the agent's
heartbeat thread wakes it when the round moves."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chaos.topology.etcd import EtcdCluster
from launcher.flags import parse_args
from launcher.rendezvous import dynamic
from launcher.rendezvous.backends.etcd import EtcdStore
from launcher.rendezvous.driver import Driver, Interrupted
from launcher.rendezvous.state import Get, Keys, Sleep, bump
from launcher.rendezvous.state.signing import Seal
from launcher.resolve import resolve
from launcher.tcpstore.server import StoreServer

pytestmark = [pytest.mark.integration, pytest.mark.etcd]

LONG_S = 20.0  # a sleep that only a wake-up ends within the test's timeouts


@pytest.fixture
def prefix() -> str:
    return f"/test/{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def stores(etcd_server: EtcdCluster, prefix: str) -> Iterator[Callable[[], EtcdStore]]:
    made: list[EtcdStore] = []

    def make() -> EtcdStore:
        made.append(EtcdStore(etcd_server.endpoints, prefix=prefix, timeout_s=10))
        return made[-1]

    yield make
    for store in made:
        store.close()


def write_later(store: EtcdStore, key: str, value: str, after_s: float) -> threading.Timer:
    timer = threading.Timer(after_s, store.set, (key, value))
    timer.start()
    return timer


def test_a_sleep_ends_when_its_key_is_written_with_the_value(
    stores: Callable[[], EtcdStore],
) -> None:
    mine, other = stores(), stores()
    assert mine.get("assign/3") is None
    timer = write_later(other, "assign/3", "yours", 0.3)
    began = time.monotonic()
    assert Driver(mine).sleep(LONG_S, until="assign/3") == "yours"
    assert 0.25 < time.monotonic() - began < 5.0
    timer.join()


def test_a_write_between_the_last_read_and_the_sleep_is_not_lost(
    stores: Callable[[], EtcdStore],
) -> None:
    mine, other = stores(), stores()
    assert mine.get("assign/0") is None
    other.set("assign/0", "came early")  # before the watch exists
    began = time.monotonic()
    assert Driver(mine).sleep(LONG_S, until="assign/0") == "came early"
    assert time.monotonic() - began < 5.0


def test_a_value_already_read_does_not_wake_the_next_sleep(
    stores: Callable[[], EtcdStore],
) -> None:
    mine, other = stores(), stores()
    other.set("round", "1:a")
    assert mine.get("round") == "1:a"
    began = time.monotonic()
    assert Driver(mine).sleep(0.5, until="round") is None
    assert time.monotonic() - began >= 0.45


def test_a_watch_outlives_a_timed_out_sleep_and_reports_writes_meanwhile(
    stores: Callable[[], EtcdStore],
) -> None:
    mine, other = stores(), stores()
    driver = Driver(mine)
    mine.get("assign/1")
    opened = mine._connections.opened
    assert driver.sleep(0.2, until="assign/1") is None  # the watch is kept ...
    other.set("assign/1", "while you polled")  # ... and sees this, between two sleeps
    mine.get("something else")
    assert driver.sleep(LONG_S, until="assign/1") == "while you polled"
    assert mine._connections.opened == opened  # (watches use connections of their own)


def test_a_signal_ends_a_watched_sleep(stores: Callable[[], EtcdStore]) -> None:
    read, write = os.pipe()
    try:
        threading.Timer(0.2, os.write, (write, b"!")).start()
        with pytest.raises(Interrupted):
            Driver(stores(), interrupt_fd=read).sleep(LONG_S, until="never")
    finally:
        os.close(read)
        os.close(write)


def test_an_unreachable_member_means_a_plain_sleep(prefix: str) -> None:
    store = EtcdStore([("127.0.0.1", 9)], prefix=prefix, timeout_s=1)
    try:
        began = time.monotonic()
        assert Driver(store).sleep(0.3, until="assign/0") is None
        assert 0.25 < time.monotonic() - began < 3.0
    finally:
        store.close()


def test_a_forged_value_that_wakes_a_signed_step_reads_as_nothing(
    stores: Callable[[], EtcdStore],
) -> None:
    rejected: list[str] = []
    seal = Seal(secret=b"k" * 32, run_id="job", on_reject=rejected.append)
    mine, intruder = stores(), stores()

    def step() -> object:
        yield Get("rdzv/job/r0/assign/0")
        value, _ = yield Sleep(LONG_S, until="rdzv/job/r0/assign/0")
        return value

    timer = write_later(intruder, "rdzv/job/r0/assign/0", '{"forged": true}', 0.2)
    assert Driver(mine, seal=seal).run(step()) is None  # woken, but not believed
    assert rejected == ["rdzv/job/r0/assign/0"]
    timer.join()


def test_the_heartbeat_thread_wakes_the_agent_when_the_round_moves(
    etcd_server: EtcdCluster,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Beats 10 s apart and a check every 10 s: only the round watch can wake it in time.
    monkeypatch.setattr(
        dynamic,
        "open_store",
        lambda config, on_drop=None: lambda: EtcdStore(etcd_server.endpoints, prefix=prefix),
    )
    script = tmp_path / "train.py"
    script.write_text("")
    argv = ["--nnodes", "1:2", "--rdzv-backend", "etcd", "--rdzv-id", "job"]
    argv += [
        "--rdzv-endpoint",
        ",".join(f"{h}:{p}" for h, p in etcd_server.endpoints),
        "--local-addr",
        "127.0.0.1",
    ]
    conf = "keep_alive_interval=10,last_call_timeout=0.2"
    argv += ["--monitor-interval", "10", "--rdzv-conf", conf]
    config = resolve(parse_args([*argv, str(script)], {}), {})
    signals = os.pipe()
    rdzv = dynamic.DynamicRendezvous(
        config, node_id="n", interrupt_fd=signals[0], serve_store=StoreServer
    )
    other = EtcdStore(etcd_server.endpoints, prefix=prefix)
    try:
        assert rdzv.params.store_wakes
        info = rdzv.next_round()
        assert info is not None and rdzv.check() is None  # (the check due now)
        time.sleep(0.3)  # the heartbeat thread is waiting between beats
        cur = other.get(Keys("job").round)
        gen = bump(rdzv.params, cur, reason="scale_up", by="newcomer", expected=2)
        began = time.monotonic()
        assert Driver(other).run(gen)
        readable, _, _ = select.select([rdzv.wakeup_fd()], [], [], 5.0)
        assert readable, "the agent was not woken"
        assert rdzv.check() == "scale_up"
        assert time.monotonic() - began < 5.0
    finally:
        rdzv.shutdown()
        other.close()
        for fd in signals:
            os.close(fd)


def test_a_member_that_never_answers_does_not_lengthen_the_sleep(prefix: str) -> None:
    # (The heartbeat thread sleeps this way between beats: a late beat may cost the node.)
    silent = socket.create_server(("127.0.0.1", 0))  # connects, never answers
    store = EtcdStore([silent.getsockname()[:2]], prefix=prefix, timeout_s=1)
    try:
        began = time.monotonic()
        assert Driver(store).sleep(0.3, until="round") is None
        assert time.monotonic() - began < 1.0
    finally:
        store.close()
        silent.close()
