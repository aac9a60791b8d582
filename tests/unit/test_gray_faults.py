"""hang_worker and slow_worker: their rules (one-line errors naming file:line and field), their
defaults and round trips, the orders they write, and the workload's reading of those orders."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from chaos import faults
from chaos.faults.gray import DutyCycle
from chaos.scenario.loader import ScenarioError, dump_scenario, load_scenario_text
from chaos.scenario.schema import (
    INJECTED,
    HangExpectation,
    Scenario,
    StragglerExpectation,
    Trigger,
)
from chaos.topology import procs

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "scenarios" / "workloads" / "train.py"
HEAD = "name: t\ntopology: {nodes: 2, nproc_per_node: 2}\nworkload: {steps: 30}\nfaults:\n"


def load(text: str) -> Scenario:
    return load_scenario_text(text, source="s.yaml")


def test_hang_worker_defaults_and_round_trip() -> None:
    s = load(
        HEAD + "- {kind: hang_worker, rank: 3, trigger: {after_step: 6}}\n"
        "- {kind: hang_worker, rank: 1, mode: sigstop, duration_s: 5, trigger: {at_s: 4}}\n"
        "expect: {hang: {}}\n"
    )
    first, second = s.faults
    assert (first.mode, first.trigger) == ("sleep", Trigger(kind="after_step", step=6, rank=3))
    assert (second.mode, second.duration_s) == ("sigstop", 5.0)
    # With a hang_worker fault, the culprits to expect default to the injected rank.
    assert s.expect.hang == HangExpectation(culprits=INJECTED)
    assert load(dump_scenario(s)) == s


def test_trigger_rank_is_kept_when_given_and_any_turns_the_blame_check_off() -> None:
    s = load(
        HEAD + "- {kind: hang_worker, rank: 3, mode: gil, trigger: {after_step: 6, rank: 0}}\n"
        "expect: {hang: {culprits: any}}\n"
    )
    assert s.faults[0].trigger.rank == 0
    assert s.expect.hang is not None and s.expect.hang.culprits is None
    assert load(dump_scenario(s)) == s


def test_slow_worker_modes_round_trip() -> None:
    s = load(
        HEAD
        + "- {kind: slow_worker, rank: 1, factor: 3, steps: '5..30', trigger: {after_step: 3}}\n"
        "- {kind: slow_worker, rank: 2, mode: sigstop, factor: 2, period_s: 0.5, duration_s: 8,"
        " trigger: {at_s: 5}}\n"
        "expect: {straggler: {section: compute}}\n"
    )
    first, second = s.faults
    assert (first.mode, first.factor, first.steps, first.trigger.rank) == ("compute", 3, (5, 30), 1)
    assert (second.mode, second.period_s, second.duration_s) == ("sigstop", 0.5, 8.0)
    assert s.expect.straggler == StragglerExpectation(ranks=INJECTED, section="compute")
    assert load(dump_scenario(s)) == s


def test_straggler_expectation_forms() -> None:
    assert load("name: t\nexpect: {straggler: none}").expect.straggler == StragglerExpectation()
    s = load("name: t\ntopology: {nproc_per_node: 2}\nexpect: {straggler: {ranks: [3, 1]}}")
    assert s.expect.straggler == StragglerExpectation(ranks=(1, 3))
    for text in ("name: t\nexpect: {straggler: none}", "name: t\n"):
        assert load(dump_scenario(load(text))) == load(text)


S = "\nexpect:\n"
RULES = [
    (HEAD + "- {kind: hang_worker, rank: 3, mode: nap, trigger: {at_s: 1}} #<",
     "faults[0].mode", "a hang mode, one of sleep, sigstop, skip_collective, deadlock, gil"),
    (HEAD + "- {kind: hang_worker, rank: 3, duration_s: 5, trigger: {at_s: 1}} #<",
     "faults[0].duration_s", "duration_s (when to SIGCONT it) is for mode sigstop"),
    (HEAD + "- {kind: hang_worker, rank: 4, trigger: {at_s: 1}} #<", "faults[0].rank",
     "between 0 and 3 (the largest world is 4)"),
    (HEAD + "- {kind: hang_worker, trigger: {at_s: 1}} #<", "faults[0].rank",
     "missing; hang_worker needs a target"),
    (HEAD + "- {kind: hang_worker, rank: 1, factor: 2, trigger: {at_s: 1}} #<",
     "faults[0].factor", "hang_worker takes no factor"),
    (HEAD + "- {kind: slow_worker, rank: 1, trigger: {at_s: 1}} #<", "faults[0].factor",
     "missing; expected how many times slower"),
    (HEAD + "- {kind: slow_worker, rank: 1, factor: 1, trigger: {at_s: 1}} #<",
     "faults[0].factor", "> 1"),
    (HEAD + "- {kind: slow_worker, rank: 1, factor: 2, steps: [5, 31], trigger: {at_s: 1}} #<",
     "faults[0].steps[1]", "a step between 1 and 30"),
    (HEAD + "- {kind: slow_worker, rank: 1, factor: 2, steps: '9..5', trigger: {at_s: 1}} #<",
     "faults[0].steps", "low <= high"),
    (HEAD + "- {kind: slow_worker, rank: 1, factor: 2, steps: soon, trigger: {at_s: 1}} #<",
     "faults[0].steps", "a range of steps like [5, 20]"),
    (HEAD + "- {kind: slow_worker, rank: 1, factor: 2, duration_s: 3, trigger: {at_s: 1}} #<",
     "faults[0].duration_s", "duration_s is for slow_worker mode sigstop or cpu_quota"),
    (HEAD + "- {kind: slow_worker, rank: 1, mode: sigstop, factor: 2, steps: [1, 2],"
     " trigger: {at_s: 1}} #<", "faults[0].steps", "steps is for slow_worker mode compute"),
    (HEAD + "- {kind: slow_worker, rank: 1, mode: cpu_quota, factor: 2, trigger: {at_s: 1}} #<",
     "faults[0].mode", "mode cpu_quota needs topology.backend docker"),
    ("name: t" + S + "  hang: {culprits: injected} #<", "expect.hang.culprits",
     "'injected' names the ranks of the scenario's hang_worker faults; it has none"),
    ("name: t" + S + "  hang: {culprits: someone} #<", "expect.hang.culprits",
     "a list of global ranks, or one of injected, any"),
    ("name: t" + S + "  straggler: {} #<", "expect.straggler.ranks",
     "missing; without a slow_worker fault"),
    ("name: t" + S + "  straggler: nobody #<", "expect.straggler", "'none' or a mapping"),
    ("name: t" + S + "  straggler: {ranks: injected} #<", "expect.straggler.ranks",
     "slow_worker faults; it has none"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "field", "fragment"), RULES, ids=[r[2] for r in RULES])
def test_rule_messages_name_file_line_and_field(text: str, field: str, fragment: str) -> None:
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.endswith("#<"))
    with pytest.raises(ScenarioError) as info:
        load(text)
    err = info.value
    assert "\n" not in str(err)
    assert str(err).startswith(f"s.yaml:{line}: {field}: "), str(err)
    assert fragment in err.detail, str(err)


# --- the workload's side of the orders -----------------------------------------------------


def _train() -> ModuleType:
    """scenarios/workloads/train.py as a module (it imports torch: skipped without it)."""
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location(
        "chaos_train", ROOT / "scenarios/workloads/train.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ctx(tmp_path: Path) -> faults.FaultContext:
    return faults.FaultContext(scenario=load("name: t\n"), topology=None, control_dir=tmp_path)  # type: ignore[arg-type]


def test_orders_reach_the_named_worker_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = _train()
    monkeypatch.setenv("CHAOS_CONTROL_DIR", str(tmp_path))
    from chaos.faults.workers import write_order

    ctx = _ctx(tmp_path)
    write_order(ctx, "hang-rank-1.json", {"mode": "deadlock", "pid": os.getpid() + 1})
    assert train.check_control(1) == (None, None)  # another worker's: consumed, not obeyed
    assert not (tmp_path / "hang-rank-1.json").exists()
    write_order(ctx, "hang-rank-1.json", {"mode": "gil", "pid": os.getpid()})
    write_order(ctx, "slow-rank-1.json", {"factor": 3, "steps": [5, 9], "pid": os.getpid()})
    hang, slow = train.check_control(1)
    assert hang == "gil" and slow == {"factor": 3, "steps": [5, 9], "pid": os.getpid()}
    assert train.check_control(1)[0] is None  # a hang order is obeyed once
    assert [train.slowdown(slow, step) for step in (4, 5, 9, 10)] == [1.0, 3.0, 3.0, 1.0]
    assert train.slowdown({"factor": 2, "steps": None}, 99) == 2.0


@pytest.mark.parametrize("mode", ["deadlock", "gil"])
def test_in_process_hangs_hold_the_main_thread(mode: str) -> None:
    """The hang modes really hang (and only SIGKILL ends `gil`, which no handler sees)."""
    pytest.importorskip("torch")
    code = (
        "import importlib.util, sys, signal\n"
        f"spec = importlib.util.spec_from_file_location('t', {str(TRAIN)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print('ready', flush=True)\n"
        f"m.do_hang({mode!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def test_duty_cycle_stops_and_resumes_and_leaves_the_process_running() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        ident = procs.identify(proc.pid)
        assert ident is not None
        cycle = DutyCycle(ident, stop_s=0.2, run_s=0.05)
        cycle.start()
        deadline = time.monotonic() + 5
        seen = set()
        while time.monotonic() < deadline and len(seen) < 2:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            seen.add(fields[0])
            time.sleep(0.01)
        stops = cycle.stop()
        assert "T" in seen and stops >= 1
        time.sleep(0.05)
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state != "T"  # it ends running
    finally:
        proc.kill()
        proc.wait(10)


def test_heal_is_due_only_for_what_the_harness_must_undo() -> None:
    s = load(
        HEAD + "- {kind: hang_worker, rank: 3, trigger: {at_s: 1}}\n"
        "- {kind: hang_worker, rank: 3, mode: sigstop, trigger: {at_s: 1}}\n"
        "- {kind: slow_worker, rank: 1, mode: sigstop, factor: 2, duration_s: 3,"
        " trigger: {at_s: 1}}\n"
    )
    sleep, stop, duty = s.faults
    did: dict[str, Any] = {"rank": 3}
    assert faults.heal_after_s(sleep, {**did, "via": "control"}) is None
    assert faults.heal_after_s(stop, {**did, "via": "signal"}) == float("inf")
    assert faults.heal_after_s(duty, {**did, "via": "duty_cycle"}) == 3.0
    assert faults.heal_after_s(stop, {"skipped": "no worker"}) is None
    assert json.dumps(did)  # what is recorded stays JSON
