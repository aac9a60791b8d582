"""`toxic` faults on the local topology: a node's store link runs through the harness's
proxy, a toxic added there reaches the real agent's TCPStore connection, and the heal
takes it off. Scenarios are built directly (the rules are tested in tests/unit)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from chaos.history import load_history
from chaos.runner import run_scenario
from chaos.scenario.schema import Fault, Trigger
from tests.chaos.test_runner_local import describe, make_scenario, records

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


def _toxic(kind: str, duration_s: float, at_s: float = 3.0, **attributes: int) -> Fault:
    return Fault(
        kind="toxic",
        node=1,
        toxic=kind,
        attributes=tuple(attributes.items()),
        duration_s=duration_s,
        trigger=Trigger(kind="at_s", at_s=at_s),
    )


@pytest.mark.timeout(120)
def test_store_latency_goes_through_the_proxy_and_is_ridden_out(tmp_path: Path) -> None:
    scenario = make_scenario("toxic_latency", steps=40, faults=(_toxic("latency", 6, latency=300),))
    lines: list[str] = []
    result = run_scenario(scenario, run_dir=tmp_path / "run", progress=lines.append)
    history = load_history(tmp_path / "run")
    info = describe(history, lines)
    endpoints = {
        r["node"]: r["argv"][r["argv"].index("--rdzv-endpoint") + 1]
        for r in records(history, "node.start")
    }
    assert endpoints[0] != endpoints[1] and endpoints[1].startswith("127.0.0.1:"), endpoints
    [fire] = records(history, "fault.fire")
    assert fire["did"]["proxies"] == ["n1-s0"] and fire["did"]["type"] == "latency", info
    [heal] = records(history, "fault.heal")
    assert heal["did"]["removed"] == ["n1-s0"] and not heal["did"]["failed"], info
    assert result.exit_codes == {0: 0, 1: 0}, info
    assert {s["restart_count"] for s in history.steps} == {0}, info  # ridden out


@pytest.mark.timeout(120)
def test_a_store_blackhole_longer_than_the_outage_window_is_a_clean_failure(
    tmp_path: Path,
) -> None:
    """A timeout toxic (0: never closes) holds every byte of node 2's store link: no reply
    comes (each is given 5 s), node 2 gives up after its store-outage window with one line
    naming the store, and the two others go on without it (nnodes 2:3)."""
    blackhole = replace(_toxic("timeout", 60, timeout=0), node=2)
    scenario = make_scenario(
        "toxic_blackhole",
        nodes=3,
        min_nodes=2,
        steps=120,
        faults=(blackhole,),
        launcher_args=("--rdzv-conf", "store_outage_timeout=4"),
    )
    lines: list[str] = []
    result = run_scenario(scenario, run_dir=tmp_path / "run", progress=lines.append)
    history = load_history(tmp_path / "run")
    info = describe(history, lines)
    assert result.exit_codes == {0: 0, 1: 0, 2: 1}, info
    stderr = (tmp_path / "run" / "nodes" / "2" / "stderr.log").read_text(errors="replace")
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("launcher: error: rendezvous: store unreachable for"), info
    assert "store_outage_timeout=4 s" in last and "127.0.0.1:" in last, last
    [fire] = records(history, "fault.fire")
    [gone] = [r for r in records(history, "node.exit") if r["node"] == 2]
    assert gone["t"] - fire["t"] < 20, info  # 5 s for the first reply, 4 s window, retries
