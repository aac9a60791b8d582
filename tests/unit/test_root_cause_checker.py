"""The root_cause checker never blames a symptom or a stopped worker while the episode has a
worker's own failure, and names a lost node when the survivors only saw symptoms."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaos.checkers.root_cause import launcher_root_cause
from chaos.history import History
from launcher import events as ev

NODES = ("127.0.0.2", "127.0.0.3")


def event(node: int, name: str, t: float, **fields: Any) -> ev.Event:
    return ev.Event(
        name=name, run_id="r", node_id=NODES[node], pid=1, wall_time=t, mono_time=t, fields=fields
    )


def failure(rank: int, kind: str | None, at: float, **extra: Any) -> dict[str, Any]:
    f: dict[str, Any] = {"rank": rank, "exit_code": 1, "signal": None, "precise_at": at, **extra}
    if kind is not None:
        f["kind"] = kind
    return f


def history(*events: ev.Event) -> History:
    by_node: dict[int, list[ev.Event]] = {0: [], 1: []}
    for e in events:
        by_node[NODES.index(e.node_id)].append(e)
    return History(
        run_dir=Path("."),
        records=(),
        events={n: tuple(evs) for n, evs in by_node.items()},
        steps=(),
    )


def blamed(h: History) -> tuple[int, Mapping[str, Any], str]:
    found = launcher_root_cause(h)
    assert found is not None
    return found


def test_an_earlier_symptom_on_another_node_is_not_blamed() -> None:
    symptom = failure(2, "symptom", 100.0)
    own = failure(1, "self", 101.5, exit_code=3)
    node, f, where = blamed(
        history(
            event(0, ev.AGENT_EXIT, 102, restarts=0, root_cause=own),
            event(1, ev.AGENT_EXIT, 102, restarts=0, root_cause=symptom),
        )
    )
    assert (node, f["rank"], where) == (0, 1, "agent.exit root_cause")


def test_symptom_in_agent_exit_defers_to_the_episodes_own_failure() -> None:
    own = failure(1, "self", 101.5, exit_code=3)
    stopped = failure(0, "stopped", 100.0, exit_code=-15)
    node, f, where = blamed(
        history(
            event(
                0, ev.GROUP_FAILED, 102, restart_count=0, failures=[stopped, own], root_cause=own
            ),
            event(1, ev.AGENT_EXIT, 103, restarts=0, root_cause=failure(2, "symptom", 100.0)),
        )
    )
    assert (node, f["rank"], where) == (0, 1, "group.failed root_cause")


def test_a_stopped_worker_never_outranks_one_that_failed() -> None:
    # an old log without kinds: stopped_by_agent decides
    stopped = failure(0, None, 100.0, stopped_by_agent=True)
    own = failure(1, None, 103.0)
    _, f, _ = blamed(
        history(event(0, ev.GROUP_FAILED, 104, restart_count=0, failures=[stopped, own]))
    )
    assert f["rank"] == 1


def test_symptoms_then_node_lost_blame_the_lost_node() -> None:
    symptom = failure(0, "symptom", 100.0)
    node, f, where = blamed(
        history(
            event(1, ev.AGENT_STARTED, 1),
            event(0, ev.GROUP_FAILED, 101, restart_count=0, failures=[symptom], root_cause=symptom),
            event(0, ev.RDZV_ROUND_COMPLETE, 102, round=1, reason="node_lost"),
            event(0, ev.GROUP_RESTART, 102, reason="node_lost", detail=f"{NODES[1]}-4242-a1b2c3"),
        )
    )
    assert node == 1 and f == {"kind": "node_lost", "detail": f"{NODES[1]}-4242-a1b2c3"}
    assert "node_lost" in where


def test_a_survivor_that_never_reported_its_symptom_blames_the_lost_node() -> None:
    """The survivor's symptom waited for its cause and the node loss came first: no
    group.failed anywhere, only the node_lost round."""
    node, f, where = blamed(
        history(
            event(1, ev.AGENT_STARTED, 1),
            event(0, ev.RDZV_CHANGED, 101, reason="node_lost"),
            event(0, ev.RDZV_ROUND_COMPLETE, 102, round=1, reason="node_lost"),
            event(0, ev.GROUP_RESTART, 102, reason="node_lost", detail=f"{NODES[1]}-4242-a1b2c3"),
        )
    )
    assert node == 1 and f["kind"] == "node_lost" and where == "group.restart node_lost"
    assert launcher_root_cause(history(event(0, ev.AGENT_STARTED, 1))) is None


def test_symptoms_then_a_worker_failure_round_keep_the_symptom() -> None:
    symptom = failure(0, "symptom", 100.0)
    _, f, _ = blamed(
        history(
            event(0, ev.GROUP_FAILED, 101, restart_count=0, failures=[symptom], root_cause=symptom),
            event(0, ev.RDZV_ROUND_COMPLETE, 102, round=1, reason="worker_failure"),
        )
    )
    assert f == symptom
