"""The rendezvous simulator: the launcher's real protocol core at thousands of nodes, with
faults, on a virtual clock, deterministic from one seed (docs/simulator.md).

Layers, each importing only those above it:

    faults    faults as data; parse and print one-line specs; draw them from a seed
    config    SimConfig: the job, timings, store latency, faults
    store     SimStore: MemoryStore semantics plus per-node op/byte accounting
    agent     VirtualAgent: agent.py's loop and dynamic.py's heartbeat thread, driving
              launcher.rendezvous.state's generators (the only launcher code used)
    checks    safety invariants checked at every step; the liveness bound
    engine    Simulation: the heap-based event loop, fault actions, settling
    result    simulate(cfg) -> SimResult (rounds, costs, verdicts)
    sweep     the same scenario at N = 10 .. 10,000, and its SVG picture
    cli       `chaos sim`
"""

from __future__ import annotations

from chaos.sim.checks import SafetyViolation, liveness_bound_s, reform_bound_s
from chaos.sim.config import SimConfig
from chaos.sim.faults import Fault, format_faults, parse_faults
from chaos.sim.result import Liveness, RoundRow, SimResult, simulate

__all__ = [
    "Fault",
    "Liveness",
    "RoundRow",
    "SafetyViolation",
    "SimConfig",
    "SimResult",
    "format_faults",
    "liveness_bound_s",
    "parse_faults",
    "reform_bound_s",
    "simulate",
]
