"""final_world_size: the world size of the last round the job formed (expect.final_world_size).

From the launcher's last rendezvous.round.complete; with torchrun (no event log), from the
`world` of the workload's last report."""

from __future__ import annotations

from chaos.checkers import facts
from chaos.checkers.verdict import Verdict, unknown, verdict
from chaos.history import History
from chaos.scenario.schema import Scenario


class FinalWorldSizeChecker:
    name = "final_world_size"

    def applies(self, scenario: Scenario) -> bool:
        return scenario.expect.final_world_size is not None

    def check(self, history: History, scenario: Scenario) -> Verdict:
        expected = scenario.expect.final_world_size
        no_log = facts.no_event_log_reason(history, scenario)
        if no_log is None:
            formed = [r for r in facts.rounds(history) if not r.budget_spent]
            if not formed:
                return unknown(self.name, "no rendezvous round formed a group")
            world = formed[-1].world_size
            source = f"round {formed[-1].number} (rendezvous.round.complete)"
        else:
            reports = sorted(history.steps, key=lambda s: float(s.get("t") or 0.0))
            worlds = [w for s in reports if (w := facts.as_int(s.get("world"))) is not None]
            if not worlds:
                return unknown(self.name, f"{no_log} and the workload reported no world size")
            world = worlds[-1]
            source = "the workload's last report"
        ok = world == expected
        summary = f"final world size {world}" + ("" if ok else f", expected {expected}")
        return verdict(self.name, ok, summary, [f"from {source}"], {"final_world_size": world})
