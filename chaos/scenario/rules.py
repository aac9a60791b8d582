"""The scenario rules: a parsed document -> a validated Scenario (pure; see docs/scenarios.md).

Sections are read in dependency order, whatever their order in the file: topology first (fault
targets are checked against it), then workload and timeout_s (triggers are checked against
steps and time), then faults, then expect (world sizes and ranks depend on the topology).
"""

from __future__ import annotations

import re
import shlex

from chaos.scenario.document import Fields, Invalid, Node, Value, clip, join
from chaos.scenario.fault_rules import build_faults, signal_name
from chaos.scenario.schema import (
    INJECTED,
    INTRUDER_EXPECTATIONS,
    LAUNCHERS,
    RDZV_BACKENDS,
    RESTART_REASONS,
    TOPOLOGY_BACKENDS,
    Expectations,
    Fault,
    HangExpectation,
    IntRange,
    RootCause,
    Scenario,
    StragglerExpectation,
    Topology,
    Workload,
)
from chaos.scenario.trigger_rules import Context

TOP_KEYS = (
    "name", "description", "seed", "timeout_s", "launcher", "topology", "workload", "faults",
    "expect",
)  # fmt: skip
TOPOLOGY_KEYS = (
    "backend", "nodes", "spares", "nproc_per_node", "nnodes", "min_nodes", "max_nodes",
    "rdzv_backend", "etcd_members", "rdzv_tls", "launcher_args", "image", "rdzv_secret",
)  # fmt: skip
WORKLOAD_KEYS = ("script", "steps", "step_s", "checkpoint_every", "args")
EXPECT_KEYS = (
    "outcome", "failure_reason", "restarts", "restarts_by_reason", "uncharged_scale_events",
    "final_world_size", "rank_invariants", "root_cause", "max_lost_steps", "detect_within_s",
    "recover_within_s", "hang", "straggler", "hygiene", "intruder",
)  # fmt: skip
HANG_KEYS = ("culprits", "detect_within_s", "dumps", "count")
STRAGGLER_KEYS = ("ranks", "section")
ANY = "any"  # `culprits: any`: not checked (where a hang_worker fault would default it)
NONE = "none"  # `straggler: none`: no straggler report at all
ROOT_CAUSE_KEYS = ("rank", "node", "exit_code", "signal")
OUTCOMES = ("succeeded", "failed")
ETCD_MEMBERS = (1, 3, 5)

# Upper bounds: generous for real runs, and they keep a typo like `nodes: 20000` from reaching
# a runner that would try to start that many processes.
MAX_NODES = 1024  # nodes + spares
MAX_NPROC = 1024
MAX_STEPS = 10_000_000
MAX_STEP_S = 3600.0
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_SEED = 2**64 - 1
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # it names the run directory
NNODES = re.compile(r"\s*(\d{1,6})\s*(?::\s*(\d{1,6})\s*)?")
INT_RANGE = re.compile(r"\s*(\d{1,9})\s*\.\.\s*(\d{1,9})\s*")
# Flags the harness derives from the topology for every agent; a scenario that also sets them
# would run something other than what its topology says.
HARNESS_FLAGS = {
    "--nnodes", "--nproc-per-node", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id",
    "--node-rank", "--master-addr", "--master-port", "--standalone", "--event-log",
}  # fmt: skip


