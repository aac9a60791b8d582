"""A small but real elastic training job for chaos scenarios (gloo, DDP, CPU).

Usage (one process per rank, under `launcher` or `torchrun`):

    train.py --steps N --step-s S --checkpoint-every K --ckpt-dir DIR [--pg-timeout-s T]
             [--detached-helper] [--hang-rank R --hang-step K [--hang-mode M]]

Every rank resumes from DIR/ckpt.pt (step + model + optimizer state) when it exists, trains
a tiny MLP on synthetic data up to step N, and sleeps S seconds per step so faults land while
it runs. Rank 0 writes the checkpoint every K steps (tmp file + rename: a crash mid-write never
leaves a torn checkpoint). The harness observes it through two environment variables:

- `CHAOS_STEPS_FILE`: every rank appends one JSON line per finished step (one `write` on an
  O_APPEND descriptor, so ranks never interleave within a line): t, rank, local_rank, world,
  step, restart_count, resumed_from, node, node_addr, master_addr, master_port, pid.
- `CHAOS_CONTROL_DIR`: before each step a rank reads the harness's orders there (each
  written atomically when a fault fires; `pid`, when present, names the one worker meant):
  `fail-rank-<RANK>.json`: `{"exit_code": n}` exits with n, `{"exception": "msg"}` raises
  RuntimeError(msg) (recorded in the error file by the `record` decorator);
  `hang-rank-<RANK>.json`: `{"mode": M}` hangs in this step (modes below);
  `slow-rank-<RANK>.json`: `{"factor": k, "steps": [a, b]}` makes the compute section k times
  longer for steps a..b (null: no bound). fail and hang orders are consumed by renaming them
  first, so the worker that replaces this one after the restart does not obey them again.

Each step: forward and backward (DDP all_reduces the gradients), the optimizer step, an
all_reduce of the loss on a second gloo group (for the step report), the step report and the
beat, rank 0's checkpoint, then the simulated compute: `time.sleep(step_s)` inside
`launcher.progress.section("compute")`, the section the launcher's straggler scoring reads
(collective waits are outside it: they equalise the ranks).

Hang modes (`--hang-rank`/`--hang-step`, or a `hang-rank` order), all after the step's
collectives and before its beat, so the hung rank is the one behind, except `skip_collective`:

- `sleep`: `chaos_hang`, a long sleep that releases the GIL, as a wedged data loader would;
- `deadlock`: `chaos_deadlock`, two threads taking two locks in opposite order, the main
  thread joining them;
- `gil`: `chaos_gil`, a C call that never releases the GIL (`sum` over a huge range);
- `skip_collective`: the rank skips this step's loss all_reduce and goes on: it beats the
  step and blocks in the next step's gradient all_reduce, while its peers block in the loss
  all_reduce it skipped (two real stuck gloo collectives; the skipper is one step *ahead*).

Every step ends with `launcher.progress.beat(step=...)` (a no-op under torchrun), so the
launcher's hang detection watches the job; the teardown after the last step is a phase
without a timeout, so a slow barrier at the end is never taken for a hang. `--hang-rank R
--hang-step K [--hang-mode M]` makes rank R hang at step K of the first attempt only (mode
`sleep` by default), before its beat and report: its peers finish step K and block in DDP's
all_reduce of step K+1. Give such a run a `--pg-timeout-s` above the launcher's
`--hang-timeout`, so the launcher notices before gloo does.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import subprocess
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

try:
    from launcher.failures.record import record
except ImportError:  # run outside the repository (torchrun from another checkout)
    from torch.distributed.elastic.multiprocessing.errors import (  # type: ignore[assignment]
        record,
    )


class _NoProgress:
    """launcher.progress's calls as no-ops, for a run where launcher is not importable."""

    def beat(self, step: int | None = None) -> None:
        return None

    def phase(self, name: str, timeout: float | None = None) -> AbstractContextManager[None]:
        return nullcontext()

    def section(self, name: str) -> AbstractContextManager[None]:
        return nullcontext()


try:
    from launcher import progress
except ImportError:  # as for `record`: the workload must run without this repository
    progress = _NoProgress()  # type: ignore[assignment]

