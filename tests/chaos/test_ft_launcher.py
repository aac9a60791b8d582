"""NVIDIA's ft_launcher as the third launcher under test: the same scenario, same checkers.

Skipped when ft_launcher is not installed (`bash ci/install_ft_launcher.sh` makes the venv
CI uses). What it must show: the harness starts it with the job's flags (our extensions
dropped), the run is judged from exit codes and step reports as torchrun's is, and a
topology it cannot run is refused in one line before anything starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chaos.checkers import run_checkers
from chaos.history import load_history
from chaos.runner import RunError, run_scenario
from chaos.scenario.schema import Fault, Trigger
from chaos.topology.base import TopologyError
from chaos.topology.launchers import FT_LAUNCHER_ENV, check_supported, ft_launcher_path
from tests.chaos.test_runner_local import describe, make_scenario, records

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

needs_ft = pytest.mark.skipif(
    ft_launcher_path() is None,
    reason="ft_launcher is not installed (bash ci/install_ft_launcher.sh)",
)


@needs_ft
@pytest.mark.timeout(150)
def test_ft_launcher_runs_a_killed_worker_scenario_and_is_judged(tmp_path: Path) -> None:
    kill = Fault(kind="kill_worker", rank=1, trigger=Trigger(kind="after_step", step=5))
    scenario = make_scenario(
        "ft_kill", faults=(kill,), launcher_args=("--max-restarts", "2", "--hang-timeout", "9")
    )
    lines: list[str] = []
    run_scenario(
        scenario,
        run_dir=tmp_path / "run",
        launcher="ft_launcher",
        progress=lines.append,
    )
    history = load_history(tmp_path / "run")
    info = describe(history, lines)
    [start] = records(history, "run.start")
    assert start["launcher"] == "ft_launcher", info
    argv = [r["argv"] for r in records(history, "node.start")]
    assert all("ft_launcher" in a[0] and "--hang-timeout" not in a for a in argv), argv
    [fired] = records(history, "fault.fire")
    assert fired["did"]["signalled"], info
    judged = dataclasses.replace(scenario, launcher="ft_launcher")  # as `chaos run` judges it
    verdicts = {v.name: v for v in run_checkers(history, judged)}
    assert verdicts["outcome"].status == "pass", info
    unknown = [v for v in verdicts.values() if v.status == "unknown"]
    assert unknown and all("ft_launcher, which writes no event log" in str(v) for v in unknown)
    restarts = {s["restart_count"] for s in history.steps}
    assert restarts == {0, 1}, info  # restarted once, from the workload's own reports


def test_an_etcd_topology_is_refused_for_ft_launcher(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="only the c10d rendezvous"):
        check_supported("ft_launcher", "etcd")


def test_a_missing_ft_launcher_is_one_line_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FT_LAUNCHER_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(RunError, match=r"ft_launcher is not installed: bash ci/install_ft") as err:
        run_scenario(make_scenario("ft_missing"), run_dir=tmp_path / "run", launcher="ft_launcher")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "history.jsonl").exists()
