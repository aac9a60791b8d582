"""The run report: verdicts.json, junit.xml, summary.txt, timeline.svg, and `chaos check`."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from chaos.checkers import FAIL, PASS, UNKNOWN, Verdict, run_checkers
from chaos.checkers.cli_check import check_main
from chaos.history import load_history
from chaos.report import REPORT_FILES, render_junit, render_summary, write_report
from chaos.scenario.schema import Scenario
from chaos.svg import nice_step
from chaos.timeline import render_timeline
from tests.unit.chaos_run_builder import (
    kill_worker_run,
    kill_worker_scenario,
    scale_up_run,
    scale_up_scenario,
    torchrun_run,
)

SVG = "{http://www.w3.org/2000/svg}"
REPLAY = "chaos run scenarios/kill.yaml --seed 7 --backend local"
NASTY = "<b>&amp; \"quoted\" 'single' \x01\x1b[31m ]]> \ud800"

MIXED = [
    Verdict(name="outcome", status=PASS, summary="job succeeded"),
    Verdict(name="rank_map", status=FAIL, summary=f"rank 1 twice {NASTY}", evidence=(NASTY, "b")),
    Verdict(name="root_cause", status=UNKNOWN, summary=f"cannot tell {NASTY}"),
    Verdict(name="hygiene", status=PASS, summary="clean"),
]


def test_junit_counts_and_escapes_everything() -> None:
    text = render_junit(kill_worker_scenario(), MIXED, seed=7, replay_command=REPLAY)
    suite = ET.fromstring(text.split("\n", 1)[1])  # valid XML despite the control characters
    assert suite.tag == "testsuite" and suite.get("name") == "chaos.kill-one-worker"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["outcome", "rank_map", "root_cause", "hygiene"]
    failure = cases[1].find("failure")
    assert failure is not None and (failure.get("message") or "").startswith(
        "rank 1 twice <b>&amp;"
    )
    assert REPLAY in (failure.text or "")
    skipped = cases[2].find("skipped")
    assert skipped is not None and (skipped.get("message") or "").startswith("unknown: cannot tell")
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["seed"] == "7" and props["replay_command"] == REPLAY


def test_summary_names_the_run_and_replays_only_a_failure() -> None:
    failing = render_summary(kill_worker_scenario(), MIXED, seed=7, replay_command=REPLAY)
    lines = failing.splitlines()
    assert lines[0] == "chaos scenario kill-one-worker (seed 7, launcher launcher): FAIL"
    assert any(line.split()[:2] == ["FAIL", "rank_map"] for line in lines)
    assert lines[-1] == f"replay: {REPLAY}"
    passing = render_summary(kill_worker_scenario(), [MIXED[0]], seed=7, replay_command=REPLAY)
    assert "replay" not in passing and "PASS" in passing.splitlines()[0]


def test_write_report_on_a_real_story(tmp_path: Path) -> None:
    run_dir = kill_worker_run(tmp_path / "run").write()
    history = load_history(run_dir)
    verdicts = run_checkers(history, kill_worker_scenario())
    summary = write_report(
        run_dir, kill_worker_scenario(), verdicts, seed=7, replay_command=REPLAY, history=history
    )
    assert all((run_dir / name).is_file() for name in REPORT_FILES)
    doc = json.loads((run_dir / "verdicts.json").read_text())
    assert doc["status"] == PASS and doc["seed"] == 7 and doc["duration_s"] == pytest.approx(5.9)
    assert [v["name"] for v in doc["verdicts"]] == [v.name for v in verdicts]
    assert (run_dir / "summary.txt").read_text() == summary
    assert (
        "fault 0 kill_worker at t=2.00s, detected after 0.010s, recovered after 0.511s" in summary
    )
    suite = ET.parse(run_dir / "junit.xml").getroot()
    assert suite.get("tests") == str(len(verdicts)) and suite.get("failures") == "0"


def lanes(svg_text: str) -> list[ET.Element]:
    root = ET.fromstring(svg_text)
    assert root.tag == f"{SVG}svg"
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "lane"]


def visible(text: ET.Element) -> str:
    """A <text>'s shown characters (without its <title> tooltip)."""
    tip = text.find(f"{SVG}title")
    return (text.text or "") + ((tip.tail or "") if tip is not None else "")


