"""Running one simulation and what comes out of it: per-round times and costs, the safety
verdict, the liveness verdict against the documented bound, and the wall time."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.sim.agent import JOINING
from chaos.sim.checks import SafetyViolation, reform_bound_s
from chaos.sim.config import SimConfig
from chaos.sim.engine import Simulation
from chaos.sim.faults import format_faults
from launcher.rendezvous.state import Keys, NodeInfo


@dataclass(frozen=True, kw_only=True)
class RoundRow:
    round: int
    reason: str
    size: int
    started_s: float
    completed_s: float | None  # None: some member never got its assignment (it died)
    received: int
    ops: int  # every agent's store ops from the round key moving to completion
    bytes: int
    ops_per_node: float
    bytes_per_node: float
    max_node_ops: int  # the busiest node (the closer: it reads and writes O(N) once)
    max_node_bytes: int
    # Wall-clock seconds into the run when it completed (0: never); not part of equality,
    # so two runs of one seed compare equal.
    wall_s: float = field(compare=False)
    members: tuple[str, ...] = ()  # node ids in group-rank order (small rounds only)
    addrs: tuple[str, ...] = ()
    base_ranks: tuple[int, ...] = ()

    @property
    def duration_s(self) -> float | None:
        return None if self.completed_s is None else self.completed_s - self.started_s


@dataclass(frozen=True, kw_only=True)
class Liveness:
    required: bool  # at least min_nodes agents live after the faults
    held: bool
    quiet_s: float  # when the last fault's effects were over
    bound_s: float
    settled_round: int | None
    settled_s: float | None  # when that round completed
    # A known protocol gap that explains an unsettled end (see _known_gap); liveness is
    # not required of it only where SimConfig.allow names it.
    gap: str = ""


@dataclass(frozen=True, kw_only=True)
class SimResult:
    nodes: int
    min_nodes: int
    max_nodes: int
    seed: int
    faults: str  # resolved: replays the same run with `--faults`
    wall_s: float
    virtual_s: float
    events: int
    ops: int
    bytes: int
    rounds: tuple[RoundRow, ...]
    safety: str  # "ok", or the first violation
    tolerated: dict[str, int]
    liveness: Liveness
    reform_bound_s: float
    steady_ops_per_node_s: float  # while the settled round runs: check_round + heartbeats
    exits: dict[str, int] = field(default_factory=dict)
    declared_dead: int = 0
    secret: bool = False
    store_wakes: bool = False
    forged: int = 0  # values a forge fault wrote
    rejected: int = 0  # reads that found a value failing the secret's check (all agents)
    trace: list[tuple[Any, ...]] | None = None

    @property
    def ok(self) -> bool:
        return self.safety == "ok" and (self.liveness.held or not self.liveness.required)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("trace")
        for row, raw in zip(self.rounds, out["rounds"], strict=True):
            raw["duration_s"] = row.duration_s
        return out


def simulate(cfg: SimConfig) -> SimResult:
    started = time.perf_counter()
    sim = Simulation(cfg)
    safety = "ok"
    try:
        sim.run()
    except SafetyViolation as err:
        safety = str(err)
    wall = time.perf_counter() - started
    return _result(sim, cfg, safety, wall)


def _result(sim: Simulation, cfg: SimConfig, safety: str, wall: float) -> SimResult:
    checker = sim.checker
    rows = []
    for rnd in sorted(checker.rounds):
        rec = checker.rounds[rnd]
        if rec.closed_at is None:
            continue  # bumped, never closed (superseded, or the run ended first)
        done = rec.complete_at is not None
        members = tuple(rec.holders[g] for g in sorted(rec.holders)) if rec.gws <= 64 else ()
        seats = [rec.seats[g] for g in sorted(rec.seats)] if rec.gws <= 64 else []
        if not done:  # cost up to the last assignment seen
            rec.ops, rec.bytes = sim.store.ops_total - rec.ops0, sim.store.bytes_total - rec.bytes0
        size = rec.gws or rec.size
        rows.append(
            RoundRow(
                round=rnd,
                reason=rec.reason,
                size=size,
                started_s=rec.started_at,
                completed_s=rec.complete_at,
                received=rec.received,
                ops=rec.ops,
                bytes=rec.bytes,
                ops_per_node=rec.ops / max(1, size),
                bytes_per_node=rec.bytes / max(1, size),
                max_node_ops=rec.max_node_ops,
                max_node_bytes=rec.max_node_bytes,
                wall_s=rec.wall_s,
                members=members,
                addrs=tuple(s[0] for s in seats),
                base_ranks=tuple(s[3] for s in seats),
            )
        )
    live = sum(1 for a in sim.agents if a.alive)
    settled = sim.converged_round() if safety == "ok" else None
    settled_at = checker.rounds[settled].complete_at if settled is not None else None
    gap = _known_gap(sim) if settled is None else ""
    required = live >= cfg.min_nodes and safety == "ok" and gap not in cfg.allow
    held = settled_at is not None and settled_at <= sim.quiet_s + sim.bound_s
    steady = 0.0
    if settled is not None and settled_at is not None and sim.now > settled_at:
        rec = checker.rounds[settled]
        steady = (sim.store.ops_total - rec.ops0 - rec.ops) / live / (sim.now - settled_at)
    return SimResult(
        nodes=cfg.nodes,
        min_nodes=cfg.min_nodes,
        max_nodes=cfg.max_nodes,
        seed=cfg.seed,
        faults=format_faults(sim.faults),
        wall_s=wall,
        virtual_s=sim.now,
        events=sim.events,
        ops=sim.store.ops_total,
        bytes=sim.store.bytes_total,
        rounds=tuple(rows),
        safety=safety,
        tolerated=dict(checker.tolerated),
        liveness=Liveness(
            required=required,
            held=held,
            quiet_s=sim.quiet_s,
            bound_s=sim.bound_s,
            settled_round=settled,
            settled_s=settled_at,
            gap=gap,
        ),
        reform_bound_s=reform_bound_s(cfg),
        steady_ops_per_node_s=steady,
        exits=dict(checker.exits),
        declared_dead=checker.declared_dead,
        secret=cfg.secret,
        store_wakes=cfg.store_wakes,
        forged=sim.forged,
        rejected=sim.rejected,
        trace=sim.trace,
    )


def _known_gap(sim: Simulation) -> str:
    """Names the known protocol gap an unsettled run ended in, if it is one of them.

    short_round      the current round closed with `size` slots but fewer members (a
                     joiner died between taking its slot and writing its descriptor):
                     newcomers believe the job is fuller than it is
    stranded_joiner  a live agent took a slot in the current round just after it closed
                     with fewer than max_nodes and waits as a spare although there is room
    orphaned_round   every live agent waits as a spare: none is a member of the current
                     round (its members died) and none can close it; nobody watches
    """
    rnd = max(sim.checker.rounds, default=-1)
    record = sim.checker.rounds.get(rnd)
    live = [a for a in sim.agents if a.alive]
    if record is None or not live:
        return ""
    closed = record.closed_at is not None
    if closed and record.gws and record.gws < record.size:
        return "short_round"  # allowed as a safety code, the run also ends unsettled
    keys = Keys(sim.params.run_id)
    slots = {}
    for slot in range(int(sim.store.data.get(keys.r(rnd, "seq"), "0"))):
        raw = sim.store.value(keys.node(rnd, slot))
        if raw is not None and raw.startswith("{"):
            slots[NodeInfo.from_json(raw).node_id] = slot
    limit = record.slots if closed else sim.cfg.max_nodes
    spares = [
        a
        for a in live
        if a.state == JOINING and (slots.get(a.node_id, -1) >= limit or a.node_id not in slots)
    ]
    if closed and record.size < sim.cfg.max_nodes and any(a.node_id in slots for a in spares):
        return "stranded_joiner"
    if len(spares) == len(live) and (closed or all(a.node_id in slots for a in spares)):
        return "orphaned_round"
    return ""