def build_scenario(root: Node, *, source: str, backend: str | None = None) -> Scenario:
    top = Value(root, "").fields(
        TOP_KEYS, what="a mapping of scenario fields (name, topology, workload, faults, expect)"
    )
    name_v = top.need("name", "a scenario name")
    name = name_v.text(what="a scenario name")
    if not NAME.fullmatch(name):
        name_v.error(
            "expected a name of letters, digits, '.', '_' or '-' (at most 100, "
            f"starting with a letter or digit), got {clip(repr(name))}"
        )
    description = v.text(empty=True) if (v := top.get("description")) else ""
    seed = v.integer(low=0, high=MAX_SEED, what="a seed") if (v := top.get("seed")) else 0
    timeout_s = 120.0
    if (v := top.get("timeout_s")) is not None:
        timeout_s = v.number(low=0.0, above=True, high=MAX_TIMEOUT_S)
    launcher = v.choice(LAUNCHERS) if (v := top.get("launcher")) else "launcher"
    topology = build_topology(_section(top, "topology", TOPOLOGY_KEYS), backend)
    workload = build_workload(_section(top, "workload", WORKLOAD_KEYS))
    ctx = Context(topology=topology, workload=workload, timeout_s=timeout_s)
    faults = build_faults(top.get("faults"), ctx)
    expect = build_expect(_section(top, "expect", EXPECT_KEYS), ctx, faults)
    return Scenario(
        name=name, description=description, seed=seed, timeout_s=timeout_s, launcher=launcher,
        topology=topology, workload=workload, faults=faults, expect=expect, source=source,
    )  # fmt: skip


def _section(top: Fields, key: str, allowed: tuple[str, ...]) -> Fields:
    """The section's fields; an absent or null section reads as an empty one (all defaults)."""
    value = top.get(key) or Value(Node(line=top.key_line(key), kind="map"), join(top.path, key))
    return value.fields(allowed, what=f"a mapping of {key} fields")


def build_topology(f: Fields, backend: str | None) -> Topology:
    overridden = backend is not None
    if backend is not None:  # `--backend` replaces the scenario's before any rule runs
        if backend not in TOPOLOGY_BACKENDS:
            f.error(
                "backend",
                f"expected one of {', '.join(TOPOLOGY_BACKENDS)}, got "
                f"{clip(repr(backend))} (from --backend)",
            )
    elif (v := f.get("backend")) is not None:
        backend = v.choice(TOPOLOGY_BACKENDS)
    low, high = None, None
    if (v := f.get("nnodes")) is not None:
        for key in ("min_nodes", "max_nodes"):
            if key in f:
                f.error(key, "give either nnodes or min_nodes/max_nodes, not both")
        low, high = _nnodes(v)
    if (v := f.get("min_nodes")) is not None:
        low = v.integer(low=1, high=MAX_NODES)
    if (v := f.get("max_nodes")) is not None:
        high = v.integer(low=1, high=MAX_NODES)
    # torchrun's `--nnodes 2:3` starts two nodes: without `nodes`, start the minimum.
    nodes = 2 if low is None else low
    if (v := f.get("nodes")) is not None:
        nodes = v.integer(low=1, high=MAX_NODES)
    spares = v.integer(low=0, high=MAX_NODES) if (v := f.get("spares")) is not None else 0
    if nodes + spares > MAX_NODES:
        f.error("spares", f"expected nodes + spares <= {MAX_NODES}, got {nodes + spares}")
    min_key = "nnodes" if "nnodes" in f else "min_nodes"
    max_key = "nnodes" if "nnodes" in f else "max_nodes"
    min_nodes = nodes if low is None else low
    max_nodes = nodes + spares if high is None else high
    if min_nodes > nodes:
        f.error(min_key, f"expected min_nodes <= nodes ({nodes}), got {min_nodes}")
    if max_nodes < nodes:
        f.error(max_key, f"expected max_nodes >= nodes ({nodes}), got {max_nodes}")
    nproc = 1
    if (v := f.get("nproc_per_node")) is not None:
        nproc = v.integer(low=1, high=MAX_NPROC)
    rdzv_backend = v.choice(RDZV_BACKENDS) if (v := f.get("rdzv_backend")) else "c10d"
    etcd_members = 1
    if (v := f.get("etcd_members")) is not None:
        etcd_members = v.integer(what="1, 3 or 5 etcd members")
        if etcd_members not in ETCD_MEMBERS:
            v.fail("1, 3 or 5 etcd members")
        if etcd_members != 1 and rdzv_backend != "etcd":
            v.error(f"etcd_members needs rdzv_backend: etcd, got {rdzv_backend!r}")
    rdzv_tls = False
    if (v := f.get("rdzv_tls")) is not None:
        rdzv_tls = v.boolean()
        if rdzv_tls and rdzv_backend != "etcd":
            v.error(f"rdzv_tls needs rdzv_backend: etcd, got {rdzv_backend!r}")
    image = None
    if (v := f.get("image")) is not None:
        image = v.text(what="a docker image name, e.g. myorg/train:1")
        # An image in a docker scenario run elsewhere by --backend is simply not used.
        if not overridden and backend != "docker":
            v.error("image is only for backend: docker (the node image of the docker topology)")
    launcher_args: tuple[str, ...] = ()
    if (v := f.get("launcher_args")) is not None:
        launcher_args = _words(v)
        for i, arg in enumerate(launcher_args):
            flag = arg.split("=", 1)[0].replace("_", "-")
            if flag in HARNESS_FLAGS:
                raise Invalid(
                    v.line,
                    join(v.path, i),
                    f"{arg!r} is set by the harness from "
                    "the topology; use the topology fields instead",
                )
    rdzv_secret = v.boolean() if (v := f.get("rdzv_secret")) is not None else False
    return Topology(
        backend=backend or "local", nodes=nodes, spares=spares, nproc_per_node=nproc,
        min_nodes=min_nodes, max_nodes=max_nodes, rdzv_backend=rdzv_backend,
        etcd_members=etcd_members, rdzv_tls=rdzv_tls, launcher_args=launcher_args, image=image,
        rdzv_secret=rdzv_secret,
    )  # fmt: skip


