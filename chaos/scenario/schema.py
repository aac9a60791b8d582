"""The scenario schema (see docs/scenarios.md). Pure data, validated by the loader."""

from __future__ import annotations

from dataclasses import dataclass, field

TOPOLOGY_BACKENDS = ("local", "netns", "docker")
RDZV_BACKENDS = ("c10d", "etcd")
LAUNCHERS = ("launcher", "torchrun", "ft_launcher")

# Fault kinds and the target each one takes.
FAULT_KINDS = (
    "kill_worker",  # target: rank (global, resolved when fired) or node + local_rank
    "kill_agent",  # target: node; SIGKILL of the launcher process only
    "crash_node",  # target: node; the agent and every worker of that node at once
    "pause_node",  # target: node; SIGSTOP everything of the node for `duration_s`
    "partition",  # target: nodes / groups; needs netns or docker
    "join_node",  # target: a spare node; starts its agent
    "leave_node",  # target: node; SIGTERM to the agent (a graceful leave)
    "kill_store_host",  # c10d: the agent hosting the store; etcd: a member (see target)
    "kill_etcd_member",  # target: member index or "leader"
    "toxic",  # target: node; a Toxiproxy toxic on its link to the store for `duration_s`
    "slow_link",  # target: node; its egress limited to `rate` (tc tbf); needs netns or docker
    "hang_worker",  # target: rank (or node + local_rank); the rank stops making progress
    "slow_worker",  # target: rank (or node + local_rank); the rank runs `factor` times slower
    "intruder",  # no target: an outside process with store access writes `actions`
)
TRIGGER_KINDS = ("at_s", "after_step", "on_event", "random")
# How a partition cuts: "drop" packets silently, or "reject" TCP with a reset at once.
PARTITION_MODES = ("drop", "reject")
# How a hang_worker hangs its rank: in the workload (sleep, skip_collective, deadlock, gil:
# an order in the control dir) or from outside (sigstop: SIGSTOP until released).
HANG_MODES = ("sleep", "sigstop", "skip_collective", "deadlock", "gil")
# How a slow_worker slows its rank: the workload's compute section (compute), a SIGSTOP/SIGCONT
# duty cycle from outside (sigstop), or a CPU quota on the node's container (cpu_quota).
SLOW_MODES = ("compute", "sigstop", "cpu_quota")
# What an intruder does (chaos/faults/intruder.py), which secret it holds (none, or one that
# is not the job's), and what the job must make of it (expect.intruder).
INTRUDER_ACTIONS = ("join", "bump", "close", "garbage", "oversize", "mark_dead")
INTRUDER_SECRETS = ("none", "wrong")
INTRUDER_EXPECTATIONS = ("refused", "believed")
# The mode a fault kind takes when none is given.
DEFAULT_MODES = {"partition": "drop", "hang_worker": "sleep", "slow_worker": "compute"}
# Why a round formed (the launcher's `group.restart` reason, docs/event-log.md): the keys of
# expect.restarts_by_reason. "initial" is not a restart.
RESTART_REASONS = ("worker_failure", "hang", "scale_up", "node_lost", "node_left", "closer_lost")


@dataclass(frozen=True, kw_only=True)
class Topology:
    backend: str = "local"
    nodes: int = 2  # agents started at the beginning
    spares: int = 0  # agents started only by join_node faults
    nproc_per_node: int = 1
    min_nodes: int | None = None  # default: nodes
    max_nodes: int | None = None  # default: nodes + spares
    rdzv_backend: str = "c10d"
    etcd_members: int = 1
    rdzv_tls: bool = False  # etcd: TLS and client certificates, made by the harness
    launcher_args: tuple[str, ...] = ()
    # A job secret (the harness writes one and passes `--rdzv-conf secret_file` to our agents).
    rdzv_secret: bool = False
    image: str | None = None  # docker: the node image (default: built offline by the harness)


@dataclass(frozen=True, kw_only=True)
class Workload:
    script: str = "scenarios/workloads/train.py"
    steps: int = 40
    step_s: float = 0.1
    checkpoint_every: int = 5
    args: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Trigger:
    kind: str  # one of TRIGGER_KINDS
    at_s: float | None = None  # at_s: seconds after the job started
    step: int | None = None  # after_step: when `rank` reports this step
    rank: int = 0
    event: str | None = None  # on_event: launcher event name, e.g. rendezvous.round.complete
    occurrence: int = 1  # on_event: the n-th such event (across nodes, deduplicated by round)
    window_s: tuple[float, float] | None = None  # random: uniform in this window (seeded)


