"""The rules for `faults:` and their triggers (pure; see docs/scenarios.md, "Faults").

Each fault kind takes a fixed set of fields and a trigger takes exactly the fields of its kind:
a field that does not apply is an error rather than ignored, because a scenario that silently
does less than it says is worse than one that does not load.
"""

from __future__ import annotations

import signal
from dataclasses import replace
from typing import TypedDict

from chaos.scenario import link_rules
from chaos.scenario.document import Fields, Invalid, Value, join
from chaos.scenario.schema import (
    DEFAULT_MODES,
    FAULT_KINDS,
    HANG_MODES,
    INTRUDER_ACTIONS,
    INTRUDER_SECRETS,
    PARTITION_MODES,
    SLOW_MODES,
    Fault,
)
from chaos.scenario.trigger_rules import (
    TRIGGER_HELP,
    TRIGGER_KEYS,
    Context,
    build_trigger,
    step_range,
)

RANDOM = "random"  # `rank: random`, `node: random`, `local_rank: random`: drawn by the schedule
DRAWN_ORDER = ("rank", "node", "local_rank")
FAULT_KEYS = (
    "kind", "trigger", "node", "rank", "local_rank", "signal", "exit_code", "exception",
    "duration_s", "groups", "from_store", "mode", "member", "factor", "steps", "period_s",
    "toxic", "attributes", "stream", "toxicity", "rate", "actions", "secret",
)  # fmt: skip
_SLOW_FIELDS = (
    "rank", "node", "local_rank", "mode", "factor", "steps", "duration_s", "period_s",
)  # fmt: skip
# The fields each kind takes besides `kind` and `trigger`.
FAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "kill_worker": ("rank", "node", "local_rank", "signal", "exit_code", "exception"),
    "kill_agent": ("node", "signal"),
    "crash_node": ("node",),
    "pause_node": ("node", "duration_s"),
    "partition": ("node", "groups", "from_store", "mode", "duration_s"),
    "join_node": ("node",),
    "leave_node": ("node",),
    "kill_store_host": ("member",),
    "kill_etcd_member": ("member",),
    "toxic": ("node", "toxic", "attributes", "stream", "toxicity", "duration_s"),
    "slow_link": ("node", "rate", "duration_s"),
    "hang_worker": ("rank", "node", "local_rank", "mode", "duration_s"),
    "slow_worker": _SLOW_FIELDS,
    "intruder": ("actions", "secret"),
}
MAX_FACTOR = 1000.0


class _Targets(TypedDict, total=False):
    """Fault fields read so far; a `random` target is left out and its name put in `drawn`."""

    node: int
    rank: int
    local_rank: int
    signal: str
    exit_code: int
    exception: str
    duration_s: float
    groups: tuple[tuple[int, ...], ...]
    from_store: bool
    mode: str
    member: str
    toxic: str
    attributes: tuple[tuple[str, int], ...]
    stream: str
    toxicity: float
    rate: str
    actions: tuple[str, ...]
    secret: str
    factor: float
    steps: tuple[int, int]
    period_s: float


def build_faults(value: Value | None, ctx: Context) -> tuple[Fault, ...]:
    if value is None:
        return ()
    return tuple(build_fault(item, ctx) for item in value.items(what="a list of faults"))


