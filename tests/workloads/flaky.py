"""Rank FAIL_RANK exits with FAIL_CODE while TORCHELASTIC_RESTART_COUNT < FAIL_TIMES.

Every worker appends "<restart_count> <rank> <pid>" to <out>/starts.txt on its first line."""

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
    sys.exit(int(os.environ.get("FAIL_CODE", "3")))
time.sleep(float(os.environ.get("OK_SLEEP", "0")))
