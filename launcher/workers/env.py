"""The environment contract of one worker, as torchrun defines it. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LOCAL_RANK_MACRO = "${local_rank}"


@dataclass(frozen=True, kw_only=True)
class WorkerRanks:
    local_rank: int
    global_rank: int
    role_rank: int
    local_world_size: int
    world_size: int
    role_world_size: int
    group_rank: int
    group_world_size: int


@dataclass(frozen=True, kw_only=True)
class RoundContext:
    """What every worker of one attempt shares."""

    role: str
    run_id: str
    master_addr: str
    master_port: int
    restart_count: int
    max_restarts: int
    use_agent_store: bool
    signals_to_handle: str
    virtual_local_rank: bool


def base_environment(agent_env: Mapping[str, str], *, nproc_per_node: int) -> dict[str, str]:
    """The agent-wide part: a copy of the agent's environment plus torchrun's defaults."""
    env = dict(agent_env)
    if "OMP_NUM_THREADS" not in env and nproc_per_node > 1:
        env["OMP_NUM_THREADS"] = "1"
    return env


def worker_environment(
    base: Mapping[str, str],
    *,
    ranks: WorkerRanks,
    round_ctx: RoundContext,
    error_file: str,
) -> dict[str, str]:
    env = dict(base)
    local_rank = 0 if round_ctx.virtual_local_rank else ranks.local_rank
    env.update(
        {
            "LOCAL_RANK": str(local_rank),
            "RANK": str(ranks.global_rank),
            "GROUP_RANK": str(ranks.group_rank),
            "ROLE_RANK": str(ranks.role_rank),
            "ROLE_NAME": round_ctx.role,
            "LOCAL_WORLD_SIZE": str(ranks.local_world_size),
            "WORLD_SIZE": str(ranks.world_size),
            "GROUP_WORLD_SIZE": str(ranks.group_world_size),
            "ROLE_WORLD_SIZE": str(ranks.role_world_size),
            "MASTER_ADDR": round_ctx.master_addr,
            "MASTER_PORT": str(round_ctx.master_port),
            "TORCHELASTIC_RESTART_COUNT": str(round_ctx.restart_count),
            "TORCHELASTIC_MAX_RESTARTS": str(round_ctx.max_restarts),
            "TORCHELASTIC_RUN_ID": round_ctx.run_id,
            "TORCHELASTIC_USE_AGENT_STORE": str(round_ctx.use_agent_store),
            "TORCH_NCCL_ASYNC_ERROR_HANDLING": base.get("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1"),
            "TORCHELASTIC_ERROR_FILE": error_file,
            "TORCHELASTIC_SIGNALS_TO_HANDLE": round_ctx.signals_to_handle,
        }
    )
    if round_ctx.virtual_local_rank:
        env["CUDA_VISIBLE_DEVICES"] = _visible_device(base, ranks.local_rank)
    return env


def _visible_device(base: Mapping[str, str], local_rank: int) -> str:
    listed = base.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return str(local_rank)
    devices = [d.strip() for d in listed.split(",") if d.strip()]
    if local_rank >= len(devices):
        raise ValueError(
            f"local_rank {local_rank} has no device in CUDA_VISIBLE_DEVICES={listed!r}"
        )
    return devices[local_rank]


def worker_argv(argv: tuple[str, ...], local_rank: int) -> list[str]:
    return [arg.replace(LOCAL_RANK_MACRO, str(local_rank)) for arg in argv]