@dataclass(frozen=True, kw_only=True)
class Fault:
    kind: str
    trigger: Trigger
    node: int | None = None  # node index (0-based, spares follow the initial nodes)
    rank: int | None = None  # global rank (kill_worker), resolved when the fault fires
    local_rank: int | None = None
    signal: str = "SIGKILL"  # kill_worker / kill_agent
    exit_code: int | None = None  # kill_worker: make the worker exit with this code instead
    exception: str | None = None  # kill_worker: make the worker raise this (message)
    duration_s: float | None = None  # pause_node, partition, hang/slow_worker: heal after this
    groups: tuple[tuple[int, ...], ...] = ()  # partition: node groups cut from each other
    from_store: bool = False  # partition: cut `node` from the store only
    mode: str = "drop"  # partition: PARTITION_MODES; hang_worker: HANG_MODES; slow_worker: ...
    factor: float | None = None  # slow_worker: how many times slower (> 1)
    steps: tuple[int, int] | None = None  # slow_worker compute: the steps slowed, a..b
    period_s: float | None = None  # slow_worker sigstop: one stop + run cycle
    member: str | None = None  # kill_etcd_member: index or "leader"
    toxic: str | None = None  # toxic: the Toxiproxy toxic type (latency, reset_peer, ...)
    attributes: tuple[tuple[str, int], ...] = ()  # toxic: its attributes (Toxiproxy's units)
    stream: str = "downstream"  # toxic: downstream (store -> node) or upstream
    toxicity: float = 1.0  # toxic: the probability it applies to a connection
    rate: str | None = None  # slow_link: tc's rate, e.g. "1mbit"
    actions: tuple[str, ...] = ()  # intruder: INTRUDER_ACTIONS, in order
    secret: str | None = None  # intruder: INTRUDER_SECRETS
    # Targets written as `random` ("rank", "node", "local_rank"); those fields stay None here
    # and the schedule draws them from the seed (PlannedFault.fault has them filled in).
    random_fields: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class IntRange:
    low: int
    high: int

    def contains(self, value: int) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True, kw_only=True)
class RootCause:
    rank: int | None = None
    node: int | None = None
    exit_code: int | None = None
    signal: str | None = None


# `culprits: injected`, `ranks: injected`: the ranks the run's faults hit, read from the
# history's fault.fire records when judged (a `rank: random` is drawn by the schedule).
INJECTED = "injected"


@dataclass(frozen=True, kw_only=True)
class HangExpectation:
    """What the launcher must have done about a hang (judged by chaos/checkers/hangs.py)."""

    # Global ranks blamed; (): "culprit unknown"; INJECTED: the ranks hang_worker faults hung
    # (the default when the scenario has one); None: not checked.
    culprits: tuple[int, ...] | str | None = None
    # seconds_since_progress - timeout_s of the incident: how late past its deadline.
    detect_within_s: float | None = None
    dumps: bool = True  # every rank of the hung round, on every node, has an ok dump
    # Originating incidents (source progress or file_timer), not the peers' echoes.
    count: IntRange = field(default_factory=lambda: IntRange(low=1, high=1))


@dataclass(frozen=True, kw_only=True)
class StragglerExpectation:
    """Which ranks the launcher must report as stragglers (chaos/checkers/stragglers.py)."""

    # Exactly these global ranks are reported, no other; (): no report at all (`none`);
    # INJECTED: the ranks slow_worker faults slowed.
    ranks: tuple[int, ...] | str = ()
    section: str | None = None  # the section named in the reports (None: any)


@dataclass(frozen=True, kw_only=True)
class Expectations:
    outcome: str = "succeeded"  # or "failed"
    failure_reason: str | None = None  # e.g. "budget_spent", "store_lost"
    restarts: IntRange | None = None  # charged restarts (the job-wide count)
    restarts_by_reason: dict[str, IntRange] = field(default_factory=dict)
    uncharged_scale_events: bool = True
    final_world_size: int | None = None
    rank_invariants: bool = True
    root_cause: RootCause | None = None
    max_lost_steps: int | None = None  # default: the workload's checkpoint interval
    detect_within_s: float | None = None
    recover_within_s: float | None = None
    hang: HangExpectation | None = None
    straggler: StragglerExpectation | None = None
    hygiene: bool = True  # no process of the job left, no port left bound
    intruder: str | None = None  # INTRUDER_EXPECTATIONS; default refused with rdzv_secret


@dataclass(frozen=True, kw_only=True)
class Scenario:
    name: str
    description: str = ""
    seed: int = 0
    timeout_s: float = 120.0
    launcher: str = "launcher"
    topology: Topology = field(default_factory=Topology)
    workload: Workload = field(default_factory=Workload)
    faults: tuple[Fault, ...] = ()
    expect: Expectations = field(default_factory=Expectations)
    source: str = ""  # the file it came from
