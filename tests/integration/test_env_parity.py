"""The same probe under torchrun and under launcher: worker environments compared
variable by variable. Only run ids, ports, pids and paths may differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, WORKLOADS, Procs, clean_env

pytestmark = pytest.mark.integration

ALLOWED_TO_DIFFER = {"TORCHELASTIC_RUN_ID", "MASTER_PORT", "TORCHELASTIC_ERROR_FILE"}
# Ours only, documented in README: the guardian's token, the progress file, and faulthandler on
# (so SIGABRT prints every thread's stack on a hang).
OURS_ONLY = {"LAUNCHER_AGENT_TOKEN", "LAUNCHER_PROGRESS_FILE", "PYTHONFAULTHANDLER"}


def _probe(procs: Procs, tool: str, out: Path, *args: str, env: dict[str, str]) -> dict[int, dict]:
    out.mkdir()
    run = procs.run_launcher if tool == "launcher" else procs.run_torchrun
    result = run(*args, str(WORKLOADS / "probe.py"), str(out), "--dist", env=env, cwd=str(ROOT))
    assert result.code == 0, result
    return {int(p.stem): json.loads(p.read_text()) for p in out.glob("*.json")}


@pytest.mark.parametrize(
    "flags",
    [
        ["--nproc-per-node", "2"],
        ["--standalone", "--nproc-per-node", "2", "--max-restarts", "2", "--role", "trainer"],
        ["--nproc-per-node", "1"],
    ],
    ids=["implicit-standalone", "standalone-role", "single-worker"],
)
def test_worker_env_matches_torchrun(procs: Procs, tmp_path: Path, flags: list[str]) -> None:
    env = clean_env(TEST_SENTINEL_PARENT="x")
    theirs = _probe(procs, "torchrun", tmp_path / "torchrun", *flags, env=env)
    ours = _probe(procs, "launcher", tmp_path / "launcher", *flags, env=env)
    assert sorted(ours) == sorted(theirs) != []
    for rank in theirs:
        t_env, o_env = theirs[rank]["env"], ours[rank]["env"]
        assert set(o_env) - OURS_ONLY == set(t_env), set(o_env) ^ set(t_env)
        differing = {k for k in t_env if t_env[k] != o_env[k]}
        assert differing <= ALLOWED_TO_DIFFER, {k: (t_env[k], o_env[k]) for k in differing}
        assert ours[rank]["argv"][2:] == theirs[rank]["argv"][2:]  # [1] is the output dir
        assert ours[rank]["executable"] == theirs[rank]["executable"]
        assert ours[rank]["all_reduce"] == theirs[rank]["all_reduce"]
        assert o_env["TORCHELASTIC_ERROR_FILE"].endswith(f"attempt_0/{rank}/error.json")


def test_pet_environment_drives_the_launcher(procs: Procs, tmp_path: Path) -> None:
    env = clean_env(PET_NPROC_PER_NODE="3", PET_MAX_RESTARTS="1", PET_ROLE="pet")
    ours = _probe(procs, "launcher", tmp_path / "o", env=env)
    assert sorted(ours) == [0, 1, 2]
    assert {r["env"]["ROLE_NAME"] for r in ours.values()} == {"pet"}
    assert {r["env"]["TORCHELASTIC_MAX_RESTARTS"] for r in ours.values()} == {"1"}
