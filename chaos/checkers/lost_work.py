"""lost_work: how many training steps each restart made the workload redo.

From the workload's reports alone (workload/steps.jsonl). Each incarnation of the job (see
facts.incarnations: a change of restart_count, resumed_from or world, or a rank going back
to an earlier step or reporting from a new pid) that started after another one redid
`last step reported before it - resumed_from` steps (all of them when it resumed from
nothing). Each must be <= expect.max_lost_steps, or the workload's checkpoint_every when
no bound is set.
"""

from __future__ import annotations

from chaos.checkers import facts
from chaos.checkers.verdict import Verdict, unknown, verdict
from chaos.history import History
from chaos.scenario.schema import Scenario


class LostWorkChecker:
    name = "lost_work"

    def applies(self, scenario: Scenario) -> bool:
        return True

    def check(self, history: History, scenario: Scenario) -> Verdict:
        bound = scenario.expect.max_lost_steps
        source = "expect.max_lost_steps"
        if bound is None:
            bound, source = scenario.workload.checkpoint_every, "workload.checkpoint_every"
        runs = facts.attempts(history)
        if not runs:
            return unknown(self.name, "the workload reported no step")
        origin = facts.time_origin(history)
        base = 0 if min(a.first_step for a in runs) <= 0 else 1
        evidence: list[str] = []
        lost: list[int] = []
        for i, attempt in enumerate(runs[1:], start=1):
            before = [a.last_step for a in runs[:i] if a.first_wall < attempt.first_wall]
            last = max(before, default=None)
            if last is None:
                continue
            resumed = attempt.resumed_from if attempt.resumed_from is not None else base - 1
            redone = max(0, last - resumed)
            lost.append(redone)
            evidence.append(
                f"restart at t={attempt.first_wall - origin:.2f}s (restart_count "
                f"{attempt.restart_count}, world {attempt.world}): last step {last}, resumed "
                f"from {attempt.resumed_from}, {redone} step(s) redone"
            )
        worst = max(lost, default=0)
        measured = {"lost_steps": lost, "max_lost_steps": worst, "bound": bound}
        if not lost:
            return verdict(self.name, True, "no restart: no step redone", [], measured)
        ok = worst <= bound
        summary = f"at most {worst} step(s) redone per restart over {len(lost)} restart(s)" + (
            f" (bound {bound})" if ok else f", above the bound {bound} ({source})"
        )
        return verdict(self.name, ok, summary, evidence, measured)
