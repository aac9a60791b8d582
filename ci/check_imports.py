"""Dependency rules of docs/design (checked in CI):
1. launcher never imports chaos, tests or yaml;
2. what user scripts import uses only the standard library: launcher/failures/record.py and
   launcher/progress/ (__init__.py and the layout.py it shares with the reader);
3. chaos imports from launcher only launcher.events (and the simulator launcher.rendezvous.state);
4. importing the CLI or launcher.progress does not import torch;
5. the agent never imports torch, on one node or many: only launcher/resolve.py may (to count
   GPUs for --nproc-per-node gpu/auto), and importing the agent, the multi-node rendezvous and
   its store backends does not (tests/integration/test_c10d_hosting.py runs a job without it);
6. launcher needs nothing installed: it imports only the standard library (and torch where
   rule 5 allows it), so its TLS to etcd is `ssl`, never `cryptography`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from launcher import events` imports launcher.events
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def main() -> int:
    problems: list[str] = []
    for path in (ROOT / "launcher").rglob("*.py"):
        for name in imports(path):
            if name.split(".")[0] in ("chaos", "tests", "yaml"):
                problems.append(f"{path}: launcher must not import {name}")
    worker_side = {
        ROOT / "launcher" / "failures" / "record.py": (),
        ROOT / "launcher" / "progress" / "__init__.py": ("launcher.progress.layout",),
        ROOT / "launcher" / "progress" / "layout.py": (),
    }
    for path, allowed_here in worker_side.items():
        for name in imports(path):
            top = name.split(".")[0]
            if top == "__future__" or top in sys.stdlib_module_names:
                continue
            if name.startswith(allowed_here):
                continue
            problems.append(f"{path}: user scripts import it: standard library only, not {name}")
    allowed = ("launcher.events", "launcher.rendezvous.state")
    for path in (ROOT / "chaos").rglob("*.py"):
        for name in imports(path):
            if name.split(".")[0] == "launcher" and not name.startswith(allowed):
                problems.append(f"{path}: chaos may use only {allowed} of launcher, not {name}")
    may_import_torch = {ROOT / "launcher" / "resolve.py"}
    for path in (ROOT / "launcher").rglob("*.py"):
        for name in imports(path):
            top = name.split(".")[0]
            if top == "torch" and path not in may_import_torch:
                problems.append(f"{path}: the agent must not import torch ({name})")
            elif top not in (*sys.stdlib_module_names, "__future__", "launcher", "torch"):
                problems.append(f"{path}: launcher uses only the standard library, not {name}")
    agent_side = (
        "launcher.cli",
        "launcher.progress",
        "launcher.agent",
        "launcher.rendezvous.dynamic",
        "launcher.rendezvous.backends.c10d",
        "launcher.rendezvous.backends.etcd",
    )
    for module in agent_side:
        probe = f"import sys, {module}; sys.exit('torch' in sys.modules)"
        if subprocess.run([sys.executable, "-c", probe], check=False, cwd=ROOT).returncode != 0:
            problems.append(f"importing {module} imports torch")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
