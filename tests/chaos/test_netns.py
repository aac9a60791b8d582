"""The netns topology with a real partition: three nodes on a private bridge, node 2 cut off.

A `2:3` job (one worker per node, scenarios/workloads/train.py) runs in three network
namespaces; after a few steps node 2 is partitioned with silent DROP rules inside its
namespace and healed 10 s later. The majority must re-form without node 2 (world 2), the job
must finish, and the run must leave no namespace, process or port behind.

Leftovers: namespaces claimed by a harness that is gone are removed by the next topology's
`up()`; those of a live harness, and young unclaimed ones, are left alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.history import load_history
from chaos.runner import run_scenario
from chaos.scenario.schema import Fault, Scenario, Topology, Trigger, Workload
from chaos.topology import netns_claims as claims
from chaos.topology.netns import NETNS_PREFIX, NetnsTopology, ip, list_netns
from chaos.topology.procs import proc_start
from chaos.topology.view import JobView
from launcher import events as ev
from tests.conftest import ROOT, wait_until

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.usefixtures("netns_ready"),
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
    lines: list[str] = []
    result = run_scenario(partition_scenario(), run_dir=tmp_path / "run", progress=lines.append)
    log = "\n".join(lines)

    # Cleaned up on the way out: no namespace of this run (other xdist workers may be
    # running their own meanwhile), no process, no port.
    fired = [r for r in load_history(tmp_path / "run").records if r["kind"] == "fault.fire"]
    cut_ns = fired[0]["did"]["rules"][0]["exec"][-1]  # <prefix>-n2
    prefix = cut_ns.rsplit("-", 1)[0]
    assert prefix.startswith(NETNS_PREFIX) and list_netns(prefix) == [], log
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


# -- leftovers of dead harnesses ------------------------------------------------------------


def dead_owner() -> claims.Owner:
    """The identity of a process that has exited (its pid may be reused: the start time not)."""
    proc = subprocess.Popen(["sleep", "60"])
    start = proc_start(proc.pid)
    proc.kill()
    proc.wait()
    assert start is not None
    return claims.Owner(pid=proc.pid, start=start, boot_id=claims.boot_id())


def fresh_prefix() -> str:
    return f"{NETNS_PREFIX}{uuid.uuid4().hex[:6]}"


@pytest.fixture
def made() -> Iterator[list[str]]:
    """Namespace names a test creates; whatever is left of them (and their claims) is removed."""
    names: list[str] = []
    yield names
    for name in names:
        if name in list_netns(name):
            ip("netns", "del", name, check=False)
        claims.release(claims.prefix_of(name))


def add_netns(made: list[str], name: str) -> None:
    made.append(name)
    ip("netns", "add", name)


def test_up_removes_namespaces_of_dead_harnesses_only(tmp_path: Path, made: list[str]) -> None:
    stale, live, unclaimed = fresh_prefix(), fresh_prefix(), fresh_prefix()
    for prefix in (stale, live, unclaimed):
        add_netns(made, f"{prefix}-n0")
    add_netns(made, f"{stale}-sw")
    assert claims.write_claim(stale, dead_owner(), run_id="killed-harness")
    assert claims.write_claim(live, claims.Owner.me(), run_id="running-harness")
    scenario = Scenario(name="reaper", topology=Topology(backend="netns", nodes=2))
    topo = NetnsTopology(scenario, run_dir=tmp_path, launcher="launcher", view=JobView(tmp_path))
    try:
        topo.up()
        left = set(list_netns())
        # The dead harness's namespaces and claim are gone; the live one's stay, and so does
        # an unclaimed namespace younger than UNCLAIMED_AFTER_S.
        # (Reaped by this up(), or by a harness on another xdist worker starting meanwhile.)
        assert not {f"{stale}-n0", f"{stale}-sw"} & left, topo.reaped
        assert not claims.claim_path(stale).exists()
        assert {f"{live}-n0", f"{unclaimed}-n0"} <= left
        assert not {f"{live}-n0", f"{unclaimed}-n0"} & set(topo.reaped)
        assert claims.read_claim(live) == claims.Owner.me()
        # The new run claimed its own prefix before creating its namespaces.
        assert claims.read_claim(topo.prefix) == claims.Owner.me()
        assert set(topo.namespaces()) <= left
    finally:
        topo.stop_all()
    assert not list_netns(topo.prefix)
    assert not claims.claim_path(topo.prefix).exists()  # released with its namespaces


HARNESS = """
import sys, time
from pathlib import Path
from chaos.scenario.schema import Scenario, Topology
from chaos.topology.netns import NetnsTopology
from chaos.topology.view import JobView
run_dir = Path(sys.argv[1])
scenario = Scenario(name="doomed", topology=Topology(backend="netns", nodes=2))
topo = NetnsTopology(scenario, run_dir=run_dir, launcher="launcher", view=JobView(run_dir))
topo.up()
print(topo.prefix, flush=True)
time.sleep(60)
"""


def test_a_sigkilled_harness_is_cleaned_up_by_the_next_up(tmp_path: Path, made: list[str]) -> None:
    harness = subprocess.Popen(
        [sys.executable, "-c", HARNESS, str(tmp_path / "doomed")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert harness.stdout is not None
        doomed = harness.stdout.readline().strip()
        made.extend(list_netns(doomed))
        assert len(list_netns(doomed)) == 3 and claims.read_claim(doomed) is not None
    finally:
        harness.kill()  # SIGKILL: no teardown runs
        harness.wait()
        if harness.stdout is not None:
            harness.stdout.close()
    assert len(list_netns(doomed)) == 3  # left behind
    scenario = Scenario(name="next", topology=Topology(backend="netns", nodes=2))
    topo = NetnsTopology(scenario, run_dir=tmp_path, launcher="launcher", view=JobView(tmp_path))
    try:
        topo.up()
        assert set(list_netns(doomed)) == set() and not claims.claim_path(doomed).exists()
        assert {f"{doomed}-sw", f"{doomed}-n0", f"{doomed}-n1"} <= set(topo.reaped)
    finally:
        topo.stop_all()


def test_unclaimed_namespaces_go_only_when_old_and_empty(tmp_path: Path, made: list[str]) -> None:
    base = fresh_prefix()
    empty, occupied = f"{base}a-n0", f"{base}b-n0"
    add_netns(made, empty)
    add_netns(made, occupied)
    made.append(f"{base}c-n0")  # only a claim file: its release is cleanup enough
    sleeper = subprocess.Popen(["ip", "netns", "exec", occupied, "sleep", "60"])
    try:
        inside = (claims.NETNS_DIR / occupied).stat().st_ino
        assert wait_until(lambda: os.stat(f"/proc/{sleeper.pid}/ns/net").st_ino == inside, 10)
        claims_dir = tmp_path / "claims"
        assert claims.write_claim(f"{base}c", dead_owner(), claims_dir=claims_dir)
        assert claims.write_claim(f"{base}d", claims.Owner.me(), claims_dir=claims_dir)
        assert not claims.write_claim(f"{base}d", claims.Owner.me(), claims_dir=claims_dir)

        def delete(name: str) -> bool:
            return ip("netns", "del", name, check=False).returncode == 0

        def reap(after_s: float) -> list[str]:
            with claims.locked(claims_dir):
                return claims.reap_stale(
                    list_netns(base), delete, prefix=base, unclaimed_after_s=after_s,
                    claims_dir=claims_dir,
                )  # fmt: skip

        assert reap(after_s=3600.0) == []  # too young, whatever else
        assert sorted(p.name for p in claims_dir.iterdir() if not p.name.startswith(".")) == [
            f"{base}d"  # the dead owner's claim had no namespace left: it went
        ]
        # Old enough: the empty one goes, the one with a process inside stays.
        assert reap(after_s=0.0) == [empty]
        assert list_netns(base) == [occupied]
    finally:
        sleeper.kill()
        sleeper.wait()
