"""The launchers the catalog judges, and how each one's agent is started.

    launcher      this project: `python -m launcher`, writes the event log the checkers read
    torchrun      torch 2.13's `python -m torch.distributed.run`
    ft_launcher   NVIDIA's torchrun fork from nvidia-resiliency-ext (0.4.1: the newest that
                  installs on Python 3.11 here), its own c10d rendezvous and hang detection;
                  optional, found as $CHAOS_FT_LAUNCHER, then `.venv-ft/bin/ft_launcher` in the
                  project (`bash ci/install_ft_launcher.sh` makes it), then on PATH

The two torchrun-likes get the same job as ours: the launcher's extension flags dropped
(launcher_args.py), the c10d store host named with `is_host`, no event log. ft_launcher
lives in its own virtual environment (with the system's torch) because its `pynvml`
dependency makes every `import torch` warn on stderr, which would change what the other
launchers' runs print.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from chaos.topology.base import TopologyError

FT_VENV = Path(__file__).resolve().parents[2] / ".venv-ft"
FT_LAUNCHER_ENV = "CHAOS_FT_LAUNCHER"
TORCHRUN_LIKE = ("torchrun", "ft_launcher")
_INSTALL_FT = "bash ci/install_ft_launcher.sh (a venv at .venv-ft), or set CHAOS_FT_LAUNCHER"


def ft_launcher_path() -> Path | None:
    """The ft_launcher executable, or None when it is not installed."""
    named = os.environ.get(FT_LAUNCHER_ENV)
    if named:
        return Path(named) if Path(named).is_file() else None
    local = FT_VENV / "bin" / "ft_launcher"
    if local.is_file():
        return local
    found = shutil.which("ft_launcher")
    return Path(found) if found else None


def check_supported(launcher: str, rdzv_backend: str) -> None:
    """Refuses, with the fix, a launcher that cannot run this topology here."""
    if launcher not in ("launcher", *TORCHRUN_LIKE):
        raise TopologyError(f"unknown launcher {launcher!r} (launcher, torchrun or ft_launcher)")
    if launcher == "ft_launcher":
        if rdzv_backend != "c10d":
            raise TopologyError(
                f"ft_launcher supports only the c10d rendezvous, not {rdzv_backend!r}"
            )
        if ft_launcher_path() is None:
            raise TopologyError(f"ft_launcher is not installed: {_INSTALL_FT}")


def agent_command(launcher: str) -> list[str]:
    """The argv prefix that starts one agent (flags follow)."""
    if launcher == "ft_launcher":
        path = ft_launcher_path()
        if path is None:
            raise TopologyError(f"ft_launcher is not installed: {_INSTALL_FT}")
        # Without a fault-tolerance config file ft_launcher refuses to start; the defaults
        # are its documented ones.
        return [str(path), "--ignore-missing-fault-tol-cfg"]
    module = "launcher" if launcher == "launcher" else "torch.distributed.run"
    return [sys.executable, "-m", module]
