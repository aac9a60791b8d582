"""An elastic launcher for distributed PyTorch training, drop-in compatible with torchrun.

Layering (a module may import only from layers below it):

    cli            flags -> LaunchConfig -> Agent -> exit code; signals and logging live here
    agent          the per-node loop: rendezvous, start workers, monitor, restart
                   (agent.py, node_workers.py: its worker side, announce.py: its events)
    rendezvous/    who is in the job and with which ranks (pure core + store backends)
    workers/       spawning, stopping and logging worker processes
    tcpstore/      torch's TCPStore wire protocol: server and client, standard library only
    failures/      error files, the `record` decorator, the failure summary
    config events errors   plain data shared by all of the above

Importing this package must stay cheap: nothing here imports torch.
"""

from __future__ import annotations

__version__ = "0.1.0"
