"""What one simulated run is: the job, the agents' timing, the store's latency, the faults.

Every default mirrors the real launcher (docs/rendezvous.md): the protocol timeouts are
`launcher.rendezvous.state.Params`' own defaults, the monitor interval is `--monitor-interval`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chaos.sim.faults import Fault
from launcher.rendezvous.state import DEFAULT_WINDOW_S, Params

_DEFAULTS = Params(run_id="sim", min_nodes=1, max_nodes=1, max_restarts=0)


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    nodes: int
    min_nodes: int
    max_nodes: int
    seed: int = 0
    nproc_per_node: int = 1
    max_restarts: int = 100
    # Node addresses (they order newcomers, so the agreement test gives the real ones).
    addrs: tuple[str, ...] = ()
    faults: tuple[Fault, ...] = ()
    # Agents start uniformly within [0, start_spread_s) (late joiners at their fault time).
    start_spread_s: float = 1.0
    # The agent loop (launcher/agent.py): check the round every monitor interval; stopping
    # the workers takes worker_stop_s before the agent re-joins.
    monitor_interval_s: float = 0.1
    worker_stop_s: float = 0.1
    # The store: round-trip latency is lognormal (median, sigma), capped so bounds exist;
    # a reply also pays its size over the bandwidth. store_ops_per_s > 0 makes the store
    # a single FIFO server with that throughput (0: no queueing).
    latency_median_s: float = 0.001
    latency_sigma: float = 0.5
    latency_cap_factor: float = 20.0
    bandwidth_bytes_per_s: float = 125e6
    store_ops_per_s: float = 0.0
    # A store op that gets no reply fails after read_timeout_s (the real agent's
    # --rdzv-conf read_timeout). The agent re-runs the failed step with backoff and exits
    # once the store has been unreachable for store_outage_timeout_s, as the real one does.
    read_timeout_s: float = 60.0
    store_outage_timeout_s: float = DEFAULT_WINDOW_S
    # Protocol options (the launcher's defaults).
    join_timeout_s: float = _DEFAULTS.join_timeout_s
    last_call_timeout_s: float = _DEFAULTS.last_call_timeout_s
    poll_interval_s: float = _DEFAULTS.poll_interval_s
    assign_timeout_s: float = _DEFAULTS.assign_timeout_s
    keep_alive_interval_s: float = _DEFAULTS.keep_alive_interval_s
    keep_alive_max_attempt: int = _DEFAULTS.keep_alive_max_attempt
    # How long the state must stay settled after the faults before the run stops early;
    # None: one detection period (a dead member of the final round would be found by then).
    settle_s: float | None = None
    # A hard stop in virtual seconds; None: the faults' end + the liveness bound + settle.
    until_s: float | None = None
    # The store wakes a sleeping joiner when the key it waits for is written (etcd's
    # watches; `Sleep.until`): False models a polling-only store (c10d).
    store_wakes: bool = False
    # A job secret: every agent seals what it writes and checks what it reads (signing.py);
    # `forge` faults need it (without one a forged value is simply believed).
    secret: bool = False
    # Record every event (tests of determinism); costs memory at scale.
    trace: bool = False
    # Safety violations to tolerate (known protocol issues), by code; see checks.py.
    allow: frozenset[str] = field(default_factory=frozenset)

    def params(self) -> Params:
        return Params(
            run_id="sim",
            min_nodes=self.min_nodes,
            max_nodes=self.max_nodes,
            max_restarts=self.max_restarts,
            join_timeout_s=self.join_timeout_s,
            last_call_timeout_s=self.last_call_timeout_s,
            poll_interval_s=self.poll_interval_s,
            assign_timeout_s=self.assign_timeout_s,
            keep_alive_interval_s=self.keep_alive_interval_s,
            keep_alive_max_attempt=self.keep_alive_max_attempt,
            store_wakes=self.store_wakes,
        )

    def addr(self, index: int) -> str:
        if self.addrs:
            return self.addrs[index]
        return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"

    def validate(self) -> None:
        if self.nodes < 1:
            raise ValueError("nodes must be at least 1")
        if not 1 <= self.min_nodes <= self.max_nodes:
            raise ValueError(f"need 1 <= min ({self.min_nodes}) <= max ({self.max_nodes})")
        if self.addrs and len(self.addrs) != self.nodes:
            raise ValueError(f"{len(self.addrs)} addresses for {self.nodes} nodes")
        if any(f.kind == "forge" for f in self.faults) and not self.secret:
            raise ValueError("a forge fault needs a job secret (--secret): unsigned, forging wins")
        for fault in self.faults:
            for node in fault.nodes:
                if not 0 <= node < self.nodes:
                    raise ValueError(f"fault {fault.spec()}: no node {node}")
