"""The docker topology's own behaviour: the offline image, user images, stale-object cleanup,
and what a node container is made of. The catalog runs on it in test_scenarios.py."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from chaos.checkers import run_checkers
from chaos.history import load_history
from chaos.runner import run_scenario
from chaos.scenario.loader import load_scenario, load_scenario_text
from chaos.scenario.schema import Scenario
from chaos.topology import procs
from chaos.topology.base import TopologyError
from chaos.topology.containers import DockerTopology
from chaos.topology.docker_image import (
    BUILTIN_IMAGE,
    LABEL,
    LABEL_OWNER,
    ensure_builtin_image,
    owner_label,
    remove_stale,
)
from chaos.topology.view import JobView

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.chaos]

SCENARIO = """\
name: docker-probe
topology: {backend: docker, nodes: 2, nproc_per_node: 1}
workload: {steps: 5, step_s: 0.05, checkpoint_every: 5}
"""


def _scenario(**topology: Any) -> Scenario:
    scenario = load_scenario_text(SCENARIO, source="<test>")
    return dataclasses.replace(
        scenario, topology=dataclasses.replace(scenario.topology, **topology)
    )


def _topology(tmp_path: Path, scenario: Scenario) -> DockerTopology:
    run_dir = tmp_path / "run"
    return DockerTopology(scenario, run_dir=run_dir, launcher="launcher", view=JobView(run_dir))


def _dead_owner() -> str:
    """The owner label of a harness that has exited (a process that ran and was reaped)."""
    proc = subprocess.Popen(["sleep", "30"])
    ident = procs.identify(proc.pid)
    proc.kill()
    proc.wait(timeout=10)
    assert ident is not None
    return f"{ident.pid}:{ident.start}"


def test_stale_objects_of_a_dead_harness_are_removed_and_live_ones_kept(docker_client: Any) -> None:
    ensure_builtin_image(docker_client)
    tag = uuid.uuid4().hex[:6]
    made: list[Any] = []
    try:
        for who, owner in (("dead", _dead_owner()), ("live", owner_label())):
            labels = {LABEL: "node", LABEL_OWNER: owner}
            made.append(
                docker_client.networks.create(f"chxtest{tag}-{who}", internal=True, labels=labels)
            )
            made.append(
                docker_client.containers.create(
                    BUILTIN_IMAGE, ["/x"], name=f"chxtest{tag}-{who}", labels=labels
                )
            )
        remove_stale(
            docker_client
        )  # (a harness on another xdist worker may beat it to the dead one)
        names = {c.name for c in docker_client.containers.list(all=True, filters={"label": LABEL})}
        nets = {n.name for n in docker_client.networks.list(filters={"label": LABEL})}
        assert f"chxtest{tag}-dead" not in names | nets
        assert f"chxtest{tag}-live" in names
        assert f"chxtest{tag}-live" in nets
    finally:
        for obj in reversed(made):
            with contextlib.suppress(Exception):  # already removed by the code under test
                obj.remove(force=True) if hasattr(obj, "image") else obj.remove()


def test_a_node_is_a_container_on_an_internal_network_and_teardown_removes_it(
    docker_client: Any, tmp_path: Path
) -> None:
    topo = _topology(tmp_path, _scenario())
    try:
        topo.up()
        handle = topo.start_node(0)
        ctr = docker_client.containers.get(f"{topo.prefix}-n0")
        net = docker_client.networks.get(topo.network_name)
        assert net.attrs["Internal"] is True  # no route out of the job's network
        assert ctr.attrs["Config"]["Image"] == BUILTIN_IMAGE
        assert ctr.attrs["NetworkSettings"]["Networks"][topo.network_name]["IPAddress"] == (
            topo.addr_of(0)
        )
        mounts = {m["Destination"]: m["RW"] for m in ctr.attrs["Mounts"]}
        assert mounts["/usr"] is False
        assert mounts[str(topo.run_dir)] is True
        # docker-init, then the node's shell, then the agent: the shell is not the job's.
        ctr_init = topo._ctrs[0].init.pid
        shell = topo._ctrs[0].shell.pid
        assert procs.children(ctr_init) == [shell]
        assert procs.parent(handle.pid) == shell
        assert handle.pid in topo.node_pids(0) and shell not in topo.node_pids(0)
        # The agent, seen from the host with its own namespace pid.
        inner = procs.ns_pid(handle.pid)
        assert inner is not None
        assert inner < handle.pid  # a small pid in the container's own PID namespace
        assert topo.host_pid(0, inner) == handle.pid
        assert topo.net_exec(0)[:2] == ["nsenter", "-t"]
    finally:
        topo.stop_all()
    label = {"label": f"chaos.run={topo.run_id}"}
    assert docker_client.containers.list(all=True, filters=label) == []
    assert docker_client.networks.list(filters=label) == []


def test_a_missing_user_image_is_a_clear_error_before_anything_starts(
    docker_client: Any, tmp_path: Path
) -> None:
    topo = _topology(tmp_path, _scenario(image=f"chaos-test/absent:{uuid.uuid4().hex[:8]}"))
    try:
        with pytest.raises(TopologyError, match=r"not on this machine.*docker load"):
            topo.up()
    finally:
        topo.stop_all()
    assert docker_client.networks.list(filters={"label": f"chaos.run={topo.run_id}"}) == []


def test_a_user_image_runs_as_it_is_with_only_the_project_and_run_dir_mounted(
    docker_client: Any, tmp_path: Path
) -> None:
    """A user image brings its own Python: the harness mounts nothing of the host's system.
    An image without /bin/sh and python3 (the bare offline root, run without the host's /usr)
    fails with a clear error,
    and the container it created is still removed."""
    ensure_builtin_image(docker_client)
    user = f"chaos-test/user:{uuid.uuid4().hex[:8]}"
    docker_client.images.get(BUILTIN_IMAGE).tag(user)
    topo = _topology(tmp_path, _scenario(image=user))
    try:
        topo.up()
        with pytest.raises(TopologyError, match=r"needs /bin/sh and python3"):
            topo.start_node(0)
        ctr = docker_client.containers.get(f"{topo.prefix}-n0")
        assert ctr.attrs["Config"]["Image"] == user
        assert ctr.attrs["Config"]["Cmd"][4] == "python3"  # sh -c SCRIPT node python3 -m ...
        mounts = {m["Destination"] for m in ctr.attrs["Mounts"]}
        assert "/usr" not in mounts
        assert str(topo.run_dir) in mounts
    finally:
        topo.stop_all()
        docker_client.images.remove(user)
    assert (
        docker_client.containers.list(all=True, filters={"label": f"chaos.run={topo.run_id}"}) == []
    )


def test_a_launcher_that_orphans_its_workers_is_caught_on_docker_too(
    docker_client: Any, tmp_path: Path
) -> None:
    """torchrun SIGKILLed leaves its workers running. A docker node used to end with its
    agent (docker-init exited, the kernel killed the rest), hiding that; the node's shell now
    keeps the container up while the orphans live, so hygiene names them as on `local`."""
    path = Path(__file__).resolve().parents[2] / "scenarios" / "launcher_sigkill_no_orphans.yaml"
    scenario = load_scenario(path)
    run_dir = tmp_path / "run"
    result = run_scenario(
        scenario, run_dir=run_dir, backend="docker", launcher="torchrun", progress=lambda _l: None
    )
    judged = dataclasses.replace(
        scenario, topology=dataclasses.replace(scenario.topology, backend="docker")
    )
    verdicts = {v.name: v for v in run_checkers(load_history(run_dir), judged)}
    hygiene = verdicts["hygiene"]
    assert hygiene.status == "fail", hygiene
    assert result.leftover_pids and hygiene.measured["leftover_pids"], hygiene
    assert (run_dir / "nodes" / "1" / "agent.rc").read_text().strip() == "137"  # SIGKILL
    label = {"label": f"chaos.run={result.run_id}"}
    assert docker_client.containers.list(all=True, filters=label) == []
