"""The etcd cluster away from loopback: members in network namespaces (netns) and containers
(docker). A 3-member cluster comes up at the topology's addresses, the harness finds the
leader from inside the members' network (it has no route there itself), a killed leader is
replaced by an election among the rest, and teardown leaves nothing: no namespace, claim,
container or member process. A SIGKILLed harness's etcd namespaces go with the next `up()`,
and a partition with `from_store` cuts a node from every member while the others keep them.

The catalog's etcd scenarios run on these backends in test_scenarios.py; this file checks the
placement itself, without a job (a few seconds each)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from chaos.scenario.schema import Scenario, Topology
from chaos.topology.etcd import EtcdCluster
from chaos.topology.procs import proc_start
from chaos.topology.view import JobView
from tests.conftest import ROOT, wait_until

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.integration,
    pytest.mark.etcd,
    pytest.mark.skipif(
        shutil.which("etcd") is None or shutil.which("etcdctl") is None,
        reason="needs etcd and etcdctl (apt-get install etcd-server etcd-client)",
    ),
]

NETNS = (
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the netns topology needs root"),
    pytest.mark.skipif(
        shutil.which("ip") is None or shutil.which("iptables") is None,
        reason="the netns topology needs `ip` (iproute2) and `iptables`",
    ),
)
F = TypeVar("F", bound=Callable[..., None])


def needs_netns(test: F) -> F:
    for mark in NETNS:
        test = mark(test)
    return test


def etcd_scenario(backend: str, members: int = 3) -> Scenario:
    return Scenario(
        name=f"etcd-{backend}",
        topology=Topology(backend=backend, nodes=2, rdzv_backend="etcd", etcd_members=members),
    )


def fail_over(store: EtcdCluster, subnet: str) -> None:
    """The cluster is up where the topology put it; its leader dies and another takes over."""
    addrs = [ep.rsplit(":", 1)[0] for ep in store.endpoint.split(",")]
    assert addrs == [f"{subnet}.{200 + i}" for i in range(3)], store.endpoint
    assert store.endpoint.endswith(":2379")  # every member has a network of its own
    leader = store.leader_index(timeout_s=10.0)
    pid = store.kill_member(leader)
    assert pid is not None and proc_start(pid) is None
    assert store.member_pid(leader) is None and store.kill_member(leader) is None
    assert store.leader_index(timeout_s=15.0) != leader


def member_pids(store: EtcdCluster) -> list[int]:
    return [pid for i in range(store.member_count()) if (pid := store.member_pid(i)) is not None]


@needs_netns
def test_netns_members_live_in_their_own_namespaces(tmp_path: Path) -> None:
    from chaos.topology import netns_claims as claims
    from chaos.topology.netns import NetnsTopology, list_netns

    topo = NetnsTopology(
        etcd_scenario("netns"), run_dir=tmp_path, launcher="launcher", view=JobView(tmp_path)
    )
    store = topo.store
    assert isinstance(store, EtcdCluster)
    pids: list[int] = []
    try:
        topo.up()
        assert {f"{topo.prefix}-e{i}" for i in range(3)} <= set(list_netns(topo.prefix))
        pids = member_pids(store)
        assert len(pids) == 3
        for index, pid in enumerate(pids):  # each member runs inside its own namespace
            inside = os.stat(f"/run/netns/{topo.etcd_netns(index)}").st_ino
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == inside
        fail_over(store, f"10.213.{topo.subnet_k}")
    finally:
        topo.stop_all()
    assert not list_netns(topo.prefix)
    assert not claims.claim_path(topo.prefix).exists()
    assert not [pid for pid in pids if proc_start(pid) is not None]
    assert sorted(p.name for p in (tmp_path / "etcd").iterdir()) == ["m0.log", "m1.log", "m2.log"]


HARNESS = """
import sys, time
from pathlib import Path
from chaos.scenario.schema import Scenario, Topology
from chaos.topology.netns import NetnsTopology
from chaos.topology.view import JobView
run_dir = Path(sys.argv[1])
topology = Topology(backend="netns", nodes=1, rdzv_backend="etcd", etcd_members=1)
scenario = Scenario(name="doomed", topology=topology)
topo = NetnsTopology(scenario, run_dir=run_dir, launcher="launcher", view=JobView(run_dir))
topo.up()
print(topo.prefix, topo.store.member_pid(0), flush=True)
time.sleep(60)
"""


@needs_netns
def test_a_sigkilled_harness_leaves_no_member_and_its_namespaces_are_reaped(
    tmp_path: Path,
) -> None:
    from chaos.topology import netns_claims as claims
    from chaos.topology.netns import NetnsTopology, ip, list_netns

    harness = subprocess.Popen(
        [sys.executable, "-c", HARNESS, str(tmp_path / "doomed")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    doomed = ""
    try:
        assert harness.stdout is not None
        doomed, member = harness.stdout.readline().split()
        assert f"{doomed}-e0" in list_netns(doomed)
    finally:
        harness.kill()  # SIGKILL: no teardown runs
        harness.wait()
        if harness.stdout is not None:
            harness.stdout.close()
    try:
        # The member dies with its harness (PDEATHSIG); its namespace stays for the reaper.
        assert wait_until(lambda: proc_start(int(member)) is None, 10)
        assert f"{doomed}-e0" in list_netns(doomed)
        topo = NetnsTopology(
            etcd_scenario("netns", members=1),
            run_dir=tmp_path / "next",
            launcher="launcher",
            view=JobView(tmp_path / "next"),
        )
        try:
            topo.up()
            assert f"{doomed}-e0" in topo.reaped and not list_netns(doomed)
            assert not claims.claim_path(doomed).exists()
        finally:
            topo.stop_all()
    finally:
        for name in list_netns(doomed) if doomed else []:
            ip("netns", "del", name, check=False)
        if doomed:
            claims.release(doomed)


@pytest.mark.docker
@pytest.mark.parametrize("probe", ["nsenter", "docker-exec"])
def test_docker_members_are_labelled_containers(
    tmp_path: Path, docker_client: Any, probe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaos.topology import etcd_docker
    from chaos.topology.containers import DockerTopology
    from chaos.topology.docker_image import LABEL, LABEL_RUN

    if probe == "nsenter" and (os.geteuid() != 0 or shutil.which("nsenter") is None):
        pytest.skip("probing through nsenter needs root and nsenter")
    if probe == "docker-exec":
        if shutil.which("docker") is None:
            pytest.skip("probing through docker exec needs the docker CLI")
        monkeypatch.setattr(etcd_docker.os, "geteuid", lambda: 1000)  # as a non-root user
    run_dir = tmp_path / "run"
    topo = DockerTopology(
        etcd_scenario("docker"), run_dir=run_dir, launcher="launcher", view=JobView(run_dir)
    )
    store = topo.store
    assert isinstance(store, EtcdCluster)
    pids: list[int] = []
    run_filter = {"label": f"{LABEL_RUN}={topo.run_id}"}
    try:
        topo.up()
        ctrs = docker_client.containers.list(filters={**run_filter})
        etcd = sorted(c.name for c in ctrs if c.labels.get(LABEL) == "etcd")
        assert etcd == [f"{topo.prefix}-e{i}" for i in range(3)]
        pids = member_pids(store)
        assert len(pids) == 3
        fail_over(store, f"10.214.{topo.subnet_k}")
    finally:
        topo.stop_all()
    assert not docker_client.containers.list(all=True, filters=run_filter)
    assert not docker_client.networks.list(filters=run_filter)
    assert not [pid for pid in pids if proc_start(pid) is not None]


# Connects to every ADDR:PORT given; prints {target: outcome}.
CONNECT = """
import json, socket, sys
def one(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
        return "ok"
    except OSError as err:
        return type(err).__name__
print(json.dumps({t: one(t) for t in sys.argv[1:]}))
"""


@needs_netns
def test_a_partition_cuts_a_node_from_the_etcd_cluster(tmp_path: Path) -> None:
    from chaos.faults import FaultContext, fire, heal
    from chaos.scenario.schema import Fault, Trigger
    from chaos.topology.netns import NetnsTopology

    topo = NetnsTopology(
        etcd_scenario("netns"), run_dir=tmp_path, launcher="launcher", view=JobView(tmp_path)
    )
    members: list[str] = []  # host:port of every member, once up

    def reach(node: int) -> set[str]:
        done = subprocess.run(
            [*topo.net_exec(node), sys.executable, "-c", CONNECT, *members],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return set(json.loads(done.stdout).values())

    try:
        topo.up()
        members = topo.store.endpoint.split(",")
        ctx = FaultContext(scenario=topo.scenario, topology=topo, control_dir=tmp_path)
        assert reach(0) == reach(1) == {"ok"}
        cut = Fault(
            kind="partition",
            trigger=Trigger(kind="at_s", at_s=0.0),
            node=1,
            from_store=True,
            mode="reject",
        )
        did = fire(cut, ctx)
        try:
            addrs = [m.rsplit(":", 1)[0] for m in members]
            assert did["cuts"] == {"1": []} and did["store_cuts"] == {"1": addrs}, did
            assert reach(1) == {"ConnectionRefusedError"}  # every member refused at once
            assert reach(0) == {"ok"}  # the rest keep the cluster
        finally:
            healed = heal(cut, ctx, did)
        assert healed == {"node": 1, "rules_deleted": 12}, healed
        assert reach(1) == {"ok"}
    finally:
        topo.stop_all()
