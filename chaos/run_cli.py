"""`chaos run SCENARIO.yaml`: load, run, judge, report; exit 0 only if every verdict passed."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chaos run", description="Run one scenario.")
    parser.add_argument("scenario", type=Path)
    parser.add_argument(
        "--backend",
        choices=["local", "netns", "docker"],
        default=None,
        help="topology backend (default: the scenario's)",
    )
    parser.add_argument("--seed", type=int, default=None, help="default: the scenario's seed")
    parser.add_argument(
        "--launcher",
        choices=["launcher", "torchrun", "ft_launcher"],
        default=None,
        help="the launcher under test (default: the scenario's)",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="where to write the run (default: runs/<name>-<time>)",
    )
    parser.add_argument(
        "--image",
        default=None,
        help="docker backend: the node image (default: the scenario's, else one built offline)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def replay_command(
    scenario: Path, seed: int, backend: str, launcher: str, image: str | None = None
) -> str:
    parts = ["chaos", "run", str(scenario), "--seed", str(seed), "--backend", backend]
    if launcher != "launcher":
        parts += ["--launcher", launcher]
    if image:
        parts += ["--image", image]
    return shlex.join(parts)


def run_main(args: list[str]) -> int:
    from chaos.checkers import run_checkers
    from chaos.history import load_history
    from chaos.report import write_report
    from chaos.runner import RunError, run_scenario
    from chaos.scenario.loader import ScenarioError, load_scenario

    opts = _parser().parse_args(args)
    try:
        scenario = load_scenario(opts.scenario, backend=opts.backend)
    except (ScenarioError, OSError) as err:
        print(f"chaos: error: {err}", file=sys.stderr)
        return 2
    seed = scenario.seed if opts.seed is None else opts.seed
    backend = opts.backend or scenario.topology.backend
    if opts.image is not None:
        if backend != "docker":
            print(
                f"chaos: error: --image is for --backend docker (this run: {backend})",
                file=sys.stderr,
            )
            return 2
        scenario = dataclasses.replace(
            scenario, topology=dataclasses.replace(scenario.topology, image=opts.image)
        )
    launcher = opts.launcher or scenario.launcher
    run_dir = opts.run_dir or Path("runs") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"

    def progress(line: str) -> None:
        if not opts.quiet:
            print(f"[chaos] {line}", file=sys.stderr, flush=True)

    try:
        run_scenario(
            scenario,
            run_dir=run_dir,
            seed=seed,
            backend=backend,
            launcher=launcher,
            progress=progress,
        )
    except RunError as err:
        print(f"chaos: error: {err}", file=sys.stderr)
        return 2
    # Judge and report the scenario as it was run (overrides applied).
    scenario = dataclasses.replace(
        scenario,
        seed=seed,
        launcher=launcher,
        topology=dataclasses.replace(scenario.topology, backend=backend),
    )
    verdicts = run_checkers(load_history(run_dir), scenario)
    replay = replay_command(opts.scenario, seed, backend, launcher, opts.image)
    summary = write_report(run_dir, scenario, verdicts, seed=seed, replay_command=replay)
    print(summary)
    failed = [v for v in verdicts if v.status == "fail"]
    if failed:
        print(f"replay: {replay}", file=sys.stderr)
        return 1
    return 0
