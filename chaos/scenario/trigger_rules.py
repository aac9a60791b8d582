"""The rules for a fault's `trigger` (pure; see docs/scenarios.md, "Triggers"), and the
`Context` every fault rule checks against."""

from __future__ import annotations

from dataclasses import dataclass

from chaos.scenario.document import Invalid, Value, clip, join, suggest
from chaos.scenario.schema import TRIGGER_KINDS, Topology, Trigger, Workload
from launcher.events import KNOWN_EVENTS

TRIGGER_KEYS = (
    "kind", "at_s", "after_step", "step", "rank", "on_event", "event", "occurrence", "random",
    "window_s",
)  # fmt: skip
# The short form names the kind by its main field (`{at_s: 5}`); the long form spells the
# dataclass (`{kind: after_step, step: 10}`). Both read the same.
_KIND_OF = {
    "at_s": "at_s", "after_step": "after_step", "step": "after_step", "on_event": "on_event",
    "event": "on_event", "random": "random", "window_s": "random",
}  # fmt: skip
_TRIGGER_FIELDS = {
    "at_s": ("at_s",),
    "after_step": ("after_step", "step", "rank"),
    "on_event": ("on_event", "event", "occurrence"),
    "random": ("random", "window_s"),
}
TRIGGER_HELP = "a trigger: {at_s: S}, {after_step: N}, {on_event: NAME} or {random: [LOW, HIGH]}"


@dataclass(frozen=True, kw_only=True)
class Context:
    """What fault rules check against: the topology, the workload and the run's timeout."""

    topology: Topology
    workload: Workload
    timeout_s: float

    @property
    def total_nodes(self) -> int:
        return self.topology.nodes + self.topology.spares

    @property
    def max_world(self) -> int:
        # The largest world the job can form: it never exceeds max_nodes nor the nodes we have.
        max_nodes = self.topology.max_nodes or self.total_nodes
        return min(max_nodes, self.total_nodes) * self.topology.nproc_per_node


def build_trigger(value: Value, ctx: Context) -> Trigger:
    f = value.fields(TRIGGER_KEYS, what=TRIGGER_HELP)
    found = sorted({_KIND_OF[key] for key in f if key in _KIND_OF}, key=TRIGGER_KINDS.index)
    explicit = None
    if (kind_v := f.get("kind")) is not None:
        explicit = kind_v.choice(TRIGGER_KINDS, what="a trigger kind, one of")
    if len(found) > 1:
        keys = [key for key in f if key in _KIND_OF]
        f.error(keys[1], f"a trigger fires on one condition; got both {keys[0]} and {keys[1]}")
    if not found:
        if explicit is not None:
            raise Invalid(
                f.line, join(f.path, explicit), f"missing; a trigger of kind {explicit} needs it"
            )
        value.fail(TRIGGER_HELP)
    kind = found[0]
    if explicit is not None and explicit != kind:
        f.error("kind", f"kind {explicit} does not match the {kind} field")
    main = [key for key in f if _KIND_OF.get(key) == kind]
    if len(main) > 1:
        f.error(main[1], f"{main[0]} and {main[1]} are the same field; give one")
    for key in f:
        if key != "kind" and key not in _TRIGGER_FIELDS[kind]:
            fields = ", ".join(k for k in _TRIGGER_FIELDS[kind] if k not in ("step", "event"))
            f.error(key, f"a {kind} trigger takes no {key}; its fields are: {fields}")
    main_v = f.need(main[0], TRIGGER_HELP)
    if kind == "at_s":
        at = main_v.number(low=0.0)
        if at >= ctx.timeout_s:
            main_v.error(f"expected a time before timeout_s ({ctx.timeout_s:g}), got {at:g}")
        return Trigger(kind=kind, at_s=at)
    if kind == "after_step":
        steps = ctx.workload.steps
        step = main_v.integer(
            low=1, high=steps, what="a step", why=f" (the workload runs steps 1..{steps})"
        )
        rank = 0
        if (rank_v := f.get("rank")) is not None:
            rank = rank_v.integer(low=0, high=ctx.max_world - 1, what="a global rank")
        return Trigger(kind=kind, step=step, rank=rank)
    if kind == "on_event":
        event = main_v.text(what="a launcher event name")
        if event not in KNOWN_EVENTS:
            main_v.error(
                f"expected a launcher event name (see docs/event-log.md), got "
                f"{clip(repr(event))}{suggest(event, sorted(KNOWN_EVENTS))}"
            )
        occurrence = 1
        if (occ_v := f.get("occurrence")) is not None:
            occurrence = occ_v.integer(low=1, high=10_000)
        return Trigger(kind=kind, event=event, occurrence=occurrence)
    return Trigger(kind=kind, window_s=_window(main_v, ctx))


def _window(value: Value, ctx: Context) -> tuple[float, float]:
    """`[2, 8]`, `"2..8"` or `{min: 2, max: 8}`: seconds after the start, low <= high."""
    expected = "a window of seconds like [2, 8], '2..8' or {min: 2, max: 8}"
    node = value.node
    if node.kind == "seq":
        items = value.items()
        if len(items) != 2:
            value.fail(expected)
        low, high = (item.number(low=0.0) for item in items)
    elif node.kind == "map":
        f = value.fields(("min", "max"), what=expected)
        low = f.need("min", "seconds").number(low=0.0)
        high = f.need("max", "seconds").number(low=0.0)
    else:
        parts = value.text(what=expected).split("..")
        try:
            low, high = (float(part) for part in parts)
        except ValueError:
            value.fail(expected)
        if not 0 <= low <= high < float("inf"):
            value.fail(f"{expected}, with 0 <= low")
    if low > high:
        value.error(f"expected low <= high, got {low:g}..{high:g}")
    if high >= ctx.timeout_s:
        value.error(
            f"expected a window ending before timeout_s ({ctx.timeout_s:g}), got {low:g}..{high:g}"
        )
    return (low, high)


def step_range(value: Value, ctx: Context) -> tuple[int, int]:
    """`[a, b]`, `"a..b"` or `{min: a, max: b}`: workload steps, 1 <= a <= b <= steps."""
    steps = ctx.workload.steps
    expected = f"a range of steps like [5, 20], '5..20' or {{min: 5, max: 20}} within 1..{steps}"
    node = value.node
    if node.kind == "seq":
        items = value.items()
        if len(items) != 2:
            value.fail(expected)
        low, high = (item.integer(low=1, high=steps, what="a step") for item in items)
    elif node.kind == "map":
        f = value.fields(("min", "max"), what=expected)
        low = f.need("min", "a step").integer(low=1, high=steps, what="a step")
        high = f.need("max", "a step").integer(low=1, high=steps, what="a step")
    else:
        parts = value.text(what=expected).split("..")
        if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
            value.fail(expected)
        low, high = (int(part) for part in parts)
        if not 1 <= low <= steps or not 1 <= high <= steps:
            value.fail(expected)
    if low > high:
        value.error(f"expected low <= high, got {low}..{high}")
    return (low, high)
