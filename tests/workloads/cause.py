"""A gloo job whose failing worker lets its peers' symptoms come first.

Usage: cause.py OUT_DIR. Every worker records its start in OUT_DIR/starts.jsonl (like
mesh.py, which tests wait for), joins the gloo group and runs one all_reduce. Then:

- CAUSE_RANK (the root cause) waits until VICTIM_RANK is blocked in the next all_reduce
  (OUT_DIR/blocked-<rank>), destroys its group (every peer's pair closes: gloo raises
  "Connection closed by peer"), waits until the victim has written its error file
  (OUT_DIR/symptom-<rank>), then after CAUSE_DELAY_S exits CAUSE_CODE by itself. The delay
  stands for an interpreter slow to tear gloo down: the symptom is stamped first.
- every other worker enters the next all_reduce, which fails; `record` writes its error
  file; it then marks OUT_DIR/symptom-<rank> and, in LINGER_RANKS (all when "all"), waits
  to be stopped, as a worker still shutting down does.

With CAUSE_RANK=-1 every worker instead runs all_reduce STEP_S apart until OUT_DIR/stop
exists (then exits 0), marking OUT_DIR/ready-<rank> after its first step: a peer that
vanishes makes its collective fail, recorded in its error file.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from pathlib import Path

from launcher.failures.record import record

out = Path(sys.argv[1])
env = os.environ
rank = int(env["RANK"])
cause = int(env.get("CAUSE_RANK", "-1"))
victim = int(env.get("VICTIM_RANK", "0"))
linger = env.get("LINGER_RANKS", "")


def wait_for(path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s:g}s")
        time.sleep(0.02)


@record
def main() -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    value = torch.ones(1)
    dist.all_reduce(value)
    if cause < 0:
        (out / f"ready-{rank}").touch()
        while not (out / "stop").exists():
            time.sleep(float(env.get("STEP_S", "0.1")))
            dist.all_reduce(value)
        # Not left to the interpreter's exit: a worker stopped within moments of joining
        # its group aborted there (torch 2.13: "terminate called without an active
        # exception", SIGABRT), a failure of the test's making.
        dist.destroy_process_group()
        return
    if rank == cause:
        wait_for(out / f"blocked-{victim}")
        time.sleep(0.3)  # the victim is inside its all_reduce by now (it fails either way)
        dist.destroy_process_group()
        wait_for(out / f"symptom-{victim}")
        time.sleep(float(env.get("CAUSE_DELAY_S", "1.5")))
        sys.exit(int(env.get("CAUSE_CODE", "3")))
    (out / f"blocked-{rank}").touch()
    dist.all_reduce(value)
    time.sleep(60)  # not reached: the cause's group is gone


start = {
    "rank": rank,
    "local_rank": int(env["LOCAL_RANK"]),
    "world_size": int(env["WORLD_SIZE"]),
    "restart_count": int(env["TORCHELASTIC_RESTART_COUNT"]),
    "pid": os.getpid(),
}
with (out / "starts.jsonl").open("a") as handle:
    handle.write(json.dumps(start) + "\n")
try:
    main()
except Exception:
    (out / f"symptom-{rank}").touch()
    if linger == "all" or str(rank) in linger.split(","):
        time.sleep(60)
    raise
