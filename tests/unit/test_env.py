from __future__ import annotations

import pytest

from launcher.workers.env import (
    RoundContext,
    WorkerRanks,
    base_environment,
    worker_argv,
    worker_environment,
)

CTX = RoundContext(
    role="trainer",
    run_id="job1",
    master_addr="host0",
    master_port=1234,
    restart_count=2,
    max_restarts=3,
    use_agent_store=True,
    signals_to_handle="SIGTERM,SIGINT",
    virtual_local_rank=False,
)
RANKS = WorkerRanks(
    local_rank=1,
    global_rank=5,
    role_rank=5,
    local_world_size=4,
    world_size=8,
    role_world_size=8,
    group_rank=1,
    group_world_size=2,
)


def test_contract_values() -> None:
    env = worker_environment({"KEEP": "x"}, ranks=RANKS, round_ctx=CTX, error_file="/e.json")
    expected = {
        "KEEP": "x",
        "LOCAL_RANK": "1",
        "RANK": "5",
        "GROUP_RANK": "1",
        "ROLE_RANK": "5",
        "ROLE_NAME": "trainer",
        "LOCAL_WORLD_SIZE": "4",
        "WORLD_SIZE": "8",
        "GROUP_WORLD_SIZE": "2",
        "ROLE_WORLD_SIZE": "8",
        "MASTER_ADDR": "host0",
        "MASTER_PORT": "1234",
        "TORCHELASTIC_RESTART_COUNT": "2",
        "TORCHELASTIC_MAX_RESTARTS": "3",
        "TORCHELASTIC_RUN_ID": "job1",
        "TORCHELASTIC_USE_AGENT_STORE": "True",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
        "TORCHELASTIC_ERROR_FILE": "/e.json",
        "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT",
    }
    assert env == expected


def test_existing_nccl_setting_is_kept() -> None:
    env = worker_environment(
        {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "0"}, ranks=RANKS, round_ctx=CTX, error_file=""
    )
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "0"


def test_omp_rule() -> None:
    assert base_environment({}, nproc_per_node=2)["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in base_environment({}, nproc_per_node=1)
    assert base_environment({"OMP_NUM_THREADS": "4"}, nproc_per_node=2)["OMP_NUM_THREADS"] == "4"


def test_virtual_local_rank() -> None:
    ctx = RoundContext(**{**CTX.__dict__, "virtual_local_rank": True})
    env = worker_environment(
        {"CUDA_VISIBLE_DEVICES": "4,5"}, ranks=RANKS, round_ctx=ctx, error_file=""
    )
    assert (env["LOCAL_RANK"], env["CUDA_VISIBLE_DEVICES"]) == ("0", "5")
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
        worker_environment({"CUDA_VISIBLE_DEVICES": "4"}, ranks=RANKS, round_ctx=ctx, error_file="")


def test_local_rank_macro() -> None:
    assert worker_argv(("python", "--dev=${local_rank}"), 3) == ["python", "--dev=3"]
