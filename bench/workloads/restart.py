"""Restart-latency workload (run with --max-restarts 1), argv: <dir>.

Attempt 0: rank 1 writes <dir>/fail (time.time()) and exits 1 at once; the others sleep
until the launcher stops them. Attempt 1: every worker writes its first-line time to
<dir>/attempt1_<RANK> and exits 0.
"""

import time

T0 = time.time()

import os  # noqa: E402
import sys  # noqa: E402

out, rank = sys.argv[1], os.environ["RANK"]
if os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
    if rank == "1":
        with open(os.path.join(out, "fail"), "w") as f:
            f.write(repr(time.time()))
        sys.exit(1)
    time.sleep(60)  # the launcher must stop us long before this
    sys.exit(3)
with open(os.path.join(out, f"attempt1_{rank}"), "w") as f:
    f.write(repr(T0))