CKPT_NAME = "ckpt.pt"
HANG_S = 3600.0  # "forever" for a scenario; the launcher or the harness ends it first
HANG_MODES = ("sleep", "deadlock", "gil", "skip_collective")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A small elastic DDP training job.")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--step-s", type=float, default=0.1)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--ckpt-dir", type=Path, required=True)
    parser.add_argument("--pg-timeout-s", type=float, default=30.0)
    parser.add_argument(
        "--detached-helper",
        action="store_true",
        help="start a helper that leaves the worker's session (as `nohup cmd &` in a new "
        "session does): it outlives the worker unless the launcher contains it",
    )
    parser.add_argument(
        "--hang-rank",
        type=int,
        default=None,
        help="this global rank hangs at --hang-step on the first attempt (restart count 0)",
    )
    parser.add_argument("--hang-step", type=int, default=None)
    parser.add_argument("--hang-mode", choices=HANG_MODES, default="sleep")
    args = parser.parse_args()
    if (args.hang_rank is None) != (args.hang_step is None):
        parser.error("--hang-rank and --hang-step go together")
    return args


def chaos_hang() -> None:
    """A rank that stops making progress: a stack dump shows this frame. time.sleep releases
    the GIL, as a wedged C call or a dead data loader would leave it."""
    time.sleep(HANG_S)


