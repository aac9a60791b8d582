"""The simulator and the real launcher agree: 4 real agents on loopback (c10d, 3:4 nodes),
one SIGKILLed once the first round has formed, against the simulator with the same
addresses and the same crash: the final round has the same members in the same order,
the same global ranks and the same MASTER_ADDR."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from chaos.sim import SimConfig, parse_faults, simulate
from launcher.events import RDZV_ROUND_COMPLETE, Event, read_events
from tests.conftest import ROOT, WORKLOADS, Procs, clean_env

pytestmark = pytest.mark.integration

ADDRS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
KILLED = 1  # 127.0.0.3: not the store host (losing that one ends any c10d job)


def _rounds(path: Path) -> list[Event]:
    if not path.exists():
        return []
    return [e for e in read_events(path) if e.name == RDZV_ROUND_COMPLETE]


def _addr(node_id: str) -> str:
    return node_id.rsplit("-", 2)[0]  # dynamic.py: "<local addr>-<pid>-<random>"


def _real_final_round(procs: Procs, tmp_path: Path) -> list[tuple[str, int, int, str]]:
    pytest.importorskip("torch")
    with socket.socket() as sock:
        sock.bind((ADDRS[0], 0))
        port = sock.getsockname()[1]
    run_id = f"agree-{uuid.uuid4().hex[:8]}"
    env = clean_env(RUN_S="3", STEP_S="0.2")
    logs = {addr: tmp_path / f"{addr}.jsonl" for addr in ADDRS}
    agents = {}
    for addr in ADDRS:
        argv = ["--nnodes", "3:4", "--nproc-per-node", "1", "--max-restarts", "3"]
        argv += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"{ADDRS[0]}:{port}"]
        argv += ["--rdzv-id", run_id, "--local-addr", addr, "--event-log", str(logs[addr])]
        # Every loopback agent may host under torchrun's rule: name the host, so the
        # SIGKILLed agent is never the store's.
        argv += ["--rdzv-conf", f"is_host={int(addr == ADDRS[0])}"]
        argv += [str(WORKLOADS / "elastic.py"), str(tmp_path)]
        out = (tmp_path / f"{addr}.out").open("w")
        agents[addr] = procs.launcher(*argv, env=env, cwd=ROOT, stdout=out, stderr=out)
    deadline = time.monotonic() + 90
    while not all(_rounds(path) for path in logs.values()):
        assert time.monotonic() < deadline, "the first round never formed on every agent"
        time.sleep(0.05)
    assert {len(_rounds(path)) for path in logs.values()} == {1}
    os.kill(agents[ADDRS[KILLED]].pid, signal.SIGKILL)
    for addr, proc in agents.items():
        if addr != ADDRS[KILLED]:
            code = proc.wait(timeout=120)
            assert code == 0, (tmp_path / f"{addr}.out").read_text()[-3000:]
    finals = [_rounds(path)[-1] for addr, path in logs.items() if addr != ADDRS[KILLED]]
    assert len({e.fields["round"] for e in finals}) == 1
    members = [_addr(m) for m in finals[0].fields["members"]]
    assert all([_addr(m) for m in e.fields["members"]] == members for e in finals)
    rows = sorted(
        (e.fields["group_rank"], e.fields["base_rank"], _addr(e.node_id), e.fields["master_addr"])
        for e in finals
    )
    assert [row[2] for row in rows] == members
    return [(addr, group, base, master) for group, base, addr, master in rows]


def _sim_final_round() -> list[tuple[str, int, int, str]]:
    cfg = SimConfig(
        nodes=len(ADDRS),
        min_nodes=3,
        max_nodes=4,
        seed=0,
        addrs=ADDRS,
        faults=parse_faults(f"crash:{KILLED}@5"),
    )
    result = simulate(cfg)
    assert result.ok, result.safety
    final = result.rounds[-1]
    assert final.completed_s is not None and final.reason == "node_lost"
    master = final.addrs[0]
    return [
        (addr, group, base, master)
        for group, (addr, base) in enumerate(zip(final.addrs, final.base_ranks, strict=True))
    ]


def test_final_round_matches_a_real_multi_agent_run(procs: Procs, tmp_path: Path) -> None:
    real = _real_final_round(procs, tmp_path)
    simulated = _sim_final_round()
    assert real == simulated
    assert [addr for addr, *_ in real] == ["127.0.0.2", "127.0.0.4", "127.0.0.5"]


def test_simulated_crash_is_found_as_fast_as_the_docs_say() -> None:
    # Cheap enough to run beside the real one: the re-formation bound at 4 nodes.
    cfg = SimConfig(
        nodes=4, min_nodes=3, max_nodes=4, addrs=ADDRS, faults=parse_faults("crash:1@5")
    )
    result = simulate(cfg)
    final = result.rounds[-1]
    assert final.completed_s is not None
    assert final.completed_s - 5.0 <= result.reform_bound_s
