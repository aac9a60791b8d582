"""Riding out a store outage: the pure window and backoff, the shared health record and its
events, the protocol pieces a retry relies on, and DynamicRendezvous against a store that
fails on cue (a MemoryStore underneath, real threads and time, windows of seconds)."""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from launcher import events as ev
from launcher.config import RendezvousOptions, parse_rdzv_conf
from launcher.errors import ConfigError, RendezvousConnectionError
from launcher.flags import parse_args
from launcher.rendezvous import dynamic
from launcher.rendezvous.driver import Driver
from launcher.rendezvous.health import StoreHealth
from launcher.rendezvous.state import (
    DEFAULT_WINDOW_S,
    Add,
    Assignment,
    Keys,
    Outage,
    Params,
    Set,
    WatchState,
    backoff_s,
    conclude,
    heartbeat,
    is_write,
    retire,
)
from launcher.rendezvous.store import MemoryStore
from launcher.resolve import resolve
from launcher.tcpstore.server import StoreServer

P = Params(run_id="t", min_nodes=1, max_nodes=2, max_restarts=0)
K = Keys("t")


# -- the window and the backoff (pure) -----------------------------------------------------


def test_backoff_doubles_from_a_tenth_to_two_seconds() -> None:
    assert [backoff_s(n) for n in range(1, 8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert backoff_s(10_000) == 2.0


def test_outage_backs_off_within_the_window_and_gives_up_after_it() -> None:
    outage = Outage(window_s=3.0)
    assert not outage.active and outage.recover(5.0) is None
    assert outage.fail(10.0, "reset") == 0.1 and outage.active
    assert outage.fail(10.1, "reset") == 0.2
    assert outage.fail(12.9, "refused") == pytest.approx(0.1)  # never sleeps past the end
    assert outage.fail(13.0, "refused") is None  # the window (3 s since 10.0) is over
    assert outage.last_error == "refused" and outage.unreachable_s(13.5) == 3.5
    assert outage.recover(13.5) == 3.5 and not outage.active
    assert outage.fail(20.0, "again") == 0.1  # a new outage counts from its own start


def test_window_zero_gives_up_at_the_first_failure() -> None:
    assert Outage(window_s=0.0).fail(1.0, "reset") is None


def test_store_outage_timeout_option() -> None:
    assert RendezvousOptions().store_outage_timeout_s == DEFAULT_WINDOW_S == 30.0
    assert parse_rdzv_conf("store_outage_timeout=5").store_outage_timeout_s == 5.0
    assert parse_rdzv_conf("store_outage_timeout=0").store_outage_timeout_s == 0.0
    with pytest.raises(ConfigError, match="non-negative"):
        parse_rdzv_conf("store_outage_timeout=-1")
    with pytest.raises(ConfigError, match="must be positive"):
        parse_rdzv_conf("read_timeout=0")  # 0 still means nothing for the other keys


# -- the shared health record ----------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def emit(self, name: str, **fields: Any) -> None:
        self.seen.append((name, fields))


def test_health_emits_lost_once_and_restored_with_the_duration() -> None:
    now = [100.0]
    sink = Sink()
    health = StoreHealth(
        window_s=30, events=sink, run_id="job", endpoint="h:29400", clock=lambda: now[0]
    )
    health.answered()
    assert sink.seen == []
    err = RendezvousConnectionError("store operation failed at h:29400: Connection reset")
    assert health.failed(err) == 0.1
    now[0] = 104.0
    assert health.failed(err) == 0.2
    now[0] = 110.5
    health.answered()
    health.answered()
    assert sink.seen == [
        (ev.RDZV_STORE_LOST, {"error": err.problem, "window_s": 30}),
        (ev.RDZV_STORE_RESTORED, {"outage_s": 10.5, "failures": 2}),
    ]


def test_give_up_is_one_line_naming_the_endpoint_and_the_window() -> None:
    now = [0.0]
    health = StoreHealth(
        window_s=30, events=Sink(), run_id="job", endpoint="h:29400", clock=lambda: now[0]
    )
    health.failed(RendezvousConnectionError("store operation failed at h:29400: reset"))
    now[0] = 30.2
    assert health.failed(RendezvousConnectionError("store operation failed at h:29400: x")) is None
    text = str(health.give_up())
    assert "\n" not in text
    assert text.startswith("rendezvous: store unreachable for 30 s (store_outage_timeout=30 s)")
    assert (
        "last error: store operation failed at h:29400: x" in text
        and "[run job at h:29400]" in text
    )


# -- protocol pieces a retry relies on -------------------------------------------------------


def run(store: MemoryStore, gen: Any, times: Iterator[float] | None = None) -> Any:
    clock = (lambda: next(times)) if times is not None else time.monotonic
    return Driver(store, clock=clock).run(gen)


def test_retire_marks_the_old_id_left_and_says_whether_peers_declared_it_dead() -> None:
    store = MemoryStore()
    assert run(store, retire(P, "a")) is False and store.get(K.dead("a")) == "left"
    assert run(store, retire(P, "a")) is False  # re-running it is harmless
    store.set(K.dead("b"), "lost")
    assert run(store, retire(P, "b")) is True and store.get(K.dead("b")) == "lost"


def _assignment(size: int = 2) -> Assignment:
    return Assignment(
        round=0,
        group_rank=0,
        group_world_size=size,
        base_rank=0,
        world_size=size,
        master_addr="a",
        master_port=1,
        restart_count=0,
        reason="initial",
        charged=False,
    )


def test_conclude_counts_once_even_when_re_run() -> None:
    store = MemoryStore()
    store.set(K.done, "succeeded")  # so the wait ends at once
    a = _assignment()
    assert run(store, conclude(P, a, until=1e9)) == "succeeded"
    assert run(store, conclude(P, a, until=1e9, counted=True)) == "succeeded"
    assert store.get(K.r(0, "succeeded")) == "1"


def test_a_stalled_watcher_does_not_declare_its_successor_dead() -> None:
    """A store outage stalls every node's beats: a watcher that could not look either must
    not blame the node it watches once the store is back."""
    store = MemoryStore()
    watch = WatchState(round=0, group_world_size=2, watched="b")

    def tick(t: float) -> Any:
        return run(store, heartbeat(P, "a", watch, now=t), itertools.repeat(t))

    assert tick(0.0) is None
    store.set(K.hb("b"), "1")
    assert tick(1.0) is None
    # The store was out for 10 s (no look); "b" has not beaten again yet.
    assert tick(11.0) is None and store.get(K.dead("b")) is None
    # Looking every second from then on, 3 s of silence is a lost node, as ever.
    assert tick(12.0) is None and tick(13.0) is None
    assert tick(14.0) == "node_lost" and store.get(K.dead("b")) == "lost"


def _slow_tick(store: MemoryStore, watch: WatchState, start: float, op_s: float) -> Any:
    """One heartbeat of watcher "a" whose every store operation takes `op_s` seconds."""
    times = itertools.count(start + op_s, op_s)
    return run(store, heartbeat(P, "a", watch, now=start), times)


def test_a_slow_store_is_no_stall_and_no_silence() -> None:
    """Under a loaded store every tick is slow, the watched node's beats too (one every
    2.8 s here, against a 3 s window): the watcher neither resets its count on every look
    (the gap between its reads includes its own slow tick) nor blames a live node whose
    beat fell just outside two looks. A node that stopped beating is still declared."""
    store = MemoryStore()
    watch = WatchState(round=0, group_world_size=2, watched="b")
    beats = [0.5 + 2.8 * i for i in range(20)]  # when "b"'s beats land
    start, seen, news = 0.0, 0, None
    while start < 40.0 and news is None:
        due = sum(1 for t in beats if t <= start + 0.9)  # the read is the 3rd op of 4
        if due > seen:
            store.set(K.hb("b"), str(due))
        seen = due
        news = _slow_tick(store, watch, start, op_s=0.3)
        start += 1.0 + 1.2  # the interval, then the tick's own 4 operations
    assert news is None and store.get(K.dead("b")) is None  # "b" beat throughout
    assert start >= 40.0
    while news is None and start < 60.0:  # "b" is gone: no more beats
        news = _slow_tick(store, watch, start, op_s=0.3)
        start += 2.2
    assert news == "node_lost" and store.get(K.dead("b")) == "lost"
    assert start < 40.0 + 4 * 2.2 + 3.0  # within a few looks of the window


class Flaky(MemoryStore):
    """A MemoryStore whose operations raise like a reset TCPStore while `down` is set;
    `lose_reply_of` makes the next call of that method apply and then raise (a lost reply)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.lose_reply_of = ""

    def _call(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        if self.down:
            raise RuntimeError("Connection reset by peer")
        result = fn(*args)
        if self.lose_reply_of == name:
            self.lose_reply_of = ""
            raise RuntimeError("Connection reset by peer (after the write)")
        return result

    def get(self, key: str) -> str | None:
        return self._call("get", super().get, key)  # type: ignore[no-any-return]

    def multi_get(self, keys: Sequence[str]) -> list[str | None]:
        return self._call("multi_get", super().multi_get, keys)  # type: ignore[no-any-return]

    def set(self, key: str, value: str) -> None:
        self._call("set", super().set, key, value)

    def multi_set(self, items: Sequence[tuple[str, str]]) -> None:
        self._call("multi_set", super().multi_set, items)

    def compare_set(self, key: str, expected: str | None, value: str) -> str:
        return self._call("compare_set", super().compare_set, key, expected, value)  # type: ignore[no-any-return]

    def add(self, key: str, delta: int) -> int:
        return self._call("add", super().add, key, delta)  # type: ignore[no-any-return]


def test_driver_tells_whether_a_failed_step_sent_a_write() -> None:
    store = Flaky()
    driver = Driver(store)

    def step() -> Any:
        yield Add(K.hb("a"), 0)
        yield Set(K.done, "x")
        yield Add(K.hb("a"), 0)

    store.lose_reply_of = "set"
    with pytest.raises(RendezvousConnectionError, match="after the write"):
        driver.run(step())
    assert (driver.answered, driver.wrote) == (1, True) and store.get(K.done) == "x"
    assert not is_write(Add("k", 0)) and is_write(Add("k", 1))


# -- DynamicRendezvous against a store that fails on cue -------------------------------------


@pytest.fixture
def rendezvous(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[..., tuple[dynamic.DynamicRendezvous, Flaky, Sink]]]:
    made: list[dynamic.DynamicRendezvous] = []

    def make(conf: str, nnodes: str = "1") -> tuple[dynamic.DynamicRendezvous, Flaky, Sink]:
        store, sink = Flaky(), Sink()
        monkeypatch.setattr(dynamic, "open_store", lambda config, on_drop=None: lambda: store)
        script = tmp_path / "train.py"
        script.write_text("")
        argv = ["--nnodes", nnodes, "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:9"]
        argv += ["--rdzv-id", "job", "--local-addr", "127.0.0.1", "--rdzv-conf", conf]
        config = resolve(parse_args([*argv, str(script)], {}), {})
        rdzv = dynamic.DynamicRendezvous(
            config, node_id="n", interrupt_fd=pipe[0], serve_store=StoreServer, events=sink
        )
        made.append(rdzv)
        return rdzv, store, sink

    pipe = os.pipe()  # the agent's signal pipe: never written here
    yield make
    for rdzv in made:
        rdzv.shutdown()
    os.close(pipe[0])
    os.close(pipe[1])


def test_a_join_whose_write_lost_its_reply_rejoins_under_a_new_id(
    rendezvous: Callable[..., tuple[dynamic.DynamicRendezvous, Flaky, Sink]],
) -> None:
    # 1:2 nodes: the new id's slot and the old one's fill the round, which closes at once
    # (with room for one, the old slot would hold it until a spare's assign_timeout).
    rdzv, store, sink = rendezvous("store_outage_timeout=5", nnodes="1:2")
    first_id = rdzv.node_id
    store.lose_reply_of = "set"  # the descriptor lands, its reply does not
    info = rdzv.next_round()
    assert info is not None and info.group_world_size == 1
    assert rdzv.node_id != first_id and store.get(Keys("job").dead(first_id)) == "left"
    # The old id's slot was left out, never made a member: only the new id is.
    assert info.members == (rdzv.node_id,)
    assert [name for name, _ in sink.seen] == [ev.RDZV_STORE_LOST, ev.RDZV_STORE_RESTORED]


def test_check_rides_out_a_short_outage_and_gives_up_after_the_window(
    rendezvous: Callable[..., tuple[dynamic.DynamicRendezvous, Flaky, Sink]],
) -> None:
    rdzv, store, sink = rendezvous("store_outage_timeout=1.5,keep_alive_interval=0.2")
    assert rdzv.next_round() is not None
    store.down = True
    began = time.monotonic()
    while time.monotonic() - began < 0.6:
        assert rdzv.check() is None  # the workers would keep running
        time.sleep(0.05)
    store.down = False
    deadline = time.monotonic() + 5
    while not any(name == ev.RDZV_STORE_RESTORED for name, _ in sink.seen):
        assert rdzv.check() is None and time.monotonic() < deadline
        time.sleep(0.05)
    assert [name for name, _ in sink.seen] == [ev.RDZV_STORE_LOST, ev.RDZV_STORE_RESTORED]
    assert 0.5 < sink.seen[1][1]["outage_s"] < 3

    store.down = True
    began = time.monotonic()
    with pytest.raises(RendezvousConnectionError) as err:
        while time.monotonic() - began < 10:
            rdzv.check()
            time.sleep(0.05)
    assert 1.5 <= time.monotonic() - began < 4
    assert re.search(r"store unreachable for \d s \(store_outage_timeout=1.5 s\)", str(err.value))
    assert "Connection reset by peer" in str(err.value)
