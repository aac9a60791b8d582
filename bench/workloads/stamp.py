"""Writes time.time() at its first line to <dir>/stamp_<RANK>, then sleeps [seconds]."""

import time

T0 = time.time()

import os  # noqa: E402
import sys  # noqa: E402

with open(os.path.join(sys.argv[1], f"stamp_{os.environ['RANK']}"), "w") as f:
    f.write(repr(T0))
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
