"""Multi-node bench workload (gloo, runs until killed), argv: <dir>.

At its first line (before torch is imported) it appends
"<time> <run_id> <restart_count> <group_rank> <rank> <world_size> <pid>" to <dir>/starts.txt,
time being that first line's time.time() (the format of tests/workloads/elastic.py). It then
forms the gloo group; after the first all_reduce it appends the same fields (time now) to
<dir>/ready.txt, and keeps all_reducing every STEP_S seconds (RUN_S in all, default 600),
overwriting <dir>/alive_<pid> with "<time> <world_size>" after each. A collective that
fails (a peer vanished) raises, as a real training job would.
"""

import time

T0 = time.time()

import datetime  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

out, env = sys.argv[1], os.environ


def append(name: str, stamp: float) -> None:
    line = (
        f"{stamp:.3f} {env['TORCHELASTIC_RUN_ID']} {env['TORCHELASTIC_RESTART_COUNT']} "
        f"{env['GROUP_RANK']} {env['RANK']} {env['WORLD_SIZE']} {os.getpid()}\n"
    )
    fd = os.open(os.path.join(out, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write on O_APPEND: lines never interleave
    finally:
        os.close(fd)


append("starts.txt", T0)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
world = dist.get_world_size()
step_s = float(env.get("STEP_S", "0.2"))
for step in range(max(1, int(float(env.get("RUN_S", "600")) / step_s))):
    value = torch.ones(1)
    dist.all_reduce(value)
    if int(value.item()) != world:
        raise RuntimeError(f"all_reduce gave {value.item()}, expected {world}")
    if step == 0:
        append("ready.txt", time.time())
    with open(os.path.join(out, f"alive_{os.getpid()}"), "w") as handle:
        handle.write(f"{time.time():.3f} {world}\n")
    time.sleep(step_s)
dist.destroy_process_group()
