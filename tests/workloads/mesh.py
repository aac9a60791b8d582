"""A gloo job for multi-node tests that records what each worker saw and when to stop.

Usage: mesh.py OUT_DIR. Every worker appends one JSON object to OUT_DIR/starts.jsonl when it
starts (its torchelastic environment and pid), joins the gloo group, then runs steps STEP_S
apart, each one all_reduce of [1, rank, stop]: the first two check the world (size and sum
of ranks), the third is whether any worker has seen OUT_DIR/stop, so every worker leaves
after the same step (a fixed collective count, as a real job has). It stops after STEPS
steps too, then appends its result to OUT_DIR/finished.jsonl and exits 0.

Failure injection: global rank FAIL_RANK exits with FAIL_CODE before joining the group
while TORCHELASTIC_RESTART_COUNT < FAIL_TIMES. A collective that fails (a peer vanished)
raises, as a real training job would.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time

out = sys.argv[1]
env = os.environ
rank = int(env["RANK"])
restart = int(env["TORCHELASTIC_RESTART_COUNT"])
record = {
    "time": time.time(),
    "run_id": env["TORCHELASTIC_RUN_ID"],
    "restart_count": restart,
    "group_rank": int(env["GROUP_RANK"]),
    "group_world_size": int(env["GROUP_WORLD_SIZE"]),
    "rank": rank,
    "local_rank": int(env["LOCAL_RANK"]),
    "world_size": int(env["WORLD_SIZE"]),
    "local_world_size": int(env["LOCAL_WORLD_SIZE"]),
    "master_addr": env["MASTER_ADDR"],
    "master_port": int(env["MASTER_PORT"]),
    "pid": os.getpid(),
}
with open(os.path.join(out, "starts.jsonl"), "a") as handle:
    handle.write(json.dumps(record) + "\n")

if rank == int(env.get("FAIL_RANK", "-1")) and restart < int(env.get("FAIL_TIMES", "1")):
    sys.exit(int(env.get("FAIL_CODE", "3")))

import torch  # noqa: E402  (after the start record: it is what tests wait for)
import torch.distributed as dist  # noqa: E402

step_s = float(env.get("STEP_S", "0.1"))
max_steps = int(env.get("STEPS", "3000"))
stop_file = os.path.join(out, "stop")
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
world = dist.get_world_size()
steps = 0
value = torch.zeros(3)
while steps < max_steps:
    value = torch.tensor([1.0, float(rank), float(os.path.exists(stop_file))])
    dist.all_reduce(value)
    steps += 1
    if int(value[0].item()) != world or int(value[1].item()) != world * (world - 1) // 2:
        raise RuntimeError(f"all_reduce gave {value.tolist()} with world {world}")
    if value[2].item() > 0:
        break
    time.sleep(step_s)
done = {
    "rank": rank,
    "world_size": world,
    "restart_count": restart,
    "steps": steps,
    "sum": value[:2].tolist(),
    "pid": os.getpid(),
}
with open(os.path.join(out, "finished.jsonl"), "a") as handle:
    handle.write(json.dumps(done) + "\n")
dist.barrier()
dist.destroy_process_group()