def _nnodes(value: Value) -> tuple[int, int]:
    """`4` or `"2:3"`; unquoted `2:3` is YAML 1.1's base-60 integer 123, so read the text."""
    expected = "a node count N or a range MIN:MAX like '2:3'"
    node = value.node
    match = NNODES.fullmatch(node.raw) if node.kind == "scalar" and node.value is not None else None
    if match is None or isinstance(node.value, bool | float):
        value.fail(expected)
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if not 1 <= low <= high <= MAX_NODES:
        value.error(f"expected {expected} with 1 <= MIN <= MAX <= {MAX_NODES}, got {node.raw!r}")
    return low, high


def _words(value: Value) -> tuple[str, ...]:
    """A list of arguments, or one string split like a shell would (`"--max-restarts 3"`)."""
    if value.node.kind == "seq":
        return tuple(item.text(what="an argument", empty=True) for item in value.items())
    text = value.text(what="a list of arguments or a string of them", empty=True)
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:  # an unbalanced quote
        value.error(f"expected shell-style arguments, got {clip(repr(text))} ({exc})")


def build_workload(f: Fields) -> Workload:
    script = v.text(what="a script path") if (v := f.get("script")) else Workload().script
    steps = v.integer(low=1, high=MAX_STEPS) if (v := f.get("steps")) is not None else 40
    step_s = 0.1
    if (v := f.get("step_s")) is not None:
        step_s = v.number(low=0.0, high=MAX_STEP_S)
    every = 5
    if (v := f.get("checkpoint_every")) is not None:
        every = v.integer(low=1, high=MAX_STEPS)  # the workload computes step % every
    args = _words(v) if (v := f.get("args")) is not None else ()
    return Workload(script=script, steps=steps, step_s=step_s, checkpoint_every=every, args=args)


