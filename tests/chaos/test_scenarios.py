"""The resilience suite: every scenario in scenarios/ runs as a test (marked by backend).

A failing scenario prints the harness summary and the exact command that replays it."""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
BUILT_BACKENDS = ("local", "netns")


def _param(path: Path) -> object:
    scenario = load_scenario(path)
    marks = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]
    backend = scenario.topology.backend
    if backend == "netns":
        marks.append(pytest.mark.root)
    elif backend == "docker":
        marks.append(pytest.mark.docker)
    if scenario.topology.rdzv_backend == "etcd":
        marks.append(pytest.mark.etcd)
    return pytest.param(path, marks=marks, id=path.stem)


@pytest.mark.parametrize("path", [_param(p) for p in SCENARIOS])
def test_scenario(path: Path, tmp_path: Path) -> None:
    scenario = load_scenario(path)
    backend = scenario.topology.backend
    if backend not in BUILT_BACKENDS:
        pytest.skip(f"the {backend} topology is not built yet (only {BUILT_BACKENDS})")
    if backend == "netns" and (
        os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables") is None
    ):
        pytest.skip("the netns topology needs root, ip and iptables (ci/install.sh)")
    if scenario.topology.rdzv_backend == "etcd" and shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (ci/install.sh installs it)")
    run_dir = tmp_path / "run"
    run_scenario(scenario, run_dir=run_dir, seed=scenario.seed, progress=lambda _line: None)
    verdicts = run_checkers(load_history(run_dir), scenario)
    replay = replay_command(path.relative_to(ROOT), scenario.seed, backend, scenario.launcher)
    summary = write_report(run_dir, scenario, verdicts, seed=scenario.seed, replay_command=replay)
    keep = os.environ.get("CHAOS_KEEP_RUNS")
    if keep:
        shutil.copytree(run_dir, Path(keep) / path.stem, dirs_exist_ok=True)
    failed = [v for v in verdicts if v.status == "fail"]
    assert not failed, f"{summary}\nreplay: {replay}"
