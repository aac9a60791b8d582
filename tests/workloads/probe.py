"""Writes this worker's environment and command line to <out>/<RANK>.json.

With --dist it first forms a gloo process group and checks an all_reduce, so the
MASTER_ADDR/PORT and agent-store contract is exercised for real."""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    out = sys.argv[1]
    summed = None
    if "--dist" in sys.argv:
        import torch
        import torch.distributed as dist

        dist.init_process_group("gloo")
        value = torch.tensor([float(dist.get_rank())])
        dist.all_reduce(value)
        summed = value.item()
        dist.barrier()
        dist.destroy_process_group()
    record = {
        "env": dict(os.environ),
        "argv": sys.argv,
        "executable": sys.executable,
        "unbuffered": not hasattr(sys.stdout, "buffer") or sys.stdout.line_buffering is False,
        "all_reduce": summed,
    }
    path = os.path.join(out, f"{os.environ['RANK']}.json")
    with open(path + ".tmp", "w") as handle:
        json.dump(record, handle)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
