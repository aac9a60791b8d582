"""The scenario loader: every rule's message names file:line and field; hostile input never
crashes it; valid scenarios (the docs' examples) load and round-trip through dump_scenario."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from chaos.scenario.cli_validate import validate_main
from chaos.scenario.loader import ScenarioError, dump_scenario, load_scenario, load_scenario_text
from chaos.scenario.schema import (
    Expectations,
    HangExpectation,
    IntRange,
    RootCause,
    Scenario,
    Topology,
    Workload,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenarios.md"
N = "name: t\n"
F = N + "faults:\n"


def load(text: str) -> Scenario:
    return load_scenario_text(text, source="s.yaml")


def error(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load(text)
    assert "\n" not in str(info.value)
    return info.value


def file_error(path: Path, backend: str | None = None) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, backend=backend)
    assert "\n" not in str(info.value)
    return info.value


def doc_examples() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)


def test_docs_examples_load_and_round_trip() -> None:
    examples = doc_examples()
    assert len(examples) >= 5
    for text in examples:
        scenario = load(text)
        again = load_scenario_text(dump_scenario(scenario), source="again.yaml")
        assert dataclasses.replace(again, source="s.yaml") == scenario


def test_defaults_follow_the_schema() -> None:
    scenario = load("name: minimal")
    assert scenario.topology == Topology(min_nodes=2, max_nodes=2)  # the loader fills these
    assert (scenario.workload, scenario.expect, scenario.faults) == (Workload(), Expectations(), ())
    assert (scenario.seed, scenario.timeout_s, scenario.launcher) == (0, 120.0, "launcher")
    assert scenario.source == "s.yaml"
    assert load("name: minimal\ntopology:\nexpect: ~\nfaults:\n") == scenario


def test_nnodes_shorthand_and_forms() -> None:
    for text in ('"2:3"', "2:3", "' 2 : 3 '"):  # unquoted 2:3 is YAML 1.1's base-60 int 123
        topo = load(N + f"topology: {{nnodes: {text}, spares: 1}}").topology
        assert (topo.nodes, topo.min_nodes, topo.max_nodes) == (2, 2, 3)
    topo = load(N + "topology: {nnodes: 4}").topology
    assert (topo.nodes, topo.min_nodes, topo.max_nodes) == (4, 4, 4)


def test_trigger_short_and_long_forms_read_the_same() -> None:
    pairs = [
        ("{at_s: 5}", "{kind: at_s, at_s: 5}"),
        ("{after_step: 3, rank: 1}", "{kind: after_step, step: 3, rank: 1}"),
        ("{on_event: agent.started}", "{kind: on_event, event: agent.started}"),
        ("{random: [1, 2.5]}", "{kind: random, window_s: '1..2.5'}"),
        ("{random: {min: 1, max: 2.5}}", "{window_s: [1, 2.5]}"),
    ]
    topo = "topology: {nproc_per_node: 2}\n"
    for short, long in pairs:
        a = load(topo + F + f"- {{kind: crash_node, node: 0, trigger: {short}}}")
        b = load(topo + F + f"- {{kind: crash_node, node: 0, trigger: {long}}}")
        assert a == b


def test_values_read_as_written() -> None:
    s = load(
        "name: 010\ndescription:\ntopology: {nproc_per_node: 2, launcher_args: \"-x 'a b'\"}\n"
        "workload: {args: [--lr, 0.10, yes], step_s: 1e-2}\n"
        "faults:\n- {kind: kill_worker, rank: 1, exception: no, trigger: {at_s: 1e1}}\n"
        "- {kind: kill_agent, node: 1, signal: term, trigger: {at_s: 2}}\n"
        "- {kind: kill_worker, node: 0, local_rank: 1, signal: 15, trigger: {at_s: 3}}\n"
        "expect: {restarts: 1..2, restarts_by_reason: {node_lost: {min: 0, max: 1}},"
        " root_cause: {exit_code: -9, signal: KILL}}\n"
    )
    assert (s.name, s.description, s.topology.launcher_args) == ("010", "", ("-x", "a b"))
    assert (s.workload.args, s.workload.step_s) == (("--lr", "0.10", "yes"), 0.01)
    assert (s.faults[0].exception, s.faults[0].trigger.at_s) == ("no", 10.0)
    assert [f.signal for f in s.faults[1:]] == ["SIGTERM", "SIGTERM"]
    assert s.expect.restarts == IntRange(low=1, high=2)
    assert s.expect.restarts_by_reason == {"node_lost": IntRange(low=0, high=1)}
    assert s.expect.root_cause == RootCause(exit_code=-9, signal="SIGKILL")
    tricky = dataclasses.replace(s, description="ça: #1\n- yes, 010 ✓")
    assert load(dump_scenario(tricky)) == tricky  # strings that YAML would re-type survive


def test_partition_mode_defaults_to_drop_and_round_trips() -> None:
    head = "name: p\ntopology: {backend: netns, nodes: 3}\nfaults:\n"
    s = load(
        head + "- {kind: partition, node: 1, trigger: {at_s: 1}}\n"
        "- {kind: partition, groups: [[0, 1], [2]], mode: reject, trigger: {at_s: 2}}\n"
    )
    assert [f.mode for f in s.faults] == ["drop", "reject"]
    assert load(dump_scenario(s)) == s
    assert "mode" not in dump_scenario(s).split("groups")[0]  # the default is not written
    err = error(head + "- {kind: crash_node, node: 1, mode: drop, trigger: {at_s: 1}} #<")
    assert err.field == "faults[0].mode" and "crash_node takes no mode" in err.detail


def test_hang_expectation_defaults_and_round_trips() -> None:
    assert load(N + "expect: {hang: {}}").expect.hang == HangExpectation()
    assert HangExpectation().count == IntRange(low=1, high=1) and HangExpectation().dumps
    assert load(N + "expect: {hang: ~}").expect.hang is None  # null: not checked
    s = load(
        N + "topology: {nproc_per_node: 2}\n"
        "expect: {hang: {culprits: [3, 1], detect_within_s: 2, dumps: false, count: '1..2'}}"
    )
    assert s.expect.hang == HangExpectation(
        culprits=(1, 3), detect_within_s=2.0, dumps=False, count=IntRange(low=1, high=2)
    )
    unknown = load(N + "expect: {hang: {culprits: []}}").expect.hang
    assert unknown is not None and unknown.culprits == ()  # must say "culprit unknown"
    for scenario in (s, load(N + "expect: {hang: {culprits: []}}")):
        assert load(dump_scenario(scenario)) == scenario


def test_random_targets_and_merge_keys() -> None:
    s = load(
        "name: r\ntopology: {nodes: 3, spares: 1, nproc_per_node: 2}\nfaults:\n"
        "- &base {kind: kill_worker, rank: random, trigger: {random: [1, 2]}}\n"
        "- {<<: *base, rank: 2}\n"
        "- {kind: join_node, node: random, trigger: {at_s: 1}}\n"
        "- {kind: kill_worker, node: random, local_rank: random, trigger: {at_s: 1}}\n"
    )
    assert (s.faults[0].rank, s.faults[0].random_fields) == (None, ("rank",))
    assert (s.faults[1].rank, s.faults[1].random_fields, s.faults[1].trigger.window_s) == (
        2, (), (1.0, 2.0),
    )  # fmt: skip
    assert s.faults[2].random_fields == ("node",)
    assert s.faults[3].random_fields == ("node", "local_rank")


def test_load_from_file_and_backend_override(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(N + "faults:\n- {kind: partition, node: 1, duration_s: 2, trigger: {at_s: 1}}")
    err = file_error(path)
    assert str(err).startswith(f"{path}:3: faults[0].kind: partition needs")
    assert "--backend netns" in str(err) and (err.source, err.line) == (str(path), 3)
    assert load_scenario(path, backend="netns").topology.backend == "netns"
    assert load_scenario(path, backend="docker").source == str(path)
    assert "(from --backend)" in str(file_error(path, backend="k8s"))


# Each case: a document whose offending line ends with "#<", the field the message must name,
# and a fragment of what it must say. One case per rule of docs/scenarios.md.
RULES = [
    ("nmae: x #<", "nmae", "did you mean 'name'"),
    ("seed: 1 #<", "name", "missing"),
    ("name: has space #<", "name", "letters, digits"),
    (N + "seed: -1 #<", "seed", "a seed between 0 and"),
    (N + "timeout_s: 0 #<", "timeout_s", "a number of seconds > 0"),
    (N + "launcher: torchrn #<", "launcher", "did you mean 'torchrun'"),
    (N + "topology: [1] #<", "topology", "expected a mapping of topology fields, got a list"),
    (N + "topology: {ndoes: 3} #<", "topology.ndoes", "did you mean 'nodes'"),
    (N + "topology: {nodes: 0} #<", "topology.nodes", "between 1 and 1024, got 0"),
    (N + "topology: {nodes: true} #<", "topology.nodes", "got true"),
    (N + "topology: {nodes: 2.5} #<", "topology.nodes", "got 2.5"),
    (N + "topology: {nproc_per_node: 0} #<", "topology.nproc_per_node", "got 0"),
    (N + "topology: {spares: -1} #<", "topology.spares", "between 0 and 1024"),
    (N + "topology: {image: x:1} #<", "topology.image", "only for backend: docker"),
    (N + "topology: {backend: docker, image: [a]} #<", "topology.image", "a docker image name"),
    (N + "topology: {nodes: 1000, spares: 100} #<", "topology.spares", "nodes + spares <= 1024"),
    (N + "topology: {nodes: 2, min_nodes: 3} #<", "topology.min_nodes", "min_nodes <= nodes (2)"),
    (N + "topology: {nodes: 3, max_nodes: 2} #<", "topology.max_nodes", "max_nodes >= nodes (3)"),
    (N + "topology: {nnodes: 2, min_nodes: 1} #<", "topology.min_nodes", "either nnodes"),
    (N + "topology: {nnodes: '3:2'} #<", "topology.nnodes", "1 <= MIN <= MAX"),
    (N + "topology: {nnodes: two} #<", "topology.nnodes", "MIN:MAX like '2:3'"),
    (N + "topology: {etcd_members: 2, rdzv_backend: etcd} #<", "topology.etcd_members", "or 5"),
    (N + "topology: {etcd_members: 3} #<", "topology.etcd_members", "needs rdzv_backend: etcd"),
    (N + "topology: {rdzv_tls: true} #<", "topology.rdzv_tls", "needs rdzv_backend: etcd"),
    (N + "topology: {rdzv_backend: etcd, rdzv_tls: 1} #<", "topology.rdzv_tls", "true or false"),
    (N + "topology: {rdzv_backend: etc} #<", "topology.rdzv_backend", "did you mean 'etcd'"),
    (N + "topology: {backend: k8s} #<", "topology.backend", "local, netns, docker"),
    (N + "topology: {launcher_args: [-v, --nnodes=3]} #<", "topology.launcher_args[1]", "harness"),
    (N + "topology: {launcher_args: \"-x 'a\"} #<", "topology.launcher_args", "shell-style"),
    (N + "workload: {steps: 0} #<", "workload.steps", "got 0"),
    (N + "workload: {step_s: -1} #<", "workload.step_s", "between 0 and 3600"),
    (N + "workload: {checkpoint_every: 0} #<", "workload.checkpoint_every", "got 0"),
    (N + "workload: {script: ''} #<", "workload.script", "not empty"),
    (N + "workload: {step: 3} #<", "workload.step", "did you mean 'steps'"),
    (N + "faults: {kind: crash_node} #<", "faults", "a list of faults"),
    (F + "- 3 #<", "faults[0]", "a fault: a mapping"),
    (F + "- {node: 0, trigger: {at_s: 1}} #<", "faults[0].kind", "missing; expected a fault kind"),
    (F + "- {kind: kill_wroker, trigger: {at_s: 1}} #<", "faults[0].kind", "'kill_worker'"),
    (F + "- {kind: crash_node, node: 0} #<", "faults[0].trigger", "missing"),
    (F + "- {kind: crash_node, node: 0, duration_s: 1, trigger: {at_s: 1}} #<",
     "faults[0].duration_s", "crash_node takes no duration_s"),
    (F + "- {kind: crash_node, node: 2, trigger: {at_s: 1}} #<", "faults[0].node",
     "a node index between 0 and 1 (nodes + spares is 2), got 2"),
    (F + "- {kind: crash_node, node: -1, trigger: {at_s: 1}} #<", "faults[0].node", "got -1"),
    (N + "topology: {spares: 1}\nfaults:\n- {kind: join_node, node: 0, trigger: {at_s: 1}} #<",
     "faults[0].node", "a spare node index 2"),
    (F + "- {kind: join_node, node: 2, trigger: {at_s: 1}} #<", "faults[0].kind", "spares >= 1"),
    (F + "- {kind: kill_worker, trigger: {at_s: 1}} #<", "faults[0].rank", "node + local_rank"),
    (F + "- {kind: kill_worker, node: 0, trigger: {at_s: 1}} #<", "faults[0].local_rank",
     "missing"),
    (F + "- {kind: kill_worker, rank: 0, node: 0, trigger: {at_s: 1}} #<", "faults[0].rank",
     "not both"),
    (F + "- {kind: kill_worker, rank: 2, trigger: {at_s: 1}} #<", "faults[0].rank",
     "between 0 and 1 (the largest world is 2)"),
    (F + "- {kind: kill_worker, node: 0, local_rank: 1, trigger: {at_s: 1}} #<",
     "faults[0].local_rank", "(nproc_per_node is 1)"),
    (F + "- {kind: kill_worker, rank: 0, signal: TERM, exit_code: 1, trigger: {at_s: 1}} #<",
     "faults[0].exit_code", "one of signal, exit_code or exception"),
    (F + "- {kind: kill_agent, node: 0, signal: SIGFOO, trigger: {at_s: 1}} #<",
     "faults[0].signal", "a signal name"),
    (F + "- {kind: kill_worker, rank: 0, exit_code: 300, trigger: {at_s: 1}} #<",
     "faults[0].exit_code", "between 0 and 255"),
    (F + "- {kind: partition, node: 1, trigger: {at_s: 1}} #<", "faults[0].kind",
     "`--backend netns`"),
    (F + "- {kind: pause_node, node: 0, trigger: {at_s: 1}} #<", "faults[0].duration_s", "missing"),
    (F + "- {kind: pause_node, node: 0, duration_s: 0, trigger: {at_s: 1}} #<",
     "faults[0].duration_s", "a number of seconds > 0 and <= 120"),
    (F + "- {kind: kill_etcd_member, member: 0, trigger: {at_s: 1}} #<", "faults[0].kind",
     "rdzv_backend: etcd"),
    (F + "- {kind: kill_store_host, member: 0, trigger: {at_s: 1}} #<", "faults[0].member",
     "needs rdzv_backend: etcd"),
    (F + "- {kind: crash_node, node: 0, trigger: 5} #<", "faults[0].trigger", "a trigger: {at_s"),
    (F + "- {kind: crash_node, node: 0, trigger: {}} #<", "faults[0].trigger", "got a mapping"),
    (F + "- {kind: crash_node, node: 0, trigger: {at_s: 1, after_step: 2}} #<",
     "faults[0].trigger.after_step", "one condition"),
    (F + "- {kind: crash_node, node: 0, trigger: {at_s: soon}} #<", "faults[0].trigger.at_s",
     "expected a number of seconds >= 0, got 'soon'"),
    (F + "- {kind: crash_node, node: 0, trigger: {at_s: -1}} #<", "faults[0].trigger.at_s", ">= 0"),
    (F + "- {kind: crash_node, node: 0, trigger: {at_s: 120}} #<", "faults[0].trigger.at_s",
     "before timeout_s (120)"),
    (F + "- {kind: crash_node, node: 0, trigger: {after_step: 41}} #<",
     "faults[0].trigger.after_step", "a step between 1 and 40"),
    (F + "- {kind: crash_node, node: 0, trigger: {after_step: 1, rank: 5}} #<",
     "faults[0].trigger.rank", "a global rank between 0 and 1"),
    (F + "- {kind: crash_node, node: 0, trigger: {at_s: 1, rank: 0}} #<", "faults[0].trigger.rank",
     "a at_s trigger takes no rank"),
    (F + "- {kind: crash_node, node: 0, trigger: {on_event: agent.start}} #<",
     "faults[0].trigger.on_event", "did you mean 'agent.started'"),
    (F + "- {kind: crash_node, node: 0, trigger: {on_event: agent.started, occurrence: 0}} #<",
     "faults[0].trigger.occurrence", "between 1 and 10000, got 0"),
    (F + "- {kind: crash_node, node: 0, trigger: {random: [5, 2]}} #<",
     "faults[0].trigger.random", "expected low <= high, got 5..2"),
    (F + "- {kind: crash_node, node: 0, trigger: {random: 'a..b'}} #<",
     "faults[0].trigger.random", "like [2, 8]"),
    (F + "- {kind: crash_node, node: 0, trigger: {random: [1]}} #<", "faults[0].trigger.random",
     "got a list"),
    (F + "- {kind: crash_node, node: 0, trigger: {random: [1, 200]}} #<",
     "faults[0].trigger.random", "ending before timeout_s"),
    (F + "- {kind: crash_node, node: 0, trigger: {kind: at_s, after_step: 3}} #<",
     "faults[0].trigger.kind", "does not match"),
    (F + "- {kind: crash_node, node: 0, trigger: {after_step: 3, step: 3}} #<",
     "faults[0].trigger.step", "the same field"),
    (F + "- {kind: crash_node, node: 0, trigger: {kind: at_s}} #<", "faults[0].trigger.at_s",
     "missing"),
    (F + "- {kind: crash_node, node: 0, trigger: {at: 3}} #<", "faults[0].trigger.at",
     "did you mean 'at_s'"),
    (N + "expect: {outcome: passed} #<", "expect.outcome", "succeeded, failed"),
    (N + "expect: {failure_reason: x} #<", "expect.failure_reason", "needs outcome: failed"),
    (N + "expect: {restarts: a..b} #<", "expect.restarts", "a count or a range like 1..3"),
    (N + "expect: {restarts: -1} #<", "expect.restarts", "a count >= 0"),
    (N + "expect: {restarts: {min: 3, max: 1}} #<", "expect.restarts", "low <= high, got 3..1"),
    (N + "expect: {restarts_by_reason: {worker_failed: 1}} #<",
     "expect.restarts_by_reason.worker_failed",
     "did you mean 'worker_failure'"),
    (N + "topology: {nproc_per_node: 2}\nexpect: {final_world_size: 3} #<",
     "expect.final_world_size",
     "a world size 4, got 3"),
    (N + "topology: {nodes: 1, spares: 1, max_nodes: 2, nproc_per_node: 2}\n"
     "expect: {final_world_size: 3} #<", "expect.final_world_size", "a multiple of nproc_per_node"),
    (N + "expect: {root_cause: {}} #<", "expect.root_cause", "at least one of"),
    (N + "expect: {root_cause: {rank: 2}} #<", "expect.root_cause.rank", "between 0 and 1"),
    (N + "expect: {hygiene: maybe} #<", "expect.hygiene", "true or false, got 'maybe'"),
    (N + "expect: {max_lost_steps: -1} #<", "expect.max_lost_steps", "got -1"),
    (N + "expect: {detect_within_s: 0} #<", "expect.detect_within_s", "> 0"),
    (N + "expect: {hang: true} #<", "expect.hang", "a mapping with culprits"),
    (N + "expect: {hang: {culprit: [1]}} #<", "expect.hang.culprit", "did you mean 'culprits'"),
    (N + "expect: {hang: {culprits: 1}} #<", "expect.hang.culprits", "a list of global ranks"),
    (N + "expect:\n  hang:\n    culprits: [0, 2] #<", "expect.hang.culprits[1]",
     "a global rank between 0 and 1 (the largest world is 2), got 2"),
    (N + "expect:\n  hang:\n    culprits: [1, 1] #<", "expect.hang.culprits[1]",
     "rank 1 is listed twice"),
    (N + "expect: {hang: {detect_within_s: 0}} #<", "expect.hang.detect_within_s", "> 0"),
    (N + "expect: {hang: {dumps: 1}} #<", "expect.hang.dumps", "true or false"),
    (N + "expect: {hang: {count: 2..1}} #<", "expect.hang.count", "low <= high, got 2..1"),
    ("name: t\nname: u #<", "name", "duplicate key (first at line 1)"),
    (N + "topology: {nodes: !!python/int 3} #<", "topology.nodes",
     "unsupported YAML tag '!!python/int'"),
    (N + "topology: {nodes: !!int x} #<", "topology.nodes", "a valid !!int"),
    (N + "topology: *nope #<", "topology", "undefined alias *nope"),
    (N + "topology: {<<: [1]} #<", "topology.<<", "a mapping to merge"),
    (N + "topology: {[1]: 2} #<", "topology", "a text key"),
]  # fmt: skip


RULES_WITH_TOPOLOGY = [  # rows checked against a netns / etcd topology
    ("netns", "- {kind: partition, trigger: {at_s: 1}} #<", "faults[0].node",
     "node (cut one node off)"),
    ("netns", "- {kind: partition, groups: [[0, 1], [1]], trigger: {at_s: 1}} #<",
     "faults[0].groups[1][0]", "node 1 is already in faults[0].groups[0][1]"),
    ("netns", "- {kind: partition, groups: [[0]], trigger: {at_s: 1}} #<", "faults[0].groups",
     "at least two groups"),
    ("netns", "- {kind: partition, node: 0, groups: [[0], [1]], trigger: {at_s: 1}} #<",
     "faults[0].groups", "not both"),
    ("netns", "- {kind: partition, groups: [[0], [1]], from_store: true, trigger: {at_s: 1}} #<",
     "faults[0].from_store", "give node, not groups"),
    ("netns", "- {kind: partition, node: 1, mode: refuse, trigger: {at_s: 1}} #<",
     "faults[0].mode", "one of drop, reject, got 'refuse'"),
    ("netns", "- {kind: partition, node: 1, mode: [drop], trigger: {at_s: 1}} #<",
     "faults[0].mode", "a partition mode"),
    ("etcd", "- {kind: kill_etcd_member, member: 3, trigger: {at_s: 1}} #<", "faults[0].member",
     "between 0 and 2, or 'leader'"),
    ("etcd", "- {kind: kill_etcd_member, trigger: {at_s: 1}} #<", "faults[0].member", "missing"),
]  # fmt: skip
TOPOLOGIES = {
    "netns": "name: t\ntopology: {backend: netns, nodes: 3}\nfaults:\n",
    "etcd": "name: t\ntopology: {rdzv_backend: etcd, etcd_members: 3}\nfaults:\n",
}


ALL_RULES = RULES + [
    (TOPOLOGIES[topology] + body, field, fragment)
    for topology, body, field, fragment in RULES_WITH_TOPOLOGY
]


@pytest.mark.parametrize(
    ("text", "field", "fragment"), ALL_RULES, ids=[f"{f}: {frag}" for _, f, frag in ALL_RULES]
)
def test_rule_messages_name_file_line_and_field(text: str, field: str, fragment: str) -> None:
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.endswith("#<"))
    err = error(text)
    assert str(err).startswith(f"s.yaml:{line}: {field}: "), str(err)
    assert fragment in err.detail, str(err)
    assert (err.source, err.line, err.field) == ("s.yaml", line, field)


# --- chaos validate -----------------------------------------------------------------------------


def test_validate_reports_each_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(doc_examples()[0])
    one = tmp_path / "sub" / "one.yml"
    one.parent.mkdir()
    one.write_text(N + "faults: [{kind: crash_node, node: 0, trigger: {random: [1, 2]}}]")
    bad = tmp_path / "bad.yaml"
    bad.write_text(N + "topology: {ndoes: 3}\n")
    (tmp_path / "notes.txt").write_text("not a scenario")
    assert validate_main([str(good), str(one)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"ok: {good} (kill-one-worker, 1 fault)", f"ok: {one} (t, 1 fault)"]
    assert validate_main([str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"ok: {good} (kill-one-worker, 1 fault)",
        f"ok: {one} (t, 1 fault)",
    ]
    assert captured.err.splitlines() == [f"{bad}:2: topology.ndoes: " + bad_message(bad)]
    assert validate_main(["--schedule", "--seed", "5", str(one)]) == 0
    assert "schedule of t (seed 5): 1 fault\n  #0 at " in capsys.readouterr().out


def bad_message(path: Path) -> str:
    return str(file_error(path)).split(": ", 2)[2]


def test_validate_usage_and_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    part = tmp_path / "part.yaml"
    part.write_text(N + "faults: [{kind: partition, node: 1, trigger: {at_s: 1}}]")
    assert validate_main([str(part)]) == 2
    assert "--backend netns" in capsys.readouterr().err
    assert validate_main(["--backend=netns", str(part)]) == 0
    assert validate_main([]) == 2
    assert validate_main(["--bogus", str(part)]) == 2
    assert validate_main(["--seed", "x", str(part)]) == 2
    assert validate_main(["--backend", "k8s", str(part)]) == 2
    assert validate_main([str(tmp_path / "missing.yaml")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert validate_main([str(empty)]) == 2
    assert "no scenario files" in capsys.readouterr().err
    assert validate_main(["--help"]) == 0
    assert "usage: chaos validate" in capsys.readouterr().out