def build_fault(value: Value, ctx: Context) -> Fault:
    f = value.fields(FAULT_KEYS, what="a fault: a mapping with kind, trigger and a target")
    kind_v = f.need("kind", "a fault kind, one of " + ", ".join(FAULT_KINDS))
    kind = kind_v.choice(FAULT_KINDS, what="a fault kind, one of")
    allowed = FAULT_FIELDS[kind]
    for key in f:
        if key not in ("kind", "trigger") and key not in allowed:
            f.error(key, f"{kind} takes no {key}; its fields are: trigger, {', '.join(allowed)}")
    _check_topology(kind, kind_v, ctx)
    trigger_v = f.need("trigger", TRIGGER_HELP)
    trigger = build_trigger(trigger_v, ctx)
    out = _Targets()
    drawn: list[str] = []
    if kind == "kill_worker":
        _kill_worker(f, ctx, out, drawn)
    elif kind == "hang_worker":
        _worker_target(f, ctx, out, drawn, kind)
        _hang_worker(f, ctx, out)
    elif kind == "slow_worker":
        _worker_target(f, ctx, out, drawn, kind)
        _slow_worker(f, ctx, out)
    elif kind == "partition":
        _partition(f, ctx, out, drawn)
    elif kind == "intruder":
        _intruder(f, out)
    elif kind in ("kill_store_host", "kill_etcd_member"):
        member_v = f.get("member")
        if kind == "kill_etcd_member" and member_v is None:
            member_v = f.need("member", "an etcd member index or 'leader'")
        if member_v is not None and ctx.topology.rdzv_backend != "etcd":
            member_v.error(
                "member needs rdzv_backend: etcd; with c10d the store host is the agent "
                "serving the TCPStore, so give no member"
            )
        if member_v is not None:
            out["member"] = _member(member_v, ctx)
    elif (node := node_index(f.need("node", "a node index"), ctx, kind)) is not None:
        out["node"] = node
    else:
        drawn.append("node")
    if kind == "pause_node":
        out["duration_s"] = _duration(f.need("duration_s", "a pause length in seconds"), ctx)
    if kind == "toxic":
        link_rules.toxic_fields(f, out)  # type: ignore[arg-type]
        if ctx.topology.rdzv_backend == "c10d" and out.get("node", 0) == 0:
            f.error(
                "node",
                "with c10d, node 0 hosts the store and its link never leaves its process: "
                "name another node (not random), or use rdzv_backend: etcd",
            )
    if kind == "slow_link":
        out["rate"] = link_rules.rate(f.need("rate", link_rules.RATE_HELP))
    if kind in ("toxic", "slow_link") and (duration_v := f.get("duration_s")) is not None:
        out["duration_s"] = _duration(duration_v, ctx)
    if kind == "kill_agent" and (signal_v := f.get("signal")) is not None:
        out["signal"] = signal_name(signal_v)
    # `{after_step: N}` on a hang or slow fault: when *that* rank reaches step N.
    rank_fault = kind in ("hang_worker", "slow_worker") and "rank" in out
    if rank_fault and trigger.kind == "after_step" and _no_rank(trigger_v):
        trigger = replace(trigger, rank=out["rank"])
    random_fields = tuple(name for name in DRAWN_ORDER if name in drawn)
    return Fault(kind=kind, trigger=trigger, random_fields=random_fields, **out)


def _check_topology(kind: str, kind_v: Value, ctx: Context) -> None:
    topo = ctx.topology
    if kind == "partition" and topo.backend not in ("netns", "docker"):
        kind_v.error(
            f"partition needs topology.backend netns or docker, got {topo.backend!r} (the local "
            "backend cannot cut links); set topology.backend: netns or run with "
            "`--backend netns` (needs root)"
        )
    if kind == "kill_etcd_member" and topo.rdzv_backend != "etcd":
        kind_v.error(
            f"kill_etcd_member needs topology.rdzv_backend: etcd, got {topo.rdzv_backend!r}"
        )
    if kind == "slow_link" and topo.backend not in ("netns", "docker"):
        kind_v.error(
            f"slow_link needs topology.backend netns or docker, got {topo.backend!r} (tc acts on "
            "a node's own interface); set topology.backend: netns or run with `--backend netns`"
        )
    if kind == "intruder" and topo.backend != "local":
        kind_v.error(
            f"intruder needs topology.backend local, got {topo.backend!r} (the harness writes "
            "to the store on loopback)"
        )
    if kind == "join_node" and topo.spares == 0:
        kind_v.error("join_node needs a spare node to start: set topology.spares >= 1")


def _intruder(f: Fields, out: _Targets) -> None:
    what = "an intruder action, one of " + ", ".join(INTRUDER_ACTIONS)
    actions_v = f.need("actions", "a list of intruder actions: " + ", ".join(INTRUDER_ACTIONS))
    out["actions"] = tuple(v.choice(INTRUDER_ACTIONS, what=what) for v in actions_v.items())
    if not out["actions"]:
        actions_v.error("an intruder needs at least one action")
    secret_v = f.get("secret")
    out["secret"] = "none" if secret_v is None else secret_v.choice(INTRUDER_SECRETS)


