"""The GPU tier: run it whenever a CUDA machine is at hand (`python3 -m pytest tests/gpu -m
gpu`); everywhere else it skips. NCCL under the launcher with torchrun's environment,
--nproc-per-node gpu/auto, --virtual-local-rank, a hung NCCL rank detected and dumped, and
no orphan holding device memory after SIGKILL of the launcher."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from launcher import events as ev
from tests.conftest import ROOT, WORKLOADS, Procs, clean_env, pid_alive, wait_for_file, wait_until

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.integration,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]
PROBE = str(WORKLOADS / "nccl_probe.py")
ALLOWED_TO_DIFFER = {"TORCHELASTIC_RUN_ID", "MASTER_PORT", "TORCHELASTIC_ERROR_FILE"}
OURS_ONLY = {"LAUNCHER_AGENT_TOKEN", "LAUNCHER_PROGRESS_FILE", "PYTHONFAULTHANDLER"}


def _devices() -> int:
    return int(torch.cuda.device_count())


def _records(out: Path) -> dict[int, dict]:  # type: ignore[type-arg]
    return {int(p.stem): json.loads(p.read_text()) for p in out.glob("*.json")}


@pytest.mark.parametrize("nproc", ["gpu", "auto"])
def test_nproc_per_node_gpu_and_auto_start_one_worker_per_device(
    procs: Procs, tmp_path: Path, nproc: str
) -> None:
    result = procs.run_launcher(
        "--nproc-per-node", nproc, str(WORKLOADS / "probe.py"), str(tmp_path), cwd=str(ROOT)
    )
    assert result.code == 0, result
    assert sorted(_records(tmp_path)) == list(range(_devices()))


def test_nccl_all_reduce_with_torchruns_environment(procs: Procs, tmp_path: Path) -> None:
    n = min(2, _devices())
    outs = {tool: tmp_path / tool for tool in ("torchrun", "launcher")}
    for tool, out in outs.items():
        out.mkdir()
        run = procs.run_launcher if tool == "launcher" else procs.run_torchrun
        result = run("--nproc-per-node", str(n), PROBE, str(out), env=clean_env(), cwd=str(ROOT))
        assert result.code == 0, (tool, result)
    theirs, ours = _records(outs["torchrun"]), _records(outs["launcher"])
    assert sorted(ours) == sorted(theirs) == list(range(n))
    for rank in theirs:
        t_env, o_env = theirs[rank]["env"], ours[rank]["env"]
        assert set(o_env) - OURS_ONLY == set(t_env), set(o_env) ^ set(t_env)
        assert {k for k in t_env if t_env[k] != o_env[k]} <= ALLOWED_TO_DIFFER
        assert ours[rank]["all_reduce"] == theirs[rank]["all_reduce"] == sum(range(n))
        assert ours[rank]["device"] == rank


def test_virtual_local_rank_gives_each_worker_its_own_device(procs: Procs, tmp_path: Path) -> None:
    n = min(2, _devices())
    result = procs.run_launcher(
        "--nproc-per-node", str(n), "--virtual-local-rank", PROBE, str(tmp_path), cwd=str(ROOT)
    )
    assert result.code == 0, result
    records = _records(tmp_path)
    for rank, record in records.items():
        assert record["env"]["LOCAL_RANK"] == "0" and record["device"] == 0
        assert record["env"]["CUDA_VISIBLE_DEVICES"] == str(rank)


def test_a_hung_nccl_rank_is_detected_dumped_and_restarted(procs: Procs, tmp_path: Path) -> None:
    if _devices() < 2:
        pytest.skip("needs 2 devices: NCCL allows one rank per device")
    log = tmp_path / "events.jsonl"
    result = procs.run_launcher(
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "1",
        "--hang-timeout",
        "10",
        "--event-log",
        str(log),
        PROBE,
        str(tmp_path),
        "--hang-rank",
        "1",
        env=clean_env(),
        cwd=str(ROOT),
        timeout=300,
    )
    assert result.code == 0, result
    events = list(ev.read_events(log))
    dumps = [e for e in events if e.name == ev.HANG_STACK_DUMPED]
    assert sorted(d.fields["rank"] for d in dumps) == [0, 1] and all(d.fields["ok"] for d in dumps)
    [blamed] = [e for e in events if e.name == ev.HANG_ATTRIBUTED]
    assert blamed.fields["culprits"] == [1], blamed.fields


def test_sigkill_of_the_launcher_leaves_no_process_holding_device_memory(
    procs: Procs, tmp_path: Path
) -> None:
    n = min(2, _devices())
    proc = procs.launcher(
        "--nproc-per-node", str(n), PROBE, str(tmp_path), "--hold-s", "600", cwd=str(ROOT)
    )
    pids = []
    for rank in range(n):
        assert wait_for_file(tmp_path / f"pid-{rank}", 120)
        pids.append(int((tmp_path / f"pid-{rank}").read_text()))
    procs.extra_pids.update(pids)
    proc.kill()
    assert wait_until(lambda: not [p for p in pids if pid_alive(p)], 10)
    smi = shutil.which("nvidia-smi")
    if smi is not None:  # the driver's own list of processes holding device memory
        query = [smi, "--query-compute-apps=pid", "--format=csv,noheader"]
        listed = subprocess.run(query, check=True, capture_output=True, text=True).stdout
        holders = {int(x) for x in listed.split()}
        assert not holders & set(pids), holders
