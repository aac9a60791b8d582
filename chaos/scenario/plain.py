"""Scenario -> plain data (dicts, lists, scalars) in the form the loader reads back.

The run directory keeps the scenario as run; `loader.dump_scenario` writes this as YAML, and
loading that text gives an equal Scenario. Pure: no yaml here.
"""

from __future__ import annotations

from typing import Any

from chaos.scenario.fault_rules import FAULT_FIELDS
from chaos.scenario.schema import (
    DEFAULT_MODES,
    Expectations,
    Fault,
    HangExpectation,
    IntRange,
    Scenario,
    StragglerExpectation,
    Trigger,
)


def scenario_to_data(scenario: Scenario) -> dict[str, Any]:
    topo, work = scenario.topology, scenario.workload
    topology: dict[str, Any] = {
        "backend": topo.backend,
        "nodes": topo.nodes,
        "spares": topo.spares,
        "nproc_per_node": topo.nproc_per_node,
    }
    # A Scenario built in code may leave these None ("the default"); the loader fills them.
    if topo.min_nodes is not None:
        topology["min_nodes"] = topo.min_nodes
    if topo.max_nodes is not None:
        topology["max_nodes"] = topo.max_nodes
    topology.update(
        rdzv_backend=topo.rdzv_backend,
        etcd_members=topo.etcd_members,
        launcher_args=list(topo.launcher_args),
    )
    if topo.rdzv_tls:
        topology["rdzv_tls"] = True
    if topo.image is not None:
        topology["image"] = topo.image
    data: dict[str, Any] = {"name": scenario.name}
    if scenario.description:
        data["description"] = scenario.description
    data.update(
        seed=scenario.seed,
        timeout_s=scenario.timeout_s,
        launcher=scenario.launcher,
        topology=topology,
        workload={
            "script": work.script,
            "steps": work.steps,
            "step_s": work.step_s,
            "checkpoint_every": work.checkpoint_every,
            "args": list(work.args),
        },
        faults=[fault_to_data(fault) for fault in scenario.faults],
        expect=expect_to_data(
            scenario.expect, hung=any(f.kind == "hang_worker" for f in scenario.faults)
        ),
    )
    return data


def fault_to_data(fault: Fault) -> dict[str, Any]:
    data: dict[str, Any] = {"kind": fault.kind}
    for key in FAULT_FIELDS.get(fault.kind, ()):
        value = getattr(fault, key)
        if key in fault.random_fields:
            data[key] = "random"
        elif key == "signal":
            # The dataclass default; written only when it says something.
            if value != "SIGKILL" and fault.exit_code is None and fault.exception is None:
                data[key] = value
        elif key == "groups":
            if value:
                data[key] = [list(group) for group in value]
        elif key == "from_store":
            if value:
                data[key] = True
        elif key == "mode":
            if value != DEFAULT_MODES.get(fault.kind):
                data[key] = value
        elif key == "attributes":
            if value:
                data[key] = dict(value)
        elif key == "steps":
            if value is not None:
                data[key] = list(value)
        elif value is not None:
            data[key] = value
    # A hang/slow fault's after_step trigger defaults to the fault's rank, not 0: write it.
    rank_fault = fault.kind in ("hang_worker", "slow_worker")
    data["trigger"] = trigger_to_data(fault.trigger, with_rank=rank_fault)
    return data


def trigger_to_data(trigger: Trigger, *, with_rank: bool = False) -> dict[str, Any]:
    if trigger.kind == "at_s":
        return {"at_s": trigger.at_s}
    if trigger.kind == "after_step":
        data: dict[str, Any] = {"after_step": trigger.step}
        if trigger.rank or with_rank:
            data["rank"] = trigger.rank
        return data
    if trigger.kind == "on_event":
        data = {"on_event": trigger.event}
        if trigger.occurrence != 1:
            data["occurrence"] = trigger.occurrence
        return data
    return {"random": list(trigger.window_s or ())}


def int_range_to_data(value: IntRange) -> int | dict[str, int]:
    return value.low if value.low == value.high else {"min": value.low, "max": value.high}


def expect_to_data(expect: Expectations, *, hung: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"outcome": expect.outcome}
    if expect.failure_reason is not None:
        data["failure_reason"] = expect.failure_reason
    if expect.restarts is not None:
        data["restarts"] = int_range_to_data(expect.restarts)
    if expect.restarts_by_reason:
        data["restarts_by_reason"] = {
            reason: int_range_to_data(bound) for reason, bound in expect.restarts_by_reason.items()
        }
    data["uncharged_scale_events"] = expect.uncharged_scale_events
    if expect.final_world_size is not None:
        data["final_world_size"] = expect.final_world_size
    data["rank_invariants"] = expect.rank_invariants
    if expect.root_cause is not None:
        cause = expect.root_cause
        data["root_cause"] = {
            key: getattr(cause, key)
            for key in ("rank", "node", "exit_code", "signal")
            if getattr(cause, key) is not None
        }
    for key in ("max_lost_steps", "detect_within_s", "recover_within_s"):
        if getattr(expect, key) is not None:
            data[key] = getattr(expect, key)
    if expect.hang is not None:
        data["hang"] = hang_to_data(expect.hang, hung=hung)
    if expect.straggler is not None:
        data["straggler"] = straggler_to_data(expect.straggler)
    data["hygiene"] = expect.hygiene
    return data


def hang_to_data(hang: HangExpectation, *, hung: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if isinstance(hang.culprits, str):
        data["culprits"] = hang.culprits
    elif hang.culprits is not None:
        data["culprits"] = list(hang.culprits)
    elif hung:  # not checked, where a hang_worker fault would make it default to injected
        data["culprits"] = "any"
    if hang.detect_within_s is not None:
        data["detect_within_s"] = hang.detect_within_s
    data["dumps"] = hang.dumps
    data["count"] = int_range_to_data(hang.count)
    return data


def straggler_to_data(straggler: StragglerExpectation) -> str | dict[str, Any]:
    if straggler.ranks == () and straggler.section is None:
        return "none"
    data: dict[str, Any] = {
        "ranks": straggler.ranks if isinstance(straggler.ranks, str) else list(straggler.ranks)
    }
    if straggler.section is not None:
        data["section"] = straggler.section
    return data
