"""Checkers: judge a run from its history alone (so `chaos check RUN_DIR` can re-judge it).

    verdict.py   Verdict, the Checker protocol, worst-wins combination
    facts.py     read-only views of a History shared by the checkers and the timeline
    outcome.py restarts.py world.py rank_map.py root_cause.py lost_work.py timing.py
    hangs.py hygiene.py   one property each, pure
    suite.py     default_checkers(), run_checkers()
    cli_check.py `chaos check RUN_DIR`

Layering: checkers import chaos.history, chaos.scenario.schema and launcher.events only.
"""

from __future__ import annotations

from chaos.checkers.suite import default_checkers, run_checkers
from chaos.checkers.verdict import FAIL, PASS, UNKNOWN, Checker, Verdict, overall, worst

__all__ = [
    "FAIL",
    "PASS",
    "UNKNOWN",
    "Checker",
    "Verdict",
    "default_checkers",
    "overall",
    "run_checkers",
    "worst",
]
