"""The history of one run: everything the checkers may look at.

A run directory holds:
    scenario.yaml        the scenario as run      seed           the seed
    history.jsonl        harness records (below)  nodes/<i>/events.jsonl   each agent's log
    nodes/<i>/stdout.log, stderr.log              workload/steps.jsonl     workload reports
    verdicts.json, junit.xml, summary.txt, timeline.svg

Harness records (one JSON object per line, `t` = seconds since the run started, `wall` =
epoch seconds):
    {"kind": "run.start", ...}        {"kind": "node.start", "node": i, "pid": ..., "addr": ...}
    {"kind": "fault.fire", "fault": index, "fault_kind": ..., "did": {...what was done...}}
    {"kind": "fault.heal", "fault": index, "did": {...}}
    {"kind": "node.exit", "node": i, "exit_code": n}
    {"kind": "run.end", "timed_out": bool, "leftover_pids": [...], "bound_ports": [...]}
Workload reports (steps.jsonl): {"t": wall, "rank": r, "world": w, "step": s,
    "restart_count": c, "resumed_from": s0 | null, "node_addr": ...}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.events import Event, read_events


@dataclass(frozen=True, kw_only=True)
class History:
    run_dir: Path
    records: tuple[dict[str, Any], ...]
    events: dict[int, tuple[Event, ...]]  # node index -> that agent's events
    steps: tuple[dict[str, Any], ...]
    exit_codes: dict[int, int | None] = field(default_factory=dict)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of a killed writer
    return rows


def load_history(run_dir: Path) -> History:
    records = _jsonl(run_dir / "history.jsonl")
    events: dict[int, tuple[Event, ...]] = {}
    nodes_dir = run_dir / "nodes"
    if nodes_dir.is_dir():
        for node_dir in sorted(nodes_dir.iterdir()):
            log = node_dir / "events.jsonl"
            if node_dir.name.isdigit() and log.exists():
                events[int(node_dir.name)] = tuple(read_events(log))
    exit_codes = {
        int(r["node"]): r.get("exit_code") for r in records if r.get("kind") == "node.exit"
    }
    return History(
        run_dir=run_dir,
        records=tuple(records),
        events=events,
        steps=tuple(_jsonl(run_dir / "workload" / "steps.jsonl")),
        exit_codes=exit_codes,
    )


class HistoryWriter:
    def __init__(self, path: Path, *, clock_start: float) -> None:
        self._path = path
        self._start = clock_start
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")

    def write(self, kind: str, *, wall: float, mono: float, **fields: Any) -> None:
        record = {"kind": kind, "t": round(mono - self._start, 4), "wall": wall, **fields}
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
