"""A gloo job that beats once per step; one rank hangs on the first attempt.

    hanger.py OUT --steps N --hang-rank R --hang-step K [--how sleep|timer] [--always]
              [--compute-s S [--slow-rank R]] [--no-beat] [--pg-timeout-s T]

At step K of attempt 0 (every attempt with --always) rank R stops in `chaos_hang`:
    sleep   time.sleep in a named function (the GIL released; its peers block in all_reduce)
    timer   the same, inside torch's `expires(after=1)` (TORCHELASTIC_ENABLE_FILE_TIMER=1)
    gil     a busy loop that never releases the GIL (py-spy must still dump it)
With --compute-s every step times a `progress.section("compute")` of S seconds (3S on
--slow-rank), for straggler scores. Every rank writes OUT/done-<rank>-<restart> at the end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time

import torch
import torch.distributed as dist

from launcher import progress
from launcher.failures.record import record


def chaos_hang(how: str) -> None:
    if how == "gil":
        while True:  # never yields the GIL
            pass
    time.sleep(3600)


@record
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--hang-rank", type=int, default=-1)
    parser.add_argument("--hang-step", type=int, default=5)
    parser.add_argument("--how", choices=["sleep", "timer", "gil"], default="sleep")
    parser.add_argument("--always", action="store_true")
    parser.add_argument("--step-s", type=float, default=0.05)
    parser.add_argument("--compute-s", type=float, default=0.0, help="timed section per step")
    parser.add_argument("--slow-rank", type=int, default=-1, help="its section takes 3x")
    parser.add_argument("--no-beat", action="store_true", help="a torchrun script: no progress")
    parser.add_argument("--pg-timeout-s", type=float, default=600.0)
    args = parser.parse_args()
    rank = int(os.environ["RANK"])
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=args.pg_timeout_s))
    hang_now = rank == args.hang_rank and (restart == 0 or args.always)
    for step in range(1, args.steps + 1):
        if hang_now and step == args.hang_step:
            if args.how == "timer":
                from torch.distributed.elastic.timer import FileTimerClient, configure, expires

                configure(FileTimerClient(os.environ["TORCHELASTIC_TIMER_FILE"]))
                with expires(after=1, scope="chaos_step"):
                    chaos_hang("sleep")
            chaos_hang(args.how)
        if args.compute_s > 0:
            with progress.section("compute"):
                time.sleep(args.compute_s * (3 if rank == args.slow_rank else 1))
        dist.all_reduce(torch.ones(4))
        if not args.no_beat:
            progress.beat(step=step)
        time.sleep(args.step_s)
    with progress.phase("teardown"):  # no deadline: the last beat is not a hang's start
        dist.barrier()
        dist.destroy_process_group()
    open(os.path.join(args.out, f"done-{rank}-{restart}"), "w").close()


if __name__ == "__main__":
    main()