def test_timeline_has_one_lane_per_node_and_draws_the_story(tmp_path: Path) -> None:
    history = load_history(scale_up_run(tmp_path).write())
    svg = render_timeline(history, scale_up_scenario())
    found = lanes(svg)
    assert [g.get("data-node") for g in found] == ["0", "1", "2"]
    root = ET.fromstring(svg)
    texts = [visible(t) for t in root.iter(f"{SVG}text")]
    assert "#0 join_node (node 2): detected +0.20s, running again +0.51s" in texts
    assert "r1 W=6 g2" in texts  # node 2's band in the scale-up round
    assert "seconds since the run started" in texts
    assert len([p for p in root.iter(f"{SVG}polyline")]) == 2  # one step line per incarnation


def test_timeline_survives_torchrun_runs_and_nasty_names(tmp_path: Path) -> None:
    history = load_history(torchrun_run(tmp_path).write())
    scenario = replace(kill_worker_scenario(), name=NASTY, launcher="torchrun")
    assert len(lanes(render_timeline(history, scenario, MIXED))) == 2


def test_nice_ticks() -> None:
    assert nice_step(6.0) == 0.5 and nice_step(100.0) == 10.0 and nice_step(0.5) == 0.1


# -- chaos check ----------------------------------------------------------------------------
Dump = Callable[[Scenario], str]


@pytest.fixture
def dump_scenario() -> Dump:
    loader = pytest.importorskip("chaos.scenario.loader")
    dump: Dump = loader.dump_scenario
    return dump


def test_check_rejudges_a_saved_run(
    tmp_path: Path, dump_scenario: Dump, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = kill_worker_run(tmp_path / "run").write()
    (run_dir / "scenario.yaml").write_text(dump_scenario(kill_worker_scenario()))
    assert check_main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("chaos scenario kill-one-worker (seed 7, launcher launcher")
    assert all((run_dir / name).is_file() for name in REPORT_FILES)
    strict = replace(
        kill_worker_scenario(), expect=replace(kill_worker_scenario().expect, detect_within_s=0.001)
    )
    (run_dir / "scenario.yaml").write_text(dump_scenario(strict))
    assert check_main([str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert f"replay: chaos run {run_dir / 'scenario.yaml'} --seed 7 --backend local" in out
    assert json.loads((run_dir / "verdicts.json").read_text())["status"] == FAIL


def test_check_warns_on_unknown_verdicts(
    tmp_path: Path, dump_scenario: Dump, capsys: pytest.CaptureFixture[str]
) -> None:
    builder = kill_worker_run(tmp_path / "run")
    builder.records = [r for r in builder.records if r["kind"] != "run.end"]
    run_dir = builder.write()
    (run_dir / "scenario.yaml").write_text(dump_scenario(kill_worker_scenario()))
    assert check_main([str(run_dir)]) == 0
    assert "warning: undecided verdicts: hygiene" in capsys.readouterr().err


def test_check_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main([]) == 2
    assert check_main(["--help"]) == 0
    assert "RUN_DIR" in capsys.readouterr().out


def test_check_refuses_a_bad_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main([str(tmp_path / "missing")]) == 2
    assert check_main([str(tmp_path)]) == 2
    (tmp_path / "scenario.yaml").write_text("name: [unclosed\n")
    assert check_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("chaos check: error: ") for line in err)
    assert "no scenario.yaml" in err[1] and "bad scenario.yaml" in err[2]


def test_timeline_draws_heals_skipped_faults_and_stopped_nodes(tmp_path: Path) -> None:
    builder = kill_worker_run(tmp_path)
    builder.record("fault.fire", 3.0, fault=1, fault_kind="pause_node", did={"node": 1})
    builder.record("fault.heal", 4.0, fault=1, fault_kind="pause_node", did={"node": 1})
    builder.record("fault.fire", 4.5, fault=2, fault_kind="kill_worker", did={"skipped": "gone"})
    root = ET.fromstring(render_timeline(load_history(builder.write()), kill_worker_scenario()))
    texts = [visible(t) for t in root.iter(f"{SVG}text")]
    assert "heal #1" in texts and "#2 kill_worker skipped" in texts
    assert any(
        t.startswith("#0 kill_worker (rank 1, node 0, signal SIGKILL): detected +0.01s")
        for t in texts
    )
    assert "resumed from step 10" in texts
