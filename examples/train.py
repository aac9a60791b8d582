"""A small but real DDP training job: `launcher --nproc-per-node 4 examples/train.py`.

Each worker trains a tiny regression model on its shard of synthetic data with gloo
all-reduce (DDP), checks that every rank holds identical weights at the end, and rank 0
prints the loss curve. Decorated with `record` so a crash shows its traceback in the
launcher's failure summary.
"""

from __future__ import annotations

import argparse
import gc
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from launcher.failures.record import record


@record
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    true_w = torch.randn(8, 1)
    gen = torch.Generator().manual_seed(1000 + rank)
    x = torch.randn(256, 8, generator=gen)
    y = x @ true_w + 0.01 * torch.randn(256, 1, generator=gen)

    model = DistributedDataParallel(torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    for step in range(args.steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:3d} loss {loss.item():.5f}", flush=True)

    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(weights) for _ in range(world)]
    dist.all_gather(gathered, weights)
    if not all(torch.equal(weights, g) for g in gathered):
        raise RuntimeError("ranks disagree on the trained weights")
    if rank == 0:
        restarts = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        print(f"done: world_size={world} restarts={restarts} weights in sync", flush=True)
    # Free DDP (its reducer sits in a reference cycle, hence the collect) before tearing the
    # group down: gloo work still holding tensors at interpreter exit aborts the process
    # with SIGABRT under torchrun too (a known torch issue).
    del model, opt, gathered
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
