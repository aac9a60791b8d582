"""The netns topology with a real partition: three nodes on a private bridge, node 2 cut off.

A `2:3` job (one worker per node, scenarios/workloads/train.py) runs in three network
namespaces; after a few steps node 2 is partitioned with silent DROP rules inside its
namespace and healed 10 s later. The majority must re-form without node 2 (world 2), the job
must finish, and the run must leave no namespace, process or port behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from chaos.history import load_history
from chaos.runner import run_scenario
from chaos.scenario.schema import Fault, Scenario, Topology, Trigger, Workload
from chaos.topology.netns import NETNS_PREFIX, list_netns
from launcher import events as ev

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="the netns topology needs root (network namespaces, iptables)"
    ),
    pytest.mark.skipif(
        shutil.which("ip") is None or shutil.which("iptables") is None,
        reason="the netns topology needs `ip` (iproute2) and `iptables`",
    ),
]

STEPS = 40


def partition_scenario() -> Scenario:
    return Scenario(
        name="netns-partition",
        seed=3,
        timeout_s=150.0,
        topology=Topology(backend="netns", nodes=3, min_nodes=2, nproc_per_node=1),
        workload=Workload(steps=STEPS, step_s=0.1, checkpoint_every=5),
        faults=(
            Fault(
                kind="partition",
                node=2,
                duration_s=10.0,
                trigger=Trigger(kind="after_step", step=5),
            ),
        ),
    )


def test_partitioned_minority_is_dropped_and_the_majority_finishes(tmp_path: Path) -> None:
    before = set(list_netns(NETNS_PREFIX))
    lines: list[str] = []
    result = run_scenario(partition_scenario(), run_dir=tmp_path / "run", progress=lines.append)
    log = "\n".join(lines)

    # Cleaned up on the way out: no namespace of this run, no process, no port.
    assert set(list_netns(NETNS_PREFIX)) <= before, log
    assert result.leftover_pids == () and result.bound_ports == (), log

    assert not result.timed_out, log
    # The majority finishes. The cut-off node either gives up (its heartbeats to the store
    # on node 0 fail: exit 1, "lost the rendezvous store") or, if TCP held on until the
    # heal, rejoins and finishes too: both are correct, which one depends on timing.
    assert (result.exit_codes[0], result.exit_codes[1]) == (0, 0), log
    assert result.exit_codes[2] in (0, 1), log
    history = load_history(tmp_path / "run")

    fires = [r for r in history.records if r["kind"] == "fault.fire"]
    heals = [r for r in history.records if r["kind"] == "fault.heal"]
    assert len(fires) == 1 and len(heals) == 1, log
    did = fires[0]["did"]
    assert did["mode"] == "drop" and did["cuts"] == {"2": [0, 1]}, did
    assert {r["netns"] for r in did["rules"]} == {did["rules"][0]["netns"]}, did
    assert len(did["rules"]) == 4, did  # INPUT and OUTPUT for each of the two peers
    assert heals[0]["did"]["rules_deleted"] == 4, heals[0]

    # The majority re-formed without node 2: a world-2 round whose members are nodes 0 and 1.
    addr2 = next(r["addr"] for r in history.records if r["kind"] == "node.start" and r["node"] == 2)
    assert addr2.startswith("10.213."), addr2  # the run's private 10.213.<k>.0/24
    rounds = [e for e in history.events.get(0, ()) if e.name == ev.RDZV_ROUND_COMPLETE]
    shrunk = [e for e in rounds if e.fields.get("world_size") == 2]
    assert shrunk, [e.fields for e in rounds]
    for event in shrunk:
        assert not any(str(m).startswith(f"{addr2}-") for m in event.fields["members"]), event

    # And the job finished: the last step was trained.
    assert max(int(r["step"]) for r in history.steps) == STEPS
