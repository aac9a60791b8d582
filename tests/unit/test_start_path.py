"""What an agent imports before its first round: not the worker side (launcher/node_workers.py
says why). A fresh interpreter, since this test session has imported everything already."""

from __future__ import annotations

import json
import subprocess
import sys

START_PATH = (
    "launcher.cli",
    "launcher.agent",
    "launcher.rendezvous.dynamic",
    "launcher.rendezvous.backends.c10d",
    "launcher.rendezvous.backends.etcd",
)
WORKER_SIDE = (
    "launcher.node_workers",
    "launcher.progress.watch",
    "launcher.progress.detector",
    "launcher.progress.stragglers",
    "launcher.workers.group",
    "launcher.workers.env",
    "launcher.workers.pump",
    "statistics",
    "subprocess",
)


def _imported_after(modules: tuple[str, ...]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout))


def test_the_start_path_leaves_the_worker_side_out() -> None:
    loaded = _imported_after(START_PATH)
    assert "launcher.agent" in loaded
    assert sorted(loaded & set(WORKER_SIDE)) == []


def test_the_worker_side_imports_what_the_start_path_leaves_out() -> None:
    # Guards the test above: these names are real modules that the worker side does use.
    loaded = _imported_after((*START_PATH, "launcher.node_workers"))
    assert sorted(set(WORKER_SIDE) - loaded) == []
