"""Records its pid and a child's pid in <out>/pids-<rank>.txt, then sleeps.

On SIGTERM/SIGINT/SIGHUP/SIGQUIT it writes <out>/got-<SIGNAL>-<rank> and exits 0, so tests
can see which signal the launcher forwarded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

out = sys.argv[1]
rank = os.environ["RANK"]


def on_signal(signum: int, _frame: object) -> None:
    open(os.path.join(out, f"got-{signal.Signals(signum).name}-{rank}"), "w").close()
    sys.exit(0)


for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(sig, on_signal)
child = subprocess.Popen(["sleep", "300"])
path = os.path.join(out, f"pids-{rank}.txt")
with open(path + ".tmp", "w") as handle:
    handle.write(f"{os.getpid()} {child.pid}\n")
os.replace(path + ".tmp", path)
time.sleep(300)
