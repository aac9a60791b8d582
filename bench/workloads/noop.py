"""Launch-overhead workload: prints one line, imports nothing heavy (no torch)."""

import os

print(f"noop rank={os.environ['RANK']}", flush=True)
