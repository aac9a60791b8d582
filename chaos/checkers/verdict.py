"""Verdicts and the checker seam.

A checker reads a History (never the live system) and the Scenario, and returns one Verdict.
Statuses are three-valued, as in Jepsen: `pass`, `fail`, and `unknown` (the history cannot
tell, or the checker itself crashed). When verdicts are combined, the worst wins:
fail > unknown > pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from chaos.history import History
from chaos.scenario.schema import Scenario

PASS = "pass"
FAIL = "fail"
UNKNOWN = "unknown"
STATUSES = (PASS, FAIL, UNKNOWN)
_SEVERITY = {PASS: 0, UNKNOWN: 1, FAIL: 2}


@dataclass(frozen=True, kw_only=True)
class Verdict:
    name: str
    status: str  # one of STATUSES
    summary: str  # one line
    evidence: tuple[str, ...] = ()  # human-readable lines, most important first
    measured: Mapping[str, Any] = field(default_factory=dict)  # JSON-able measured values

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"verdict {self.name}: status {self.status!r} not in {STATUSES}")
        if "\n" in self.summary:
            object.__setattr__(self, "summary", " ".join(self.summary.split()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "evidence": list(self.evidence),
            "measured": dict(self.measured),
        }


class Checker(Protocol):
    """One property of a run. Pure: reads only the history and the scenario."""

    name: str

    def applies(self, scenario: Scenario) -> bool:
        """Whether the scenario asks for this property at all."""
        ...

    def check(self, history: History, scenario: Scenario) -> Verdict: ...


def worst(statuses: Iterable[str]) -> str:
    """The combined status: fail beats unknown beats pass; nothing checked is a pass."""
    return max(statuses, key=lambda s: _SEVERITY[s], default=PASS)


def overall(verdicts: Iterable[Verdict]) -> str:
    return worst(v.status for v in verdicts)


def verdict(
    name: str,
    ok: bool,
    summary: str,
    evidence: Iterable[str] = (),
    measured: Mapping[str, Any] | None = None,
) -> Verdict:
    """A pass or fail verdict from a boolean."""
    return Verdict(
        name=name,
        status=PASS if ok else FAIL,
        summary=summary,
        evidence=tuple(evidence),
        measured=dict(measured or {}),
    )


def unknown(
    name: str, summary: str, evidence: Iterable[str] = (), measured: Mapping[str, Any] | None = None
) -> Verdict:
    return Verdict(
        name=name,
        status=UNKNOWN,
        summary=summary,
        evidence=tuple(evidence),
        measured=dict(measured or {}),
    )