def _no_rank(trigger_v: Value) -> bool:
    return "rank" not in trigger_v.fields(TRIGGER_KEYS, what=TRIGGER_HELP)


def _kill_worker(f: Fields, ctx: Context, out: _Targets, drawn: list[str]) -> None:
    _worker_target(f, ctx, out, drawn, "kill_worker")
    given = [key for key in ("signal", "exit_code", "exception") if key in f]
    if len(given) > 1:
        f.error(given[1], f"give one of signal, exit_code or exception, not {' and '.join(given)}")
    if (signal_v := f.get("signal")) is not None:
        out["signal"] = signal_name(signal_v)
    if (code_v := f.get("exit_code")) is not None:
        out["exit_code"] = code_v.integer(low=0, high=255, what="an exit code")
    if (exc_v := f.get("exception")) is not None:
        out["exception"] = exc_v.text(what="an exception message")


def _worker_target(f: Fields, ctx: Context, out: _Targets, drawn: list[str], kind: str) -> None:
    """rank, or node + local_rank (each may be `random`)."""
    rank_v, node_v, local_v = f.get("rank"), f.get("node"), f.get("local_rank")
    if rank_v is not None and (node_v is not None or local_v is not None):
        f.error("rank", "give either rank or node + local_rank, not both")
    if rank_v is not None and _is_random(rank_v):
        drawn.append("rank")
    elif rank_v is not None:
        why = f" (the largest world is {ctx.max_world})"
        out["rank"] = rank_v.integer(low=0, high=ctx.max_world - 1, what="a global rank", why=why)
    elif node_v is not None and local_v is not None:
        if (node := node_index(node_v, ctx, kind)) is not None:
            out["node"] = node
        else:
            drawn.append("node")
        nproc = ctx.topology.nproc_per_node
        if _is_random(local_v):
            drawn.append("local_rank")
        else:
            why = f" (nproc_per_node is {nproc})"
            out["local_rank"] = local_v.integer(low=0, high=nproc - 1, what="a local rank", why=why)
    else:
        missing = "local_rank" if node_v is not None else "node" if local_v is not None else "rank"
        raise Invalid(
            f.line,
            join(f.path, missing),
            f"missing; {kind} needs a target: rank, or node + local_rank",
        )


def _mode(f: Fields, kind: str, modes: tuple[str, ...], what: str) -> str:
    mode_v = f.get("mode")
    return DEFAULT_MODES[kind] if mode_v is None else mode_v.choice(modes, what=what)


def _hang_worker(f: Fields, ctx: Context, out: _Targets) -> None:
    mode = out["mode"] = _mode(f, "hang_worker", HANG_MODES, "a hang mode, one of")
    if (duration_v := f.get("duration_s")) is not None:
        if mode != "sigstop":
            duration_v.error(
                f"a hang_worker in mode {mode} lasts until the launcher stops the rank; "
                "duration_s (when to SIGCONT it) is for mode sigstop"
            )
        out["duration_s"] = _duration(duration_v, ctx)


def _slow_worker(f: Fields, ctx: Context, out: _Targets) -> None:
    mode = out["mode"] = _mode(f, "slow_worker", SLOW_MODES, "a slow mode, one of")
    if mode == "cpu_quota" and ctx.topology.backend != "docker":
        f.error(
            "mode",
            f"mode cpu_quota needs topology.backend docker (a CPU quota on the node's "
            f"container), got {ctx.topology.backend!r}; set topology.backend: docker or run "
            "with `--backend docker`",
        )
    out["factor"] = f.need("factor", "how many times slower, a number > 1").number(
        low=1.0, above=True, high=MAX_FACTOR
    )
    per_mode = {
        "steps": ("compute",),
        "duration_s": ("sigstop", "cpu_quota"),
        "period_s": ("sigstop",),
    }
    for key, modes in per_mode.items():
        if key in f and mode not in modes:
            f.error(key, f"{key} is for slow_worker mode {' or '.join(modes)}, not {mode}")
    if (steps_v := f.get("steps")) is not None:
        out["steps"] = step_range(steps_v, ctx)
    if (duration_v := f.get("duration_s")) is not None:
        out["duration_s"] = _duration(duration_v, ctx)
    if (period_v := f.get("period_s")) is not None:
        out["period_s"] = period_v.number(low=0.01, high=60.0)


