"""Rank FAIL_RANK exits with FAIL_CODE while TORCHELASTIC_RESTART_COUNT < FAIL_TIMES.

Every worker appends "<restart_count> <rank> <pid>" to <out>/starts.txt on its first line.
With FAIL_AFTER_STARTS=1 the failing rank first waits (30 s at most) until every rank of its
restart wrote that line: a peer stopped before its first line would not have started."""

from __future__ import annotations

import os
import sys
import time

out = sys.argv[1]
restart = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
rank = int(os.environ["RANK"])
with open(os.path.join(out, "starts.txt"), "a") as handle:
    handle.write(f"{restart} {rank} {os.getpid()}\n")
if rank == int(os.environ.get("FAIL_RANK", "1")) and restart < int(
    os.environ.get("FAIL_TIMES", "1")
):
    world = int(os.environ["WORLD_SIZE"])
    deadline = time.monotonic() + 30.0
    while os.environ.get("FAIL_AFTER_STARTS") == "1" and time.monotonic() < deadline:
        with open(os.path.join(out, "starts.txt")) as handle:
            if sum(line.split()[0] == str(restart) for line in handle if line.strip()) >= world:
                break
        time.sleep(0.05)
    sys.exit(int(os.environ.get("FAIL_CODE", "3")))
time.sleep(float(os.environ.get("OK_SLEEP", "0")))
