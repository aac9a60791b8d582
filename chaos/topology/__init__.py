"""Where the nodes of a chaos run live: one protocol (`base.Topology`), several backends.

`local` (no root): agents on loopback addresses. `netns` (root): network namespaces on a
private bridge. `docker`: containers on an internal Docker network (chaos.topology.containers).
Partitions need one of the last two.
"""

from __future__ import annotations

from pathlib import Path

from chaos.scenario.schema import Scenario
from chaos.topology.base import NodeHandle, Store, Support, Topology, TopologyError
from chaos.topology.view import JobView

__all__ = [
    "JobView",
    "NodeHandle",
    "Store",
    "Support",
    "Topology",
    "TopologyError",
    "make_topology",
]


def make_topology(
    backend: str, scenario: Scenario, *, run_dir: Path, launcher: str, view: JobView
) -> Topology:
    if backend == "local":
        from chaos.topology.local import LocalTopology

        return LocalTopology(scenario, run_dir=run_dir, launcher=launcher, view=view)
    if backend == "netns":
        from chaos.topology.netns import NetnsTopology

        return NetnsTopology(scenario, run_dir=run_dir, launcher=launcher, view=view)
    if backend == "docker":
        from chaos.topology.containers import DockerTopology

        return DockerTopology(scenario, run_dir=run_dir, launcher=launcher, view=view)
    raise TopologyError(f"unknown topology backend {backend!r} (local, netns or docker)")
