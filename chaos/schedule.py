"""The seeded schedule: what each fault hits and when, decided before the run starts.

Pure (no I/O, no clock). Every choice a scenario leaves open, a `random: [low, high]` trigger
time or a `random` target, is drawn here from one `random.Random(seed)`, fault by fault in the
scenario's order, so the same scenario and seed always give the same schedule and a failing run
replays exactly (`chaos run FILE --seed N`). The runner only executes the plan: time-based
faults fire at `fire_at_s`, the others when their step or event is seen.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from chaos.scenario.schema import Fault, Scenario, Topology, Trigger

DRAWN_FIELDS = ("rank", "node", "local_rank")  # the order draws are made in: part of replay


@dataclass(frozen=True, kw_only=True)
class PlannedFault:
    index: int  # position in scenario.faults: history records name faults by it
    fault: Fault  # as written, with `random` targets drawn (random_fields emptied)
    trigger: Trigger  # the fault's trigger, as written
    fire_at_s: float | None  # seconds after the job started; None: fires on a step or event
    heal_at_s: float | None = None  # fire_at_s + duration_s (pause_node, partition)
    drawn: Mapping[str, float | int] = field(default_factory=dict)  # at_s, rank, node, ...

    @property
    def time_based(self) -> bool:
        return self.fire_at_s is not None

    def describe(self) -> str:
        drawn = f" [drawn: {', '.join(f'{k}={v:g}' for k, v in self.drawn.items())}]"
        return f"#{self.index} {describe_trigger(self)}: {describe_fault(self.fault)}" + (
            drawn if self.drawn else ""
        )


@dataclass(frozen=True, kw_only=True)
class Schedule:
    scenario: str
    seed: int
    # Time-based faults by fire time (then index), then step/event faults by index.
    faults: tuple[PlannedFault, ...] = ()

    def timed(self) -> tuple[PlannedFault, ...]:
        return tuple(p for p in self.faults if p.time_based)

    def triggered(self) -> tuple[PlannedFault, ...]:
        return tuple(p for p in self.faults if not p.time_based)

    def by_index(self, index: int) -> PlannedFault:
        for planned in self.faults:
            if planned.index == index:
                return planned
        raise KeyError(index)

    def describe(self) -> str:
        count = len(self.faults)
        head = f"schedule of {self.scenario} (seed {self.seed}): {count} fault{'s'[: count != 1]}"
        return "\n".join([head, *(f"  {p.describe()}" for p in self.faults)])


def make_schedule(scenario: Scenario, seed: int | None = None) -> Schedule:
    """The plan for one run; `seed` (>= 0) overrides the scenario's (`chaos run --seed`)."""
    used = scenario.seed if seed is None else seed
    if used < 0:
        # random.Random(-n) is random.Random(n): two "different" seeds, one schedule.
        raise ValueError(f"seed must be >= 0, got {used}")
    rng = random.Random(used)
    planned = [_plan(i, fault, scenario.topology, rng) for i, fault in enumerate(scenario.faults)]
    timed = sorted((p for p in planned if p.time_based), key=lambda p: (p.fire_at_s, p.index))
    rest = [p for p in planned if not p.time_based]
    return Schedule(scenario=scenario.name, seed=used, faults=(*timed, *rest))


def _plan(index: int, fault: Fault, topo: Topology, rng: random.Random) -> PlannedFault:
    trigger = fault.trigger
    drawn: dict[str, float | int] = {}
    fire_at_s = trigger.at_s if trigger.kind == "at_s" else None
    if trigger.kind == "random" and trigger.window_s is not None:
        low, high = trigger.window_s
        # Rounded to milliseconds: finer than any runner can honour, and it prints exactly.
        fire_at_s = round(rng.uniform(low, high), 3)
        drawn["at_s"] = fire_at_s
    resolved = fault
    for name in DRAWN_FIELDS:
        if name in fault.random_fields:
            low, high = _draw_range(name, fault.kind, topo)
            value = drawn[name] = rng.randint(low, high)
            resolved = replace(
                resolved,
                rank=value if name == "rank" else resolved.rank,
                node=value if name == "node" else resolved.node,
                local_rank=value if name == "local_rank" else resolved.local_rank,
            )
    if fault.random_fields:
        resolved = replace(resolved, random_fields=())
    heal_at_s = None
    if fire_at_s is not None and fault.duration_s is not None:
        heal_at_s = round(fire_at_s + fault.duration_s, 3)
    return PlannedFault(
        index=index, fault=resolved, trigger=trigger, fire_at_s=fire_at_s, heal_at_s=heal_at_s,
        drawn=drawn,
    )  # fmt: skip


def _draw_range(name: str, kind: str, topo: Topology) -> tuple[int, int]:
    """Inclusive bounds of a `random` target: among what exists when the job starts, so the
    drawn target is there unless an earlier fault removed it."""
    if name == "rank":
        return 0, topo.nodes * topo.nproc_per_node - 1
    if name == "local_rank":
        return 0, topo.nproc_per_node - 1
    if kind == "join_node":
        return topo.nodes, topo.nodes + topo.spares - 1
    return 0, topo.nodes - 1


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def describe_trigger(planned: PlannedFault) -> str:
    trigger = planned.trigger
    if trigger.kind == "random" and trigger.window_s is not None:
        low, high = trigger.window_s
        return f"at {planned.fire_at_s:.3f}s (random in {low:g}..{high:g}s)"
    if planned.fire_at_s is not None:
        return f"at {planned.fire_at_s:.3f}s"
    if trigger.kind == "after_step":
        return f"after rank {trigger.rank} reports step {trigger.step}"
    return f"on the {_ordinal(trigger.occurrence)} {trigger.event}"


def describe_fault(fault: Fault) -> str:
    parts = [fault.kind]
    if fault.kind in ("kill_worker", "hang_worker", "slow_worker"):
        if fault.rank is not None:
            parts.append(f"rank {fault.rank}")
        else:
            parts.append(f"node {fault.node} local_rank {fault.local_rank}")
    if fault.kind in ("hang_worker", "slow_worker"):
        parts.append(f"({fault.mode})")
        if fault.factor is not None:
            parts.append(f"{fault.factor:g}x")
        if fault.steps is not None:
            parts.append(f"steps {fault.steps[0]}..{fault.steps[1]}")
    elif fault.kind == "kill_worker":
        if fault.exit_code is not None:
            parts.append(f"(exit code {fault.exit_code})")
        elif fault.exception is not None:
            parts.append(f"(raises {fault.exception!r})")
        else:
            parts.append(f"({fault.signal})")
    elif fault.kind == "partition":
        if fault.groups:
            parts.append(" | ".join(",".join(map(str, g)) for g in fault.groups))
        else:
            where = "the store" if fault.from_store else "all other nodes"
            parts.append(f"node {fault.node} from {where}")
        if fault.mode != "drop":
            parts.append(f"({fault.mode})")
    elif fault.kind in ("kill_store_host", "kill_etcd_member"):
        if fault.member is not None:
            parts.append(f"member {fault.member}")
    else:
        parts.append(f"node {fault.node}")
        if fault.kind == "kill_agent":
            parts.append(f"({fault.signal})")
    if fault.duration_s is not None:
        parts.append(f"for {fault.duration_s:g}s")
    return " ".join(parts)
