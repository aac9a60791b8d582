"""The checkers a run is judged by, and running them without letting one crash the rest."""

from __future__ import annotations

import traceback
from collections.abc import Sequence

from chaos.checkers.hangs import HangChecker
from chaos.checkers.hygiene import HygieneChecker
from chaos.checkers.intruder import IntruderChecker
from chaos.checkers.lost_work import LostWorkChecker
from chaos.checkers.outcome import OutcomeChecker
from chaos.checkers.rank_map import RankMapChecker
from chaos.checkers.restarts import RestartsChecker, ScaleUnchargedChecker
from chaos.checkers.root_cause import RootCauseChecker
from chaos.checkers.stragglers import StragglerChecker
from chaos.checkers.timing import DetectionChecker, RecoveryChecker
from chaos.checkers.verdict import Checker, Verdict, unknown
from chaos.checkers.world import FinalWorldSizeChecker
from chaos.history import History
from chaos.scenario.schema import Scenario


def default_checkers() -> list[Checker]:
    return [
        OutcomeChecker(),
        RestartsChecker(),
        ScaleUnchargedChecker(),
        FinalWorldSizeChecker(),
        RankMapChecker(),
        RootCauseChecker(),
        LostWorkChecker(),
        DetectionChecker(),
        RecoveryChecker(),
        HangChecker(),
        StragglerChecker(),
        IntruderChecker(),
        HygieneChecker(),
    ]


def run_checkers(
    history: History, scenario: Scenario, checkers: Sequence[Checker] | None = None
) -> list[Verdict]:
    """One verdict per applicable checker; a checker that raises gives `unknown`."""
    verdicts = []
    for checker in default_checkers() if checkers is None else checkers:
        name = getattr(checker, "name", type(checker).__name__)
        try:
            if not checker.applies(scenario):
                continue
            verdicts.append(checker.check(history, scenario))
        except Exception as err:  # a broken checker must not hide the other verdicts
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
            at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
            verdicts.append(
                unknown(
                    name,
                    f"checker crashed: {last}",
                    [f"{last}{at}"],
                    {"error": last},
                )
            )
    return verdicts
