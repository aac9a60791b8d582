"""`chaos check RUN_DIR`: re-judge a saved run from its files alone.

Reads RUN_DIR/scenario.yaml (the scenario as run), the history, the seed (RUN_DIR/seed, else
the run.start record, else the scenario's), runs the checkers, rewrites the report files and
prints the summary. Exit status: 0 when no verdict failed (a warning line on stderr when some
are unknown), 1 when one failed, 2 when RUN_DIR is not a run directory (one-line error).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from chaos.checkers import facts
from chaos.checkers.suite import run_checkers
from chaos.checkers.verdict import FAIL, UNKNOWN
from chaos.history import History, load_history
from chaos.scenario.schema import Scenario


class BadRunDir(Exception):
    def __init__(self, run_dir: Path, problem: str) -> None:
        self.run_dir = run_dir
        self.problem = problem
        super().__init__(f"{run_dir}: {problem}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chaos check", description="Re-judge a saved run from its files."
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    return parser


def load_scenario_of(run_dir: Path) -> Scenario:
    if not run_dir.is_dir():
        raise BadRunDir(run_dir, "not a directory")
    path = run_dir / "scenario.yaml"
    if not path.is_file():
        raise BadRunDir(run_dir, "no scenario.yaml: not a chaos run directory")
    try:
        from chaos.scenario.loader import ScenarioError, load_scenario
    except ImportError as err:
        raise BadRunDir(run_dir, f"cannot load scenarios here ({err})") from err
    try:
        return load_scenario(path)
    except (ScenarioError, OSError) as err:
        raise BadRunDir(run_dir, f"bad scenario.yaml: {err}") from err


def seed_of(run_dir: Path, history: History, scenario: Scenario) -> int:
    seed_file = run_dir / "seed"
    if seed_file.is_file():
        text = seed_file.read_text().strip()
        if text.lstrip("-").isdigit():
            return int(text)
    for record in facts.records(history, "run.start"):
        seed = facts.as_int(record.get("seed"))
        if seed is not None:
            return seed
    return scenario.seed


def replay_of(run_dir: Path, history: History, scenario: Scenario, seed: int) -> str:
    """The command that replays the run: from its scenario.yaml, same seed, backend, launcher."""
    start = next(iter(facts.records(history, "run.start")), {})
    backend = str(start.get("backend") or scenario.topology.backend)
    launcher = str(start.get("launcher") or scenario.launcher)
    parts = ["chaos", "run", str(run_dir / "scenario.yaml"), "--seed", str(seed)]
    parts += ["--backend", backend]
    if launcher != "launcher":
        parts += ["--launcher", launcher]
    return shlex.join(parts)


def check_main(args: list[str]) -> int:
    try:
        opts = _parser().parse_args(args)
    except SystemExit as stop:  # --help (0) or a usage error (2, already printed)
        return stop.code if isinstance(stop.code, int) else 2
    run_dir: Path = opts.run_dir
    try:
        scenario = load_scenario_of(run_dir)
        if not (run_dir / "history.jsonl").is_file():
            raise BadRunDir(run_dir, "no history.jsonl: the run never started")
        history = load_history(run_dir)
    except BadRunDir as err:
        print(f"chaos check: error: {err}", file=sys.stderr)
        return 2
    from chaos.report import write_report

    seed = seed_of(run_dir, history, scenario)
    verdicts = run_checkers(history, scenario)
    replay = replay_of(run_dir, history, scenario, seed)
    summary = write_report(
        run_dir, scenario, verdicts, seed=seed, replay_command=replay, history=history
    )
    print(summary, end="")
    if any(v.status == FAIL for v in verdicts):
        return 1
    unknown = [v.name for v in verdicts if v.status == UNKNOWN]
    if unknown:
        print(f"chaos check: warning: undecided verdicts: {', '.join(unknown)}", file=sys.stderr)
    return 0
