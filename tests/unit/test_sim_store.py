from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from chaos.sim.store import SimStore
from launcher.rendezvous.driver import perform
from launcher.rendezvous.state import Add, CompareSet, Get, Keys, MultiGet, MultiSet, Op, Set
from launcher.rendezvous.store import MemoryStore


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def on_round_key(self, old: int, new: int, value: str) -> None:
        self.seen.append(("round", (old, new, value)))

    def on_close(self, rnd: int, decision: str) -> None:
        self.seen.append(("close", (rnd, decision)))

    def on_dead(self, node_id: str, why: str) -> None:
        self.seen.append(("dead", (node_id, why)))


KEYS = st.sampled_from(["a", "b", "rdzv/sim/round", "rdzv/sim/r0/seq", "c"])
VALUES = st.sampled_from(["1", "2", "0:x", "1:y", "v"])
OPS: st.SearchStrategy[Op] = st.one_of(
    st.builds(Get, KEYS),
    st.builds(Set, KEYS, VALUES),
    st.builds(Add, KEYS, st.integers(-2, 3)),
    st.builds(CompareSet, KEYS, st.none() | VALUES, VALUES),
    st.builds(MultiGet, st.lists(KEYS, max_size=3).map(tuple)),
    st.builds(MultiSet, st.lists(st.tuples(KEYS, VALUES), max_size=3).map(tuple)),
)


@given(st.lists(OPS, max_size=30))
def test_same_replies_as_the_memory_store(ops: list[Op]) -> None:
    # Another run id: these keys are plain keys here, whatever values they get.
    sim, real = SimStore("other", 2, Recorder()), MemoryStore()
    applied = 0
    for index, op in enumerate(ops):
        if isinstance(op, Add) and not _is_int(sim.data.get(op.key)):
            continue  # a counter on a non-number fails in both; not what this checks
        assert sim.apply(op, index % 2)[0] == perform(real, op)
        applied += 1
    assert sim.ops_total == sum(sim.ops) == real.ops == applied
    assert sim.data == real._data


def _is_int(value: str | None) -> bool:
    return value is None or value.lstrip("-").isdigit()


def test_counts_ops_and_bytes_per_node() -> None:
    store = SimStore("sim", 3, Recorder())
    store.apply(Set("key", "value"), 2)
    reply, size = store.apply(Get("key"), 1)
    assert (reply, size) == ("value", 8)
    assert store.ops == [0, 1, 1] and store.bytes == [0, 8, 8]
    assert store.apply(CompareSet("key", "nope", "x"), 0) == ("value", 3 + 4 + 1 + 5)
    assert store.apply(CompareSet("absent", None, "x"), 0)[0] == "x"


def test_tells_the_checker_about_rounds_closes_and_deaths() -> None:
    seen = Recorder()
    store, k = SimStore("sim", 1, seen), Keys("sim")
    store.apply(CompareSet(k.round, None, "0:a"), 0)
    store.apply(CompareSet(k.round, None, "0:b"), 0)  # lost the race: no news
    store.apply(CompareSet(k.round, "0:a", "1:a"), 0)
    store.apply(CompareSet(k.r(1, "close"), None, '{"size": 2, "closer": "a"}'), 0)
    store.apply(Set(k.dead("n1-1"), "lost"), 0)
    assert seen.seen == [
        ("round", (-1, 0, "0:a")),
        ("round", (0, 1, "1:a")),
        ("close", (1, '{"size": 2, "closer": "a"}')),
        ("dead", ("n1-1", "lost")),
    ]
