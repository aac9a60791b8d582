"""`chaos validate FILE...`: load scenarios without running them (CI runs it on scenarios/).

Prints `ok: FILE (name, N faults)` per valid file and the one-line error per bad one; exit 0
when all are valid, 2 otherwise. A directory stands for the *.yaml / *.yml files under it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from chaos.scenario.loader import ScenarioError, load_scenario
from chaos.scenario.schema import TOPOLOGY_BACKENDS
from chaos.schedule import make_schedule

USAGE = """\
usage: chaos validate [--backend local|netns|docker] [--schedule] [--seed N] FILE|DIR...

Check scenario files without running them. Exit 0 when every file is valid, else 2.
  --backend B   validate as `chaos run --backend B` would run it
  --schedule    also print each scenario's seeded fault schedule
  --seed N      the seed for --schedule (default: each scenario's own)"""


def validate_main(args: list[str]) -> int:
    backend: str | None = None
    seed: int | None = None
    show_schedule = False
    targets: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("-h", "--help"):
            print(USAGE)
            return 0
        if arg == "--":
            targets.extend(rest)
            break
        if arg == "--schedule":
            show_schedule = True
        elif arg in ("--backend", "--seed") or arg.startswith(("--backend=", "--seed=")):
            name, _, value = arg.partition("=")
            if not value:
                if not rest:
                    return _usage_error(f"{name} needs a value")
                value = rest.pop(0)
            if name == "--backend":
                if value not in TOPOLOGY_BACKENDS:
                    return _usage_error(f"--backend must be one of {', '.join(TOPOLOGY_BACKENDS)}")
                backend = value
            else:
                try:
                    seed = int(value)
                except ValueError:
                    return _usage_error(f"--seed must be an integer, got {value!r}")
        elif arg.startswith("-") and arg != "-":
            return _usage_error(f"unknown option {arg!r}")
        else:
            targets.append(arg)
    if not targets:
        return _usage_error("no scenario files given")
    failed = False
    for path in _expand(targets):
        if path.is_dir():
            print(f"{path}: no scenario files (*.yaml, *.yml) in this directory", file=sys.stderr)
            failed = True
            continue
        try:
            scenario = load_scenario(path, backend=backend)
        except ScenarioError as err:
            print(err, file=sys.stderr)
            failed = True
            continue
        count = len(scenario.faults)
        print(f"ok: {path} ({scenario.name}, {count} fault{'s'[: count != 1]})")
        if show_schedule:
            print(make_schedule(scenario, seed).describe())
    return 2 if failed else 0


def _expand(targets: list[str]) -> list[Path]:
    """Files as given; directories as their scenario files, sorted (workload scripts and other
    non-YAML files are skipped). A directory without any stays, so it is reported, not skipped."""
    paths: list[Path] = []
    for target in targets:
        path = Path(target)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
            )
            paths.extend(found or [path])
        else:
            paths.append(path)
    return paths


def _usage_error(message: str) -> int:
    print(f"chaos validate: error: {message}\n{USAGE.splitlines()[0]}", file=sys.stderr)
    return 2
