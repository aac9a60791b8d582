"""NCCL on real GPUs: writes <out>/<RANK>.json with the environment, the device and an
all_reduce result; with --hang-rank R rank R sleeps in `chaos_hang` before the collective
(its peers block in NCCL) and every rank beats launcher.progress first; with --hold-s S each
rank keeps 256 MiB of device memory for S seconds and writes its pid first."""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist

from launcher import progress


def chaos_hang() -> None:
    time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--hang-rank", type=int, default=-1)
    parser.add_argument("--hold-s", type=float, default=0.0)
    args = parser.parse_args()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    if args.hold_s:
        block = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
        with open(os.path.join(args.out, f"pid-{rank}"), "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(args.hold_s)
        del block
        return
    dist.init_process_group("nccl")
    value = torch.tensor([float(rank)], device="cuda")
    dist.all_reduce(value)
    for step in range(1, 4):
        progress.beat(step=step)
        if rank == args.hang_rank and os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0":
            chaos_hang()
        dist.all_reduce(torch.ones(1, device="cuda"))
    record = {
        "env": dict(os.environ),
        "device": torch.cuda.current_device(),
        "device_name": torch.cuda.get_device_name(),
        "all_reduce": value.item(),
    }
    with progress.phase("teardown"):
        dist.destroy_process_group()
    with open(os.path.join(args.out, f"{rank}.json"), "w") as handle:
        json.dump(record, handle)


if __name__ == "__main__":
    main()
