"""Starts a helper that leaves the worker's process group and session, as daemons do.

The worker forks; the child calls setsid() and forks again; the grandchild (reparented away
from the worker) writes its pid to <out>/detached-<rank>-<restart>.txt and sleeps. Then the
worker, by --then:
    fail-first  exits 3 on its first attempt (a charged restart), 0 on later ones
    exit        exits 0 at once (a leftover after success)
    sleep       sleeps until it is signalled (the launcher is the one to stop)
It writes <out>/worker-<rank>-<restart>.txt with its own pid before that, and waits until
every rank's helper is up.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def detach(path: str) -> None:
    if os.fork() != 0:
        os.wait()  # the middle process exits at once: reap it
        return
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    # The grandchild: another session, parent gone (reparented to init or a subreaper).
    with open(path + ".tmp", "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.execvp("sleep", ["sleep", "600"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--then", choices=["fail-first", "exit", "sleep"], default="exit")
    args = parser.parse_args()
    rank = os.environ.get("RANK", "0")
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    detached = os.path.join(args.out, f"detached-{rank}-{restart}.txt")
    detach(detached)
    while not os.path.exists(detached):
        time.sleep(0.01)  # the grandchild writes it right after its fork
    mine = os.path.join(args.out, f"worker-{rank}-{restart}.txt")
    with open(mine + ".tmp", "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(mine + ".tmp", mine)
    # Every rank's helper is up before any worker ends the attempt (a failure stops the rest).
    world = int(os.environ.get("WORLD_SIZE", "1"))
    peers = [os.path.join(args.out, f"detached-{r}-{restart}.txt") for r in range(world)]
    while not all(os.path.exists(p) for p in peers):
        time.sleep(0.01)
    if args.then == "fail-first":
        return 3 if restart == "0" else 0
    if args.then == "sleep":
        time.sleep(600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
