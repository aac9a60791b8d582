"""Fails in a chosen way on local rank 1; other ranks wait to be stopped.

argv: MODE where MODE is one of raise-ours, raise-torch, raise-plain, exit:N, signal:NAME."""

from __future__ import annotations

import os
import signal
import sys
import time

MODE = sys.argv[1]


def fail() -> None:
    if MODE.startswith("exit:"):
        sys.exit(int(MODE.split(":")[1]))
    if MODE.startswith("signal:"):
        os.kill(os.getpid(), signal.Signals[MODE.split(":")[1]])
        time.sleep(10)
    raise ValueError(f"boom from rank {os.environ['RANK']}")


def main() -> None:
    if os.environ["LOCAL_RANK"] == "1":
        fail()
    time.sleep(60)


if MODE == "raise-ours":
    from launcher.failures.record import record

    main = record(main)
elif MODE == "raise-torch":
    from torch.distributed.elastic.multiprocessing.errors import record as torch_record

    main = torch_record(main)

if __name__ == "__main__":
    main()