def build_expect(f: Fields, ctx: Context, faults: tuple[Fault, ...] = ()) -> Expectations:
    topo = ctx.topology
    outcome = v.choice(OUTCOMES) if (v := f.get("outcome")) else "succeeded"
    failure_reason = None
    if (v := f.get("failure_reason")) is not None:
        if outcome != "failed":
            f.error("failure_reason", "failure_reason needs outcome: failed")
        failure_reason = v.text(what="a failure reason")
    restarts = int_range(v) if (v := f.get("restarts")) is not None else None
    by_reason: dict[str, IntRange] = {}
    if (v := f.get("restarts_by_reason")) is not None:
        reasons = v.fields(RESTART_REASONS, what="a mapping of restart reason to a count")
        for reason in reasons:
            by_reason[reason] = int_range(reasons.need(reason, "a count or a range"))
    final_world_size = None
    if (v := f.get("final_world_size")) is not None:
        nproc = topo.nproc_per_node
        low = (topo.min_nodes or topo.nodes) * nproc
        final_world_size = v.integer(low=low, high=ctx.max_world, what="a world size")
        if final_world_size % nproc:
            v.fail(f"a multiple of nproc_per_node ({nproc})")
    root_cause = _root_cause(v, ctx) if (v := f.get("root_cause")) is not None else None
    max_lost = None
    if (v := f.get("max_lost_steps")) is not None:
        max_lost = v.integer(low=0, high=MAX_STEPS)
    within: dict[str, float | None] = {}
    for key in ("detect_within_s", "recover_within_s"):
        v = f.get(key)
        within[key] = None if v is None else v.number(low=0.0, above=True, high=MAX_TIMEOUT_S)
    hung = any(fault.kind == "hang_worker" for fault in faults)
    hang = _hang(v, ctx, hung=hung) if (v := f.get("hang")) is not None else None
    straggler = None
    if (v := f.get("straggler")) is not None:
        slowed = any(fault.kind == "slow_worker" for fault in faults)
        straggler = _straggler(v, ctx, slowed=slowed)
    flags = {
        key: v.boolean() if (v := f.get(key)) is not None else True
        for key in ("uncharged_scale_events", "rank_invariants", "hygiene")
    }
    intruded = any(fault.kind == "intruder" for fault in faults)
    intruder = "refused" if intruded and topo.rdzv_secret else None
    if (v := f.get("intruder")) is not None:
        if not intruded:
            v.error("expect.intruder needs an intruder fault")
        intruder = v.choice(INTRUDER_EXPECTATIONS, what="what the job makes of it, one of")
    return Expectations(
        outcome=outcome, failure_reason=failure_reason, restarts=restarts,
        restarts_by_reason=by_reason, final_world_size=final_world_size,
        root_cause=root_cause, max_lost_steps=max_lost,
        detect_within_s=within["detect_within_s"], recover_within_s=within["recover_within_s"],
        uncharged_scale_events=flags["uncharged_scale_events"],
        rank_invariants=flags["rank_invariants"], hang=hang, straggler=straggler,
        hygiene=flags["hygiene"], intruder=intruder,
    )  # fmt: skip


def int_range(value: Value) -> IntRange:
    """A count `2`, a range `"1..3"` or `{min: 1, max: 3}`."""
    expected = "a count or a range like 1..3 or {min: 1, max: 3}"
    node = value.node
    if node.kind == "map":
        f = value.fields(("min", "max"), what=expected)
        low = f.need("min", "a count").integer(low=0)
        high = f.need("max", "a count").integer(low=0)
    elif isinstance(node.value, int) and not isinstance(node.value, bool):
        low = high = value.integer(low=0, what="a count >= 0 or a range like 1..3")
    else:
        match = INT_RANGE.fullmatch(node.raw) if node.kind == "scalar" else None
        if match is None or not isinstance(node.value, str):
            value.fail(expected)
        low, high = int(match.group(1)), int(match.group(2))
    if low > high:
        value.error(f"expected low <= high, got {low}..{high}")
    return IntRange(low=low, high=high)


