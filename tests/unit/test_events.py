from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher import events as ev


def test_round_trip(tmp_path: Path) -> None:
    clock = iter([10.0, 11.0])
    mono = iter([1.0, 2.0])
    log = ev.EventLog(
        run_id="r",
        node_id="n",
        paths=[tmp_path / "e.jsonl"],
        wall_clock=lambda: next(clock),
        mono_clock=lambda: next(mono),
    )
    log.emit(ev.WORKER_STARTED, rank=3, pid=99)
    log.emit(ev.AGENT_EXIT, outcome="succeeded", exit_code=0)
    log.close()
    read = list(ev.read_events(tmp_path / "e.jsonl"))
    assert read == log.history
    assert read[0].fields == {"rank": 3, "pid": 99} and read[0].wall_time == 10.0
    assert json.loads((tmp_path / "e.jsonl").read_text().splitlines()[0])["v"] == ev.SCHEMA_VERSION


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    good = ev.Event(name="x", run_id="r", node_id="n", pid=1, wall_time=0, mono_time=0).to_json()
    path.write_text(good + "\n" + good[:10])
    assert len(list(ev.read_events(path))) == 1


def test_newer_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="newer"):
        ev.Event.from_json(json.dumps({"v": ev.SCHEMA_VERSION + 1, "event": "x"}))


def test_every_event_name_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "event-log.md").read_text()
    missing = sorted(name for name in ev.KNOWN_EVENTS if f"| `{name}` |" not in doc)
    assert missing == [], f"add these to the events table of docs/event-log.md: {missing}"