def _partition(f: Fields, ctx: Context, out: _Targets, drawn: list[str]) -> None:
    groups_v, node_v = f.get("groups"), f.get("node")
    if groups_v is not None and node_v is not None:
        f.error("groups", "give either node (cut one node off) or groups (split them), not both")
    if groups_v is not None:
        if "from_store" in f:
            f.error("from_store", "from_store cuts one node from the store: give node, not groups")
        out["groups"] = _groups(groups_v, ctx)
    elif node_v is not None:
        if (node := node_index(node_v, ctx, "partition")) is not None:
            out["node"] = node
        else:
            drawn.append("node")
        if (store_v := f.get("from_store")) is not None:
            out["from_store"] = store_v.boolean()
    else:
        raise Invalid(
            f.line, join(f.path, "node"),
            "missing; partition needs node (cut one node off) or groups (split the nodes)",
        )  # fmt: skip
    if (mode_v := f.get("mode")) is not None:
        out["mode"] = mode_v.choice(
            PARTITION_MODES, what="a partition mode (drop: silent, reject: refused), one of"
        )
    if (duration_v := f.get("duration_s")) is not None:
        out["duration_s"] = _duration(duration_v, ctx)


def _groups(value: Value, ctx: Context) -> tuple[tuple[int, ...], ...]:
    what = "a list of node groups, like [[0], [1, 2]]"
    groups = value.items(what=what)
    if len(groups) < 2:
        value.fail(f"{what} (at least two groups)")
    seen: dict[int, str] = {}
    out = []
    for group_v in groups:
        members = group_v.items(what="a list of node indices")
        if not members:
            group_v.fail("a non-empty list of node indices")
        group = []
        for member_v in members:
            node = member_v.integer(
                low=0,
                high=ctx.total_nodes - 1,
                what="a node index",
                why=f" (nodes + spares is {ctx.total_nodes})",
            )
            if node in seen:
                member_v.error(f"node {node} is already in {seen[node]}; groups must not overlap")
            seen[node] = member_v.path
            group.append(node)
        out.append(tuple(group))
    return tuple(out)


def node_index(value: Value, ctx: Context, kind: str) -> int | None:
    """A node index checked against the topology; None for `random` (the schedule draws it)."""
    if _is_random(value):
        return None
    topo = ctx.topology
    if kind == "join_node":
        return value.integer(
            low=topo.nodes,
            high=ctx.total_nodes - 1,
            what="a spare node index",
            why=f" (spares follow the {topo.nodes} initial nodes)",
        )
    return value.integer(
        low=0,
        high=ctx.total_nodes - 1,
        what="a node index",
        why=f" (nodes + spares is {ctx.total_nodes})",
    )


def _is_random(value: Value) -> bool:
    return value.node.kind == "scalar" and value.node.value == RANDOM


def _member(value: Value, ctx: Context) -> str:
    members = ctx.topology.etcd_members
    expected = f"an etcd member index between 0 and {members - 1}, or 'leader'"
    text = value.text(what=expected)
    if text == "leader":
        return text
    if not text.isdigit() or int(text) >= members:
        value.fail(expected)
    return str(int(text))


def _duration(value: Value, ctx: Context) -> float:
    return value.number(
        low=0.0, above=True, high=ctx.timeout_s, why=f" (timeout_s is {ctx.timeout_s:g})"
    )


def signal_name(value: Value) -> str:
    """`SIGKILL`, `KILL`, `kill` or 9 -> "SIGKILL" (the event log's spelling)."""
    expected = "a signal name such as SIGKILL or SIGTERM"
    node = value.node
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        try:
            return signal.Signals(node.value).name
        except ValueError:
            value.fail(expected)
    name = value.text(what=expected).upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name not in signal.Signals.__members__:
        value.fail(expected)
    return signal.Signals[name].name
