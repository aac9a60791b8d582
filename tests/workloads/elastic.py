"""A long-running gloo job for multi-node tests.

Appends "<time> <run_id> <restart_count> <group_rank> <rank> <world_size> <pid>" to
<out>/starts.txt when it starts, then does RUN_S / STEP_S all_reduces, STEP_S apart (a
fixed count, so every rank runs the same collectives), then exits 0. A collective that
fails (a peer vanished) raises, as a real training job would."""

from __future__ import annotations

import datetime
import os
import sys
import time

import torch
import torch.distributed as dist

out = sys.argv[1]
run_s = float(os.environ.get("RUN_S", "30"))
step_s = float(os.environ.get("STEP_S", "0.2"))
env = os.environ
with open(os.path.join(out, "starts.txt"), "a") as handle:
    handle.write(
        f"{time.time():.3f} {env['TORCHELASTIC_RUN_ID']} {env['TORCHELASTIC_RESTART_COUNT']} "
        f"{env['GROUP_RANK']} {env['RANK']} {env['WORLD_SIZE']} {os.getpid()}\n"
    )
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
world = dist.get_world_size()
for _ in range(max(1, int(run_s / step_s))):
    value = torch.ones(1)
    dist.all_reduce(value)
    if int(value.item()) != world:
        raise RuntimeError(f"all_reduce gave {value.item()}, expected {world}")
    time.sleep(step_s)
with open(os.path.join(out, "finished.txt"), "a") as handle:
    handle.write(f"{env['RANK']} {world}\n")
dist.barrier()
dist.destroy_process_group()