def chaos_deadlock() -> None:
    """Two threads take two locks in opposite order and wait for each other forever; the main
    thread waits for them (a stack dump shows all three)."""
    first, second = threading.Lock(), threading.Lock()
    both_hold = threading.Barrier(2)

    def take(a: threading.Lock, b: threading.Lock) -> None:
        with a:
            both_hold.wait()  # each holds its first lock before it asks for the other
            with b:
                return

    threads = [
        threading.Thread(target=take, args=(first, second), name="chaos-lock-ab", daemon=True),
        threading.Thread(target=take, args=(second, first), name="chaos-lock-ba", daemon=True),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def chaos_gil() -> None:
    """One C call that holds the GIL and never checks for signals: the builtin `sum` over a
    range of 10**15 (hours). No other Python thread of the process runs meanwhile; py-spy
    reads the stack from outside, and faulthandler's SIGABRT handler is C, so both work."""
    sum(range(10**15))


def do_hang(mode: str) -> None:
    if mode == "deadlock":
        chaos_deadlock()
    elif mode == "gil":
        chaos_gil()
    else:
        chaos_hang()


def start_detached_helper() -> None:
    """A shell in a new session backgrounds `sleep` and exits: the sleep is in no process group
    of the worker's and its parent is gone (reparented to init or a subreaper)."""
    shell = "sleep 600 </dev/null >/dev/null 2>&1 &"
    subprocess.run(["/bin/sh", "-c", shell], start_new_session=True, check=True)


def load_checkpoint(ckpt_dir: Path) -> dict[str, Any] | None:
    path = ckpt_dir / CKPT_NAME
    if not path.exists():
        return None
    return dict(torch.load(path, map_location="cpu", weights_only=True))


def save_checkpoint(
    ckpt_dir: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer
) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / f".{CKPT_NAME}.{os.getpid()}.tmp"
    state = {"step": step, "model": model.state_dict(), "optimizer": opt.state_dict()}
    torch.save(state, tmp)
    os.replace(tmp, ckpt_dir / CKPT_NAME)  # atomic: readers see the old or the new file


def report_step(record_fields: dict[str, Any]) -> None:
    path = os.environ.get("CHAOS_STEPS_FILE")
    if not path:
        return
    data = (json.dumps(record_fields, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)  # one write per line: concurrent ranks never interleave
    finally:
        os.close(fd)


def _mine(order: dict[str, Any]) -> bool:
    """An order that names a pid is for that worker only (not its replacement)."""
    return order.get("pid") in (None, os.getpid())


def take_order(control: Path, name: str) -> dict[str, Any] | None:
    """Consume an order once: the rename is the consumption (atomic, first wins). An order
    for another worker of this rank (one that is gone) is consumed and ignored."""
    path = control / name
    if not path.exists():
        return None
    taken = path.with_name(f"{path.name}.consumed-{os.getpid()}")
    try:
        os.rename(path, taken)
    except FileNotFoundError:
        return None  # another incarnation of this rank consumed it first
    order = dict(json.loads(taken.read_text()))
    return order if _mine(order) else None


def read_order(control: Path, name: str) -> dict[str, Any] | None:
    """A standing order (read, not consumed), when it is for this worker."""
    try:
        order = dict(json.loads((control / name).read_text()))
    except (FileNotFoundError, ValueError):
        return None  # none, or replaced at this moment: read it next step
    return order if _mine(order) else None


def check_control(rank: int) -> tuple[str | None, dict[str, Any] | None]:
    """Fail as the harness asked; returns a hang mode to obey in this step, and the standing
    slow order."""
    control = os.environ.get("CHAOS_CONTROL_DIR")
    if not control:
        return None, None
    order = take_order(Path(control), f"fail-rank-{rank}.json")
    if order is not None:
        if "exception" in order:
            raise RuntimeError(str(order["exception"]))
        raise SystemExit(int(order.get("exit_code", 1)))
    hang = take_order(Path(control), f"hang-rank-{rank}.json")
    return (
        None if hang is None else str(hang.get("mode", "sleep")),
        read_order(Path(control), f"slow-rank-{rank}.json"),
    )


def slowdown(order: dict[str, Any] | None, step: int) -> float:
    """The compute section's factor for this step under a slow order (1: not slowed)."""
    if order is None:
        return 1.0
    low, high = order.get("steps") or (None, None)
    if (low is not None and step < low) or (high is not None and step > high):
        return 1.0
    return float(order.get("factor", 1.0))


@record
def main() -> None:
    args = parse_args()
    env = os.environ
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    if args.detached_helper:
        start_detached_helper()
    torch.set_num_threads(1)  # many ranks share two cores
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    # Load before joining the group: rank 0 cannot write a newer checkpoint until every rank
    # has joined and stepped, so all ranks read the same one.
    ckpt = load_checkpoint(args.ckpt_dir)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
    resumed_from = None if ckpt is None else int(ckpt["step"])

    timeout = datetime.timedelta(seconds=args.pg_timeout_s)
    dist.init_process_group("gloo", timeout=timeout)
    # The loss all_reduce runs on its own group: a rank that skips it leaves its peers stuck
    # there while it blocks in the next gradient all_reduce (a shared group would pair its
    # next collective with their pending one and carry on, one collective apart).
    metrics = dist.new_group(backend="gloo", timeout=timeout)
    # Every rank must run the same number of collectives: agree on rank 0's start step.
    start = torch.tensor([-1 if resumed_from is None else resumed_from])
    dist.broadcast(start, src=0)
    resumed_from = None if int(start.item()) < 0 else int(start.item())
    ddp = DistributedDataParallel(model)
    loss_fn = nn.MSELoss()
    base = {
        "rank": rank,
        "local_rank": int(env.get("LOCAL_RANK", "0")),
        "world": world,
        "restart_count": int(env.get("TORCHELASTIC_RESTART_COUNT", "0")),
        "resumed_from": resumed_from,
        "node": int(env["CHAOS_NODE"]) if env.get("CHAOS_NODE", "").isdigit() else None,
        "node_addr": env.get("CHAOS_NODE_ADDR") or env.get("MASTER_ADDR"),
        "master_addr": env.get("MASTER_ADDR"),
        "master_port": int(env.get("MASTER_PORT", "0")),
        "pid": os.getpid(),
    }
    # Only the first attempt hangs: the restart that recovers from it must finish.
    hang_at = args.hang_step if args.hang_rank == rank and base["restart_count"] == 0 else None
    for step in range((resumed_from or 0) + 1, args.steps + 1):
        hang, slow = check_control(rank)
        if step == hang_at:
            hang = args.hang_mode
        gen = torch.Generator().manual_seed(step * 1000 + rank)
        inputs = torch.randn(32, 16, generator=gen)
        target = inputs.sum(dim=1, keepdim=True)
        opt.zero_grad()
        loss = loss_fn(ddp(inputs), target)
        loss.backward()  # DDP all_reduces the gradients here
        opt.step()
        if hang != "skip_collective":
            dist.all_reduce(loss.detach(), group=metrics)
        if hang is not None and hang != "skip_collective":
            # After this step's collectives, before its beat: the peers finish step K and
            # wait in step K+1's, so the hung rank is the one behind (see hang_rank.yaml).
            do_hang(hang)
        report_step({"t": time.time(), "step": step, **base})
        progress.beat(step=step)
        if rank == 0 and step % args.checkpoint_every == 0:
            save_checkpoint(args.ckpt_dir, step, model, opt)
        with progress.section("compute"):  # the simulated compute: what a straggler stretches
            time.sleep(args.step_s * slowdown(slow, step))
    # After the last beat: without a phase, waiting here for a slow peer would count
    # against the hang timeout (no timeout: detection is suspended while it is open).
    with progress.phase("teardown"):
        dist.barrier()
        # gloo aborts at exit when a DDP reducer still holds the group: free it first.
        del ddp
        gc.collect()
        dist.destroy_process_group(metrics)
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