def _ranks(value: Value, ctx: Context, what: str) -> tuple[int, ...]:
    ranks: list[int] = []
    why = f" (the largest world is {ctx.max_world})"
    for item in value.items(what=what):
        rank = item.integer(low=0, high=ctx.max_world - 1, what="a global rank", why=why)
        if rank in ranks:
            item.error(f"rank {rank} is listed twice")
        ranks.append(rank)
    return tuple(sorted(ranks))  # the launcher reports them sorted


def _injected(value: Value, *, words: tuple[str, ...], kind: str, present: bool) -> str | None:
    """One of `words` written as text (None when the value is not text); `injected` needs a
    fault of `kind` to take the ranks from."""
    if value.node.kind != "scalar" or not isinstance(value.node.value, str):
        return None
    word = value.choice(words, what="a list of global ranks, or one of")
    if word == INJECTED and not present:
        value.error(f"'injected' names the ranks of the scenario's {kind} faults; it has none")
    return word


def _hang(value: Value, ctx: Context, *, hung: bool = False) -> HangExpectation:
    f = value.fields(HANG_KEYS, what="a mapping with culprits, detect_within_s, dumps or count")
    # A hang_worker fault says whom to blame: check that unless the scenario says otherwise.
    culprits: tuple[int, ...] | str | None = INJECTED if hung else None
    if (v := f.get("culprits")) is not None:
        word = _injected(v, words=(INJECTED, ANY), kind="hang_worker", present=hung)
        if word is not None:
            culprits = None if word == ANY else word
        else:
            culprits = _ranks(v, ctx, "a list of global ranks ([] for 'culprit unknown')")
    within = None
    if (v := f.get("detect_within_s")) is not None:
        within = v.number(low=0.0, above=True, high=MAX_TIMEOUT_S)
    dumps = v.boolean() if (v := f.get("dumps")) is not None else True
    count = int_range(v) if (v := f.get("count")) is not None else IntRange(low=1, high=1)
    return HangExpectation(culprits=culprits, detect_within_s=within, dumps=dumps, count=count)


def _straggler(value: Value, ctx: Context, *, slowed: bool = False) -> StragglerExpectation:
    """`none`, or `{ranks: [..] | injected, section: NAME}` (ranks default: injected when a
    slow_worker fault is there)."""
    expected = "'none' or a mapping with ranks (a list, or 'injected') and section"
    if value.node.kind == "scalar":
        if value.node.value != NONE:
            value.fail(expected)
        return StragglerExpectation(ranks=())
    f = value.fields(STRAGGLER_KEYS, what=expected)
    ranks: tuple[int, ...] | str
    if (v := f.get("ranks")) is None:
        if not slowed:
            raise Invalid(
                f.line, join(f.path, "ranks"), "missing; without a slow_worker fault, list them"
            )
        ranks = INJECTED
    else:
        word = _injected(v, words=(INJECTED,), kind="slow_worker", present=slowed)
        ranks = word if word is not None else _ranks(v, ctx, "a list of global ranks")
    section = v.text(what="a section name") if (v := f.get("section")) is not None else None
    return StragglerExpectation(ranks=ranks, section=section)


def _root_cause(value: Value, ctx: Context) -> RootCause:
    f = value.fields(ROOT_CAUSE_KEYS, what="a mapping with rank, node, exit_code or signal")
    if not any(f.get(key) is not None for key in ROOT_CAUSE_KEYS):
        value.error("expected at least one of rank, node, exit_code, signal")
    rank = node = exit_code = None
    if (v := f.get("rank")) is not None:
        rank = v.integer(low=0, high=ctx.max_world - 1, what="a global rank")
    if (v := f.get("node")) is not None:
        node = v.integer(low=0, high=ctx.total_nodes - 1, what="a node index")
    if (v := f.get("exit_code")) is not None:
        # As the event log reports it: negative for a worker killed by a signal.
        exit_code = v.integer(low=-255, high=255, what="an exit code")
    sig = signal_name(v) if (v := f.get("signal")) is not None else None
    return RootCause(rank=rank, node=node, exit_code=exit_code, signal=sig)
