"""The resilience suite: every scenario in scenarios/ runs as a test on every topology backend
that can inject its faults (local; netns and docker where root and a Docker daemon), marked
by backend.

A failing scenario prints the harness summary and the exact command that replays it."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from chaos.checkers import run_checkers
from chaos.history import load_history
from chaos.report import write_report
from chaos.run_cli import replay_command
from chaos.runner import run_scenario
from chaos.scenario.loader import load_scenario
from chaos.scenario.schema import Scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
BACKENDS = ("local", "netns", "docker")
# CI sets this (ci/test.sh): a backend it lists must run here, so a missing daemon or tool
# fails the suite instead of skipping the scenarios quietly.
REQUIRED = set(os.environ.get("CHAOS_REQUIRE_BACKENDS", "").split())
# The gray failures act on one worker, by a signal or an order the workload obeys: only what
# crosses a PID namespace (signals, py-spy) or the network (stuck gloo collectives) differs
# between backends, so CI runs each where it does, once (docs/catalog.md has every backend,
# run by hand), to keep the suite within its 30 minutes on two cores. `chaos run --backend
# B` runs any of them anywhere.
CI_BACKENDS = {
    "hung_worker_sigstop": ("local", "netns", "docker"),  # signals into a PID namespace
    "hung_worker_gil": ("local", "docker"),  # py-spy on a GIL holder inside a container
    "hung_worker_collective": ("local",),
    "hung_worker_deadlock": ("local",),
    "straggler": ("local",),
    "straggler_duty_cycle": ("local",),
    "steady_state": ("local",),
    # The store-link proxy runs as a thread on local and as a process in the node's network
    # namespace on netns and docker (docker adds the node shell's wait for it).
    "store_latency": ("local",),
    "store_resets": ("local", "docker"),
    "store_blackhole": ("local", "netns"),
    "slow_link_bandwidth": ("netns",),  # tc in the node's namespace: docker's eth0 the same
    # TLS changes only how the agents reach etcd, the same on every backend (certificates in
    # the run directory, which members and nodes all see at its own path).
    "etcd_tls": ("local",),
}


def runs_on(scenario: Scenario, backend: str) -> bool:
    """The catalog runs every scenario on every backend that can inject all its faults."""
    if scenario.topology.backend == "docker" and scenario.topology.image and backend != "docker":
        return False
    if any(f.kind == "slow_worker" and f.mode == "cpu_quota" for f in scenario.faults):
        return backend == "docker"  # a CPU quota on the node's container
    if backend == "local":
        return all(f.kind not in ("partition", "slow_link") for f in scenario.faults)
    # The intruder writes to the store from the harness, over loopback.
    return all(f.kind != "intruder" for f in scenario.faults)  # netns, docker: the rest


def _params() -> list[object]:
    params = []
    for path in SCENARIOS:
        scenario = load_scenario(path)
        for backend in CI_BACKENDS.get(path.stem, BACKENDS):
            if not runs_on(scenario, backend):
                continue
            marks = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]
            if backend == "netns":
                marks.append(pytest.mark.root)
            elif backend == "docker":
                marks.append(pytest.mark.docker)
            if scenario.topology.rdzv_backend == "etcd":
                marks.append(pytest.mark.etcd)
            params.append(pytest.param(path, backend, marks=marks, id=f"{path.stem}-{backend}"))
    return params


def _unavailable(scenario: Scenario, backend: str) -> str | None:
    missing: str | None = None
    if backend == "netns":
        from chaos.topology.netns import have_netns

        missing = have_netns()
    elif backend == "docker":
        from chaos.topology.containers import have_docker

        missing = have_docker()
    if missing or scenario.topology.rdzv_backend != "etcd":
        return missing
    if shutil.which("etcd") is None:
        return "etcd is not installed (ci/install.sh installs it)"
    if backend != "local" and shutil.which("etcdctl") is None:
        return "etcdctl is not installed (ci/install.sh installs etcd-client)"
    return None


@pytest.mark.parametrize(("path", "backend"), _params())
def test_scenario(path: Path, backend: str, tmp_path: Path) -> None:
    scenario = load_scenario(path)
    missing = _unavailable(scenario, backend)
    if missing:
        if backend in REQUIRED:
            pytest.fail(f"CHAOS_REQUIRE_BACKENDS names {backend}, but {missing}")
        pytest.skip(missing)
    run_dir = tmp_path / "run"
    run_scenario(
        scenario, run_dir=run_dir, seed=scenario.seed, backend=backend, progress=lambda _l: None
    )
    # Judged as run: the backend override applied, as `chaos run --backend` does.
    scenario = dataclasses.replace(
        scenario, topology=dataclasses.replace(scenario.topology, backend=backend)
    )
    verdicts = run_checkers(load_history(run_dir), scenario)
    replay = replay_command(path.relative_to(ROOT), scenario.seed, backend, scenario.launcher)
    summary = write_report(run_dir, scenario, verdicts, seed=scenario.seed, replay_command=replay)
    keep = os.environ.get("CHAOS_KEEP_RUNS")
    if keep:
        shutil.copytree(run_dir, Path(keep) / f"{path.stem}-{backend}", dirs_exist_ok=True)
    failed = [v for v in verdicts if v.status == "fail"]
    assert not failed, f"{summary}\nreplay: {replay}"
