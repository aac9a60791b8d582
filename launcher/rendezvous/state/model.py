"""The rendezvous protocol, as a pure core: no sockets, no clocks, no sleeps.

Each protocol step is a generator. It yields store operations (and `Sleep`s) as values;
the driver performs them and sends back `(reply, now)`, where `now` is the caller's
monotonic clock. The real agent drives it against TCPStore or etcd; the simulator drives
the very same generators against a simulated store on a virtual clock.

Keys, all under `rdzv/<run_id>/` (values are JSON or plain strings, never pickles):

    round               "<r>:<writer>" the round now forming or running (CAS to bump);
                        <writer> is "<node id>+<reason>" (round 0: the first joiner's id)
    r<r>/seq            counter: join order; slot = value - 1
    r<r>/node/<slot>    the joiner's NodeInfo
    r<r>/bump/<writer>  why round r exists {reason, by, detail, expected}: written by each
                        would-be bumper before its CAS on `round`; the one that counts is
                        the writer named in the round value ("<r>:<writer>")
    r<r>/expected       counter: lowered (negative adds) by watchers that declare a joiner
                        dead while round r forms; the closer expects record.expected + it
    r<r>/close          the closing decision {size, closer}; CAS from absent, so exactly one.
                        `size` counts slots; if fewer of them became members (a joiner
                        declared dead meanwhile) the closer adds {members, excluded}
    r<r>/assign/<slot>  the member's Assignment, written by the closer (O(N) once a round),
                        or EXCLUDED: this slot's node was declared dead before the close
    r<r>/succeeded      counter: members whose workers all exited 0
    r<r>/alive          counter: bumped by every member's heartbeat (spares watch it)
    r<r>/dumped         counter: members that took their ranks' stacks after a hang
    r<r>/win/<w>/<g>    group rank g's straggler medians for its w-th window (JSON list);
                        only group rank 0 reads them, to score stragglers job-wide
    last                the last completed round {round, size, restart_count, members}
                        (members: node ids, listed for rounds of up to 64 nodes)
    hb/<node>           heartbeat count of one agent incarnation (only it writes it: Set)
    dead/<node>         "lost" or "left": this incarnation may never join again
    done                "succeeded" or "failed": the job is over (spares exit 0)
    spares              counter: nodes waiting as spares right now
    spares_seen_end     counter: spares that saw `done` (the store host waits for them)

Per node and round a joiner does O(1) operations (plus polling while it waits); only the
closer does O(N) work, once. Liveness is judged by whether a heartbeat counter moved within
the observer's own clock, never by comparing clocks of different machines. Each member
watches one other (its successor in group-rank order), so watching is O(1) per node too.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from typing import Any

# -- operations the core asks the driver to perform ----------------------------------------


@dataclass(frozen=True)
class Get:
    """Reply: the value, or None if the key is absent (never blocks)."""

    key: str


@dataclass(frozen=True)
class MultiGet:
    """Reply: a tuple of values (None for absent keys)."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class Set:
    """Set `key` to `value`."""

    key: str
    value: str


@dataclass(frozen=True)
class MultiSet:
    """Set every `(key, value)` of `items`, in one request."""

    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class CompareSet:
    """Set `key` to `value` only if it currently holds `expected` (None: absent).

    Reply: the value the key holds afterwards. Callers make every `value` unique to the
    writer, so "reply == value" means this writer won.
    """

    key: str
    expected: str | None
    value: str


@dataclass(frozen=True)
class Add:
    """Reply: the counter's new value (an absent counter starts at 0)."""

    key: str
    delta: int


@dataclass(frozen=True)
class Sleep:
    """Reply: None, or with `until` the value written to that key, where the store can
    tell. The driver may return early: on a signal, and with `until` once that key is
    written after the step's last read (etcd's watches), then with the value written if it
    knows it. Waking early is only a hint: a step that is woken without a value reads again,
    so a driver that always sleeps it out is correct, only slower to notice. A Sleep of 0 s
    with `until` starts watching the key now, for the step's later sleeps on it."""

    seconds: float
    until: str | None = None


Op = Get | MultiGet | Set | MultiSet | CompareSet | Add | Sleep


def is_write(op: Op) -> bool:
    """Whether `op` may change the store (reading a counter is `Add(key, 0)`): a step that
    failed after sending one may have been half applied."""
    if isinstance(op, Add):
        return op.delta != 0
    return isinstance(op, (Set, MultiSet, CompareSet))


# What the driver sends back: the reply to the last op and the current monotonic time.
Feedback = tuple[Any, float]
Step = Generator[Op, Feedback, Any]


