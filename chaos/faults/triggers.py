"""When each fault fires: its trigger, checked against the clock and what the job wrote.

- `at_s`: that many seconds after the job started (the first agent was launched: history t=0).
- `random`: a time drawn in `window_s` from the run's seed by `chaos.schedule.make_schedule`
  (the one place that draws, targets included), so a seed replays the same schedule.
- `after_step`: once `rank` has reported step >= `step` in the workload's steps.jsonl.
- `on_event`: once the `occurrence`-th distinct occurrence of a launcher event is seen across
  all nodes. Events carrying a `round` count once per round (every node logs the same round
  complete); others count each line.
"""

from __future__ import annotations

from typing import Any

from chaos.scenario.schema import Scenario
from chaos.schedule import PlannedFault, make_schedule
from chaos.topology.view import JobView


def plan(scenario: Scenario, seed: int) -> list[PlannedFault]:
    """The seeded schedule (chaos.schedule): random times and random targets already drawn."""
    return list(make_schedule(scenario, seed).faults)


def occurrences(view: JobView, name: str) -> int:
    seen: set[tuple[Any, ...]] = set()
    for node, event in view.named(name):
        if "round" in event.fields:
            seen.add(("round", event.fields["round"]))
        else:
            seen.add((node, event.pid, event.mono_time))
    return len(seen)


def is_due(planned: PlannedFault, view: JobView, elapsed_s: float) -> bool:
    trigger = planned.trigger
    if planned.fire_at_s is not None:
        return elapsed_s >= planned.fire_at_s
    if trigger.kind == "after_step":
        want = trigger.step or 0
        return any(
            row.get("rank") == trigger.rank and int(row.get("step") or 0) >= want
            for row in view.steps
        )
    if trigger.kind == "on_event" and trigger.event:
        return occurrences(view, trigger.event) >= max(1, trigger.occurrence)
    return False
