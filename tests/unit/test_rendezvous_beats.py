"""Beats and looks on the keep-alive grid (state.phases, state.next_at, beats.py's loop):
the phases a round assigns, and how soon a watcher on the grid declares a dead node."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher.rendezvous.driver import Driver
from launcher.rendezvous.state import Keys, Params, WatchState, beat, look, next_at, phases
from launcher.rendezvous.store import MemoryStore

P = Params(
    run_id="job", min_nodes=1, max_nodes=4, max_restarts=0,
    keep_alive_interval_s=1.0, keep_alive_max_attempt=3,
)  # fmt: skip
K = Keys("job")


@pytest.mark.parametrize("nodes", [1, 2, 3, 7, 100])
def test_beats_spread_evenly_and_each_look_comes_half_an_interval_after_the_beat_it_reads(
    nodes: int,
) -> None:
    beats = [phases(rank, nodes)[0] for rank in range(nodes)]
    assert sorted(beats) == pytest.approx([i / nodes for i in range(nodes)])
    for rank in range(nodes):
        successor_beat = phases((rank + 1) % nodes, nodes)[0]
        look_at = phases(rank, nodes)[1]
        assert (look_at - successor_beat) % 1.0 == pytest.approx(0.5)


@given(
    now=st.floats(min_value=0, max_value=1e7, allow_nan=False),
    phase=st.floats(min_value=0, max_value=0.999),
    interval=st.sampled_from([0.5, 1.0, 5.0]),
)
def test_next_at_is_the_first_slot_after_now(now: float, phase: float, interval: float) -> None:
    due = next_at(now, phase, interval)
    assert now < due <= now + interval + 1e-6
    off_slot = (due / interval - phase) % 1.0  # 0 on the slot (or just under 1: rounding)
    assert min(off_slot, 1.0 - off_slot) < 1e-4


def _run(store: MemoryStore, gen: Any, at: float) -> Any:
    return Driver(store, clock=lambda: at).run(gen)


def _declared_after(death_s: float, *, rtt_s: float, seed: int) -> tuple[float, float]:
    """Member "a" (rank 0 of 2) watches "b" (rank 1), both on the grid; "b" dies at
    `death_s`. Each look ends a random round trip of up to `rtt_s` after its slot. Returns
    (when "a" declared "b" lost, when "b" beat last)."""
    rng = random.Random(seed)
    store = MemoryStore()
    _, look_phase = phases(0, 2)
    b_beat, _ = phases(1, 2)
    watch = WatchState(round=0, group_world_size=2, watched="b", last_change=0.0)
    last_beat = 0.0
    b_at, a_at = next_at(0.0, b_beat, 1.0), next_at(0.0, look_phase, 1.0)
    for _ in range(100):
        if b_at < a_at:
            if b_at < death_s:
                _run(store, beat(P, "b", None, now=b_at), b_at)
                last_beat = b_at
            b_at += 1.0
            continue
        done = a_at + rng.uniform(0.0, rtt_s)
        if _run(store, look(P, "a", watch, now=a_at), done) == "node_lost":
            return done, last_beat
        a_at += 1.0
    raise AssertionError("never declared")


@pytest.mark.parametrize("rtt_s", [0.0, 0.2])
def test_a_watcher_on_the_grid_declares_its_successor_three_missed_beats_after_its_last(
    rtt_s: float,
) -> None:
    """Whenever in the interval it died, the node is declared 3.5 intervals after its last
    beat: half an interval for the look that saw it, then three looks that saw nothing (the
    window is 3 intervals; without the grid it was 3 to 4 after the last beat seen, or up
    to 5 when a look's round trip was quicker than the one that saw the last change)."""
    for i, death in enumerate(d / 10 for d in range(50, 60)):
        declared, last_beat = _declared_after(death, rtt_s=rtt_s, seed=i)
        assert 3.5 <= declared - last_beat <= 3.5 + rtt_s + 1e-9
        assert 2.5 <= declared - death <= 3.5 + rtt_s + 1e-9


def test_a_node_that_beats_late_but_beats_is_never_declared() -> None:
    """Beats up to 0.45 s late (a loaded node) still land before the look that reads them,
    or before the next one: never three looks without one."""
    rng = random.Random(5)
    store = MemoryStore()
    watch = WatchState(round=0, group_world_size=2, watched="b", last_change=0.0)
    events = [(t + 0.5 + rng.uniform(0, 0.45), "b") for t in range(200)]
    events += [(t + 0.0 + rng.uniform(0, 0.2), "a") for t in range(1, 200)]
    for t, who in sorted(events):
        if who == "b":
            _run(store, beat(P, "b", None, now=t), t)
        else:
            assert _run(store, look(P, "a", watch, now=t), t) is None
    assert store.get(K.dead("b")) is None


def test_a_beat_of_the_first_members_bumps_the_rounds_alive_count() -> None:
    store = MemoryStore()
    first = WatchState(round=3, group_world_size=5, watched="x", beats_alive=True)
    other = WatchState(round=3, group_world_size=5, watched="y", beats_alive=False)
    for watch, me in ((first, "a"), (other, "b"), (first, "a")):
        _run(store, beat(P, me, watch, now=1.0), 1.0)
    assert store.get(K.r(3, "alive")) == "2"
    assert store.get(K.hb("a")) == "1.0" and store.get(K.hb("b")) == "1.0"


def test_every_look_reads_once_and_a_declared_member_learns_it() -> None:
    store = MemoryStore()
    store.set(K.dead("a"), "lost")
    counts = itertools.count()
    driver = Driver(store, clock=lambda: float(next(counts)))
    assert driver.run(look(P, "a", None, now=0.0)) == "declared_dead"
    assert driver.answered == 1

