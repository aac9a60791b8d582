"""Safety, checked at every step (each store write the checker hears of, each assignment
an agent receives), and the liveness bound.

Safety codes (a violation raises SafetyViolation unless its code is in SimConfig.allow):

    duplicate_rank    two node ids hold the same group rank in one round
    two_ranks         one node id holds two group ranks in one round
    disagreement      members of a round disagree on size, world size, MASTER_ADDR/PORT,
                      restart count, status, reason or the member list
    bad_ranks         group ranks outside [0, size), base ranks not contiguous per node in
                      group-rank order, MASTER_ADDR not group rank 0's, a broken watch ring
    world_size        a round outside [min_nodes, max_nodes]
    short_round       a round with fewer members than its close decision said (a slot
                      whose descriptor never came was dropped)
    round_regressed   the round key moved backwards, or an agent got an older round
    dead_member       a node id declared dead before a round closed is a member of it
    bad_exclusion     the closer left out of a round a node id never declared dead
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chaos.sim.config import SimConfig
from launcher.rendezvous.state import Assignment, NodeInfo, check_interval_s

if TYPE_CHECKING:
    from chaos.sim.agent import VirtualAgent
    from chaos.sim.engine import Simulation


class SafetyViolation(AssertionError):
    def __init__(self, code: str, at_s: float, message: str) -> None:
        self.code, self.at_s, self.message = code, at_s, message
        super().__init__(f"[{code}] at t={at_s:.4f}s: {message}")


def liveness_bound_s(cfg: SimConfig) -> float:
    """The documented bound (docs/simulator.md): once the last fault's effects are over
    and at least min_nodes agents live, every live agent runs in one completed round
    (spares aside) within this many virtual seconds.

    The worst chain it covers: the round forming when the faults end may still wait out
    its last call (its joiners saw min_nodes before), its closer may wait assign_timeout
    for the descriptor of a joiner that died, and it may close with members that died
    holding slots; their watchers find them within one detection period; the next round
    has live nodes only, but may overestimate who comes back (a dead node whose watcher
    died too) and wait out its last call as well; resumed (paused) nodes rejoin under new
    ids, a scale-up round more. Each round costs `step`: notice the change, stop workers,
    join, poll.
    """
    detect = cfg.keep_alive_interval_s * (cfg.keep_alive_max_attempt + 1)
    step = check_interval_s(cfg.monitor_interval_s, cfg.max_nodes) + cfg.worker_stop_s + 1.0
    return 2 * cfg.last_call_timeout_s + cfg.assign_timeout_s + detect + 4 * step


def reform_bound_s(cfg: SimConfig) -> float:
    """One crash, nothing else: its watcher notices within keep_alive_max_attempt + 1
    beats, the survivors notice the new round within one round check (a monitor interval,
    longer in a big job: check_interval_s), stop their workers and re-form at once (the
    expected count is known: no last-call wait)."""
    detect = cfg.keep_alive_interval_s * (cfg.keep_alive_max_attempt + 1)
    check = check_interval_s(cfg.monitor_interval_s, cfg.max_nodes)
    return detect + check + cfg.worker_stop_s + 1.0


@dataclass
class RoundRecord:
    round: int
    started_at: float
    ops0: int
    bytes0: int
    node_ops0: list[int]
    node_bytes0: list[int]
    closed_at: float | None = None
    size: int = 0  # members the close decided on: its slots less those left out
    slots: int = 0
    excluded: tuple[str, ...] = ()
    closer: str = ""
    gws: int = 0
    ref: tuple[Any, ...] | None = None
    reason: str = ""
    holders: dict[int, str] = field(default_factory=dict)
    ranks_of: dict[str, int] = field(default_factory=dict)
    seats: dict[int, tuple[str, int, int, int, str]] = field(default_factory=dict)
    received: int = 0
    last_at: float = 0.0
    complete_at: float | None = None
    ops: int = 0
    bytes: int = 0
    max_node_ops: int = 0
    max_node_bytes: int = 0
    wall_s: float = 0.0  # wall-clock seconds into the run when it completed


class Checker:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.cfg = sim.cfg
        self.rounds: dict[int, RoundRecord] = {}
        self.max_round = -1
        self.dead_at: dict[str, float] = {}
        self.last_round: dict[int, int] = {}  # per agent (across its incarnations)
        self.tolerated: dict[str, int] = {}
        self.exits: dict[str, int] = {}
        self.declared_dead = 0
        self.violation: SafetyViolation | None = None

    def fail(self, code: str, message: str) -> None:
        if code in self.cfg.allow:
            self.tolerated[code] = self.tolerated.get(code, 0) + 1
            return
        self.violation = SafetyViolation(code, self.sim.now, message)
        raise self.violation

    # -- the store's writes --------------------------------------------------------------
    def on_round_key(self, old: int, new: int, value: str) -> None:
        if new <= self.max_round:
            self.fail("round_regressed", f"round key {old} -> {value!r}, was at {self.max_round}")
        self.max_round = max(self.max_round, new)
        store = self.sim.store
        self.rounds[new] = RoundRecord(
            round=new,
            started_at=self.sim.now,
            ops0=store.ops_total,
            bytes0=store.bytes_total,
            node_ops0=list(store.ops),
            node_bytes0=list(store.bytes),
        )

    def on_close(self, rnd: int, decision: str) -> None:
        record = self.rounds.get(rnd)
        if record is None:  # a wiped store: the round key was never seen moving here
            self.on_round_key(-1, rnd, f"{rnd}:?")
            record = self.rounds[rnd]
        raw = json.loads(decision)
        if "members" in raw and record.closed_at is not None:
            # The closer's update: fewer slots became members. Named nodes may be left out
            # only if declared dead; a slot whose joiner never described itself within
            # assign_timeout is left out by number (its late joiner reads `excluded`).
            record.excluded = tuple(raw.get("excluded", ()))
            missing = tuple(int(slot) for slot in raw.get("missing", ()))
            record.size = record.slots - len(record.excluded) - len(missing)
            for node_id in record.excluded:
                if node_id not in self.dead_at:
                    self.fail("bad_exclusion", f"round {rnd} left out {node_id}, not dead")
            if int(raw["members"]) != record.size or any(s >= record.slots for s in missing):
                self.fail("bad_exclusion", f"round {rnd}: update {decision} does not add up")
            return
        record.closed_at, record.closer = self.sim.now, raw["closer"]
        record.size = record.slots = int(raw["size"])
        if not self.cfg.min_nodes <= record.size <= self.cfg.max_nodes:
            self.fail("world_size", f"round {rnd} closed with {record.size} nodes")

    def on_dead(self, node_id: str, why: str) -> None:
        self.dead_at.setdefault(node_id, self.sim.now)

    # -- agents ------------------------------------------------------------------------------
    def on_exit(self, agent: VirtualAgent, reason: str) -> None:
        self.exits[reason] = self.exits.get(reason, 0) + 1

    def on_declared_dead(self, agent: VirtualAgent) -> None:
        self.declared_dead += 1

    def on_assignment(self, agent: VirtualAgent, info: NodeInfo, a: Assignment) -> None:
        rnd, g, me = a.round, a.group_rank, info.node_id
        record = self.rounds.get(rnd)
        if record is None:
            self.fail("round_regressed", f"{me} got round {rnd}, which never started")
            return
        cfg = self.cfg
        if record.closed_at is not None and a.group_world_size < record.size:
            # The closer gave up waiting for a slot's descriptor and formed the round
            # without it: smaller than decided, maybe below min_nodes.
            self.fail(
                "short_round",
                f"{me}: round {rnd} has {a.group_world_size} nodes, closed with {record.size}",
            )
        elif not cfg.min_nodes <= a.group_world_size <= cfg.max_nodes:
            self.fail("world_size", f"{me}: round {rnd} has {a.group_world_size} nodes")
        ref = (
            a.group_world_size,
            a.world_size,
            a.master_addr,
            a.master_port,
            a.restart_count,
            a.status,
            a.reason,
            a.charged,
            a.members,
        )
        if record.ref is None:
            record.ref, record.gws, record.reason = ref, a.group_world_size, a.reason
        elif ref != record.ref:
            self.fail("disagreement", f"{me} in round {rnd}: {ref} vs {record.ref}")
        if not 0 <= g < a.group_world_size:
            self.fail("bad_ranks", f"{me}: group rank {g} of {a.group_world_size}")
        holder = record.holders.get(g)
        if holder is not None and holder != me:
            self.fail("duplicate_rank", f"round {rnd} rank {g}: {holder} and {me}")
        held = record.ranks_of.get(me)
        if held is not None and held != g:
            self.fail("two_ranks", f"round {rnd}: {me} holds ranks {held} and {g}")
        if a.members and (g >= len(a.members) or a.members[g] != me):
            self.fail("disagreement", f"round {rnd}: member list {a.members} vs {me}@{g}")
        died = self.dead_at.get(me)
        if died is not None and record.closed_at is not None and died < record.closed_at:
            self.fail(
                "dead_member",
                f"{me} declared dead at {died:.3f}s is in round {rnd} (closed at "
                f"{record.closed_at:.3f}s, rank {g})",
            )
        last = self.last_round.get(agent.index, -1)
        if rnd <= last:
            self.fail("round_regressed", f"node {agent.index} got round {rnd} after {last}")
        self.last_round[agent.index] = rnd
        record.holders[g], record.ranks_of[me] = me, g
        record.seats[g] = (info.addr, info.master_port, info.nproc, a.base_rank, a.watch)
        record.received += 1
        record.last_at = self.sim.now
        if record.received == record.gws:
            self._complete(record)

    def _complete(self, record: RoundRecord) -> None:
        """Every member has its assignment: check the round as a whole, take its cost."""
        n, base = record.gws, 0
        seats = [record.seats[g] for g in range(n)]
        for g, (_, _, nproc, base_rank, watch) in enumerate(seats):
            if base_rank != base:
                self.fail("bad_ranks", f"round {record.round}: rank {g} base {base_rank} != {base}")
            base += nproc
            successor = record.holders[(g + 1) % n]
            if watch != (successor if n > 1 else ""):
                self.fail("bad_ranks", f"round {record.round}: rank {g} watches {watch!r}")
        assert record.ref is not None
        world, master_addr, master_port = record.ref[1], record.ref[2], record.ref[3]
        if base != world or (master_addr, master_port) != seats[0][:2]:
            self.fail("bad_ranks", f"round {record.round}: world {world}, master {master_addr}")
        store, now = self.sim.store, self.sim.now
        record.complete_at = now
        record.wall_s = time.perf_counter() - self.sim.wall_started
        record.ops = store.ops_total - record.ops0
        record.bytes = store.bytes_total - record.bytes0
        record.max_node_ops = max(map(int.__sub__, store.ops, record.node_ops0))
        record.max_node_bytes = max(map(int.__sub__, store.bytes, record.node_bytes0))
        record.node_ops0, record.node_bytes0 = [], []  # free the snapshots
        self.sim.on_round_complete(now)