# -- data --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Params:
    """The rendezvous's settings, the same on every node of a job."""

    run_id: str
    min_nodes: int
    max_nodes: int
    max_restarts: int
    join_timeout_s: float = 600.0
    last_call_timeout_s: float = 30.0
    poll_interval_s: float = 0.05
    assign_timeout_s: float = 10.0
    keep_alive_interval_s: float = 1.0
    keep_alive_max_attempt: int = 3
    # The driver ends a Sleep(until=key) when the key is written: a joiner learns of its
    # assignment that way and need not poll at the full rate to learn it soon.
    store_wakes: bool = False
    # static rendezvous: fixed group ranks from --node-rank, no elasticity
    static: bool = False

    @property
    def dead_after_s(self) -> float:
        """How long a node may be silent before its watcher declares it dead."""
        return self.keep_alive_interval_s * self.keep_alive_max_attempt


@dataclass(frozen=True, kw_only=True)
class NodeInfo:
    """What a node tells the others when it joins."""

    node_id: str  # unique per agent incarnation
    addr: str  # what workers use as MASTER_ADDR if this node gets group rank 0
    master_port: int  # the port this agent already holds for the workers' store
    nproc: int
    prev_round: int = -1  # the last round this node was a member of
    prev_group_rank: int = -1
    node_rank: int = -1  # static rendezvous only

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NodeInfo:
        return cls(**json.loads(text))


OK, FAILED = "ok", "failed"


@dataclass(frozen=True, kw_only=True)
class Assignment:
    """A member's place in a completed round."""

    round: int
    group_rank: int
    group_world_size: int
    base_rank: int
    world_size: int
    master_addr: str
    master_port: int
    restart_count: int
    reason: str  # why this round formed: initial, worker_failure, scale_up, node_lost, ...
    charged: bool  # whether forming it used the restart budget
    status: str = OK  # FAILED: the restart budget is spent, every member must stop
    watch: str = ""  # node id of the member this one watches (its successor)
    detail: str = ""  # what caused the round (e.g. the failing worker), for reports
    members: tuple[str, ...] = field(default=())  # filled only for small rounds (<= 64)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Assignment:
        raw = json.loads(text)
        raw["members"] = tuple(raw.get("members", ()))
        return cls(**raw)


# The value of r<r>/assign/<slot> for a joiner the closer left out: it was declared dead
# (dead/<node>) before the round closed. It must rejoin under a new identity.
EXCLUDED = "excluded"


@dataclass(frozen=True, kw_only=True)
class Excluded:
    """This incarnation was declared dead while the round formed, so the closer left it
    out: take a new node id (a dead identity never joins again) and join again."""

    round: int


@dataclass(frozen=True, kw_only=True)
class JobOver:
    """The job ended (succeeded or failed) while this node waited: spares exit 0."""

    outcome: str


class RendezvousTimeout(Exception):
    def __init__(self, *, run_id: str, waited_s: float, joined: int, needed: int) -> None:
        self.run_id, self.waited_s, self.joined, self.needed = run_id, waited_s, joined, needed
        super().__init__(
            f"no round formed within {waited_s:.0f}s: {joined} node(s) joined, {needed} needed"
        )


class Keys:
    def __init__(self, run_id: str) -> None:
        self.prefix = f"rdzv/{run_id}/"

    def __getattr__(self, name: str) -> str:  # round, last, done
        return self.prefix + name

    def r(self, rnd: int, name: str) -> str:
        return f"{self.prefix}r{rnd}/{name}"

    def node(self, rnd: int, slot: int) -> str:
        return f"{self.prefix}r{rnd}/node/{slot}"

    def bump(self, rnd: int, writer: str) -> str:
        return f"{self.prefix}r{rnd}/bump/{writer}"

    def assign(self, rnd: int, slot: int) -> str:
        return f"{self.prefix}r{rnd}/assign/{slot}"

    def hb(self, node_id: str) -> str:
        return f"{self.prefix}hb/{node_id}"

    def dead(self, node_id: str) -> str:
        return f"{self.prefix}dead/{node_id}"


# The keys the store adds to (`Add`): plain decimal integers, never sealed (see signing.py).
COUNTERS = frozenset(
    {"seq", "expected", "succeeded", "released", "alive", "dumped", "spares", "spares_seen_end"}
)


def is_counter(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in COUNTERS


def round_of(value: str | None) -> int:
    return -1 if value is None else int(value.split(":", 1)[0])


MEMBERS_LISTED_UP_TO = 64
