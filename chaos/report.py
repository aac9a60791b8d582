"""The report of a run, written into its run directory.

    verdicts.json   scenario, seed, overall status, replay command, every verdict
    junit.xml       one testsuite, one testcase per verdict (fail -> <failure>,
                    unknown -> <skipped>), for CI dashboards
    summary.txt     a short human summary: one line per verdict, key timings, and for a
                    run that did not pass, the command that replays it
    timeline.svg    the picture (see chaos/timeline.py)

`write_report` is the only function here that touches the disk; the render_* functions
are pure and return text.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chaos.checkers import facts
from chaos.checkers.verdict import FAIL, PASS, UNKNOWN, Verdict, overall
from chaos.history import History, load_history
from chaos.scenario.schema import Scenario
from chaos.svg import xml_safe
from chaos.timeline import render_timeline

REPORT_FILES = ("verdicts.json", "junit.xml", "summary.txt", "timeline.svg")
EVIDENCE_LINES = 4  # per verdict that did not pass, in summary.txt


def run_duration_s(history: History) -> float | None:
    ends = facts.records(history, "run.end")
    t = ends[-1].get("t") if ends else None
    return float(t) if isinstance(t, int | float) else None


def verdicts_document(
    scenario: Scenario,
    verdicts: Sequence[Verdict],
    *,
    seed: int,
    replay_command: str,
    duration_s: float | None = None,
) -> dict[str, Any]:
    return {
        "scenario": scenario.name,
        "source": scenario.source,
        "seed": seed,
        "status": overall(verdicts),
        "duration_s": duration_s,
        "replay_command": replay_command,
        "verdicts": [v.to_dict() for v in verdicts],
    }


def render_junit(
    scenario: Scenario,
    verdicts: Sequence[Verdict],
    *,
    seed: int,
    replay_command: str,
    duration_s: float | None = None,
) -> str:
    """JUnit XML: one testsuite named after the scenario, one testcase per verdict."""
    suite = ET.Element(
        "testsuite",
        name=xml_safe(f"chaos.{scenario.name}"),
        tests=str(len(verdicts)),
        failures=str(sum(v.status == FAIL for v in verdicts)),
        errors="0",
        skipped=str(sum(v.status == UNKNOWN for v in verdicts)),
        time=f"{duration_s or 0.0:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("seed", seed),
        ("replay_command", replay_command),
        ("source", scenario.source),
    ):
        ET.SubElement(props, "property", name=key, value=xml_safe(value))
    for v in verdicts:
        case = ET.SubElement(
            suite,
            "testcase",
            name=xml_safe(v.name),
            classname=xml_safe(f"chaos.{scenario.name}"),
            time="0",
        )
        details = xml_safe("\n".join(v.evidence))
        if v.status == FAIL:
            failure = ET.SubElement(case, "failure", message=xml_safe(v.summary), type="verdict")
            failure.text = details + (
                f"\nreplay: {xml_safe(replay_command)}" if replay_command else ""
            )
        elif v.status == UNKNOWN:
            ET.SubElement(case, "skipped", message=xml_safe(f"unknown: {v.summary}"))
        out = ET.SubElement(case, "system-out")
        out.text = xml_safe(f"{v.status}: {v.summary}" + (f"\n{details}" if details else ""))
    ET.indent(suite)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
    )


def _timings(verdicts: Sequence[Verdict]) -> list[str]:
    by_fault: dict[Any, dict[str, Any]] = {}
    for v in verdicts:
        if v.name in ("detection_time", "recovery_time"):
            for row in v.measured.get("faults") or []:
                by_fault.setdefault(row.get("fault"), {}).update(row)
    lines = []
    for row in by_fault.values():
        parts = [f"fault {row.get('fault')} {row.get('kind')} at t={float(row.get('t') or 0):.2f}s"]
        for key, label in (("detect_s", "detected"), ("recover_s", "recovered")):
            if key in row:
                value = row[key]
                parts.append(f"{label} {'never' if value is None else f'after {value:.3f}s'}")
        lines.append(", ".join(parts))
    return lines


def render_summary(
    scenario: Scenario,
    verdicts: Sequence[Verdict],
    *,
    seed: int,
    replay_command: str,
    duration_s: float | None = None,
) -> str:
    status = overall(verdicts)
    took = f", {duration_s:.1f}s" if duration_s is not None else ""
    head = f"chaos scenario {scenario.name} (seed {seed}, launcher {scenario.launcher}{took})"
    lines = [f"{head}: {status.upper()}"]
    if scenario.source:
        lines.append(f"  from {scenario.source}")
    width = max((len(v.name) for v in verdicts), default=8)
    for v in verdicts:
        lines.append(f"  {v.status.upper():<7}  {v.name:<{width}}  {v.summary}")
        if v.status != PASS:
            lines += [f"  {'':<7}  {'':<{width}}    {e}" for e in v.evidence[:EVIDENCE_LINES]]
    timings = _timings(verdicts)
    if timings:
        lines.append("timings:")
        lines += [f"  {t}" for t in timings]
    counts = {s: sum(v.status == s for v in verdicts) for s in (PASS, FAIL, UNKNOWN)}
    lines.append(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[UNKNOWN]} unknown")
    if status != PASS and replay_command:
        lines.append(f"replay: {replay_command}")
    return "\n".join(lines) + "\n"


def write_report(
    run_dir: Path,
    scenario: Scenario,
    verdicts: Sequence[Verdict],
    *,
    seed: int,
    replay_command: str,
    history: History | None = None,
) -> str:
    """Writes the four report files into `run_dir`; returns the summary text."""
    if history is None:
        history = load_history(run_dir)
    duration = run_duration_s(history)
    common: dict[str, Any] = {
        "seed": seed,
        "replay_command": replay_command,
        "duration_s": duration,
    }
    document = verdicts_document(scenario, verdicts, **common)
    (run_dir / "verdicts.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    (run_dir / "junit.xml").write_text(render_junit(scenario, verdicts, **common), encoding="utf-8")
    summary = render_summary(scenario, verdicts, **common)
    (run_dir / "summary.txt").write_text(summary, encoding="utf-8")
    svg = render_timeline(history, scenario, verdicts)
    (run_dir / "timeline.svg").write_text(svg, encoding="utf-8")
    return summary
