"""hygiene: nothing of the job outlived it (run.end: no leftover pid, no port left bound)."""

from __future__ import annotations

from chaos.checkers import facts
from chaos.checkers.verdict import Verdict, unknown, verdict
from chaos.history import History
from chaos.scenario.schema import Scenario


class HygieneChecker:
    name = "hygiene"

    def applies(self, scenario: Scenario) -> bool:
        return scenario.expect.hygiene

    def check(self, history: History, scenario: Scenario) -> Verdict:
        ends = facts.records(history, "run.end")
        if not ends:
            return unknown(self.name, "no run.end record: the run did not finish cleaning up")
        end = ends[-1]
        pids = list(end.get("leftover_pids") or [])
        ports = list(end.get("bound_ports") or [])
        evidence = []
        if pids:
            evidence.append(f"leftover pids: {', '.join(map(str, pids))}")
        if ports:
            evidence.append(f"ports still bound: {', '.join(map(str, ports))}")
        ok = not pids and not ports
        summary = (
            "no process or port left behind"
            if ok
            else f"{len(pids)} leftover process(es), {len(ports)} bound port(s)"
        )
        return verdict(
            self.name, ok, summary, evidence, {"leftover_pids": pids, "bound_ports": ports}
        )
