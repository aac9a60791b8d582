from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.rendezvous.driver import perform
from launcher.rendezvous.state import (
    Assignment,
    Excluded,
    JobOver,
    NodeInfo,
    Params,
    RendezvousTimeout,
    WatchState,
    bump,
    finish,
    heartbeat,
    join,
    report_failure,
)
from launcher.rendezvous.state.model import (
    CompareSet,
    Keys,
    MultiGet,
    MultiSet,
    Set,
    Sleep,
    round_of,
)
from launcher.rendezvous.state.protocol import wait_for_change
from launcher.rendezvous.store import MemoryStore
from tests.rdzv_harness import Sim, agent_loop


def params(**kw: object) -> Params:
    base = dict(run_id="job", min_nodes=1, max_nodes=4, max_restarts=3, last_call_timeout_s=2.0)
    base.update(kw)
    return Params(**base)  # type: ignore[arg-type]


def node(i: int, *, nproc: int = 2, prev: Assignment | None = None, addr: str = "") -> NodeInfo:
    return NodeInfo(
        node_id=f"n{i}",
        addr=addr or f"10.0.0.{i}",
        master_port=1000 + i,
        nproc=nproc,
        prev_round=prev.round if prev else -1,
        prev_group_rank=prev.group_rank if prev else -1,
    )


def first_round(sim: Sim, p: Params, count: int) -> list[Assignment]:
    """Nodes n0..n<count-1> join at once; their assignments, in node order."""
    tasks = [sim.spawn(f"n{i}", join(p, node(i), now=0.0)) for i in range(count)]
    sim.run()
    return [t.result for t in tasks]


def check_round(results: list[Assignment]) -> None:
    assert len({a.round for a in results}) == 1
    sizes = {a.group_world_size for a in results}
    assert sizes == {len(results)}
    assert sorted(a.group_rank for a in results) == list(range(len(results)))
    by_rank = sorted(results, key=lambda a: a.group_rank)
    assert by_rank[0].base_rank == 0
    assert (
        len({(a.master_addr, a.master_port, a.world_size, a.restart_count) for a in results}) == 1
    )


def test_fixed_size_round_closes_when_all_join() -> None:
    p = params(min_nodes=3, max_nodes=3)
    sim = Sim(seed=1)
    tasks = [sim.spawn(f"n{i}", join(p, node(i), now=0.0), at=0.1 * i) for i in range(3)]
    sim.run()
    results = [t.result for t in tasks]
    check_round(results)
    assert sim.now < 1.0  # no last-call wait for a fixed size
    ranks = {t.name: t.result.group_rank for t in tasks}
    assert ranks == {"n0": 0, "n1": 1, "n2": 2}  # newcomers ordered by address
    assert results[0].master_addr == "10.0.0.0" and results[0].world_size == 6


def test_elastic_round_waits_last_call_then_closes_with_what_joined() -> None:
    p = params(min_nodes=2, max_nodes=4, last_call_timeout_s=3.0)
    sim = Sim(seed=2)
    tasks = [sim.spawn(f"n{i}", join(p, node(i), now=0.0)) for i in range(2)]
    sim.run()
    check_round([t.result for t in tasks])
    assert 3.0 <= sim.now < 3.5


def test_spare_beyond_max_waits_and_exits_when_job_done() -> None:
    p = params(min_nodes=2, max_nodes=2)
    sim = Sim(seed=3)
    members = [sim.spawn(f"n{i}", join(p, node(i), now=0.0)) for i in range(2)]
    spare = sim.spawn("n9", join(p, node(9), now=0.0), at=0.5)
    sim.run(until=2.0)
    check_round([t.result for t in members])
    assert not spare.done
    for t in members:
        sim.spawn(
            f"fin-{t.name}", finish(p, t.result, hosting=t.name == "n0", timeout_s=5, now=sim.now)
        )
    sim.run()
    assert spare.result == JobOver(outcome="succeeded")


def test_scale_up_bumps_the_round_and_keeps_survivor_order() -> None:
    p = params(min_nodes=1, max_nodes=3, last_call_timeout_s=30.0)
    sim = Sim(seed=4)
    first = [
        sim.spawn(f"n{i}", join(p, node(i, addr=f"10.0.0.{9 - i}"), now=0.0)) for i in range(2)
    ]
    sim.run()
    round0 = {t.name: t.result for t in first}
    assert round0["n1"].group_rank == 0  # lower address first
    assert sim.now > 29  # 1:3 with two nodes: last call
    start = sim.now
    newcomer = sim.spawn("n5", join(p, node(5, addr="10.0.0.1"), now=start))
    sim.run(until=start + 0.5)
    # members notice the bump and rejoin
    rejoin = [
        sim.spawn(
            f"re-{n}",
            join(p, node(int(n[1:]), prev=a, addr=f"10.0.0.{9 - int(n[1:])}"), now=sim.now),
        )
        for n, a in round0.items()
    ]
    sim.run()
    results = [t.result for t in rejoin] + [newcomer.result]
    check_round(results)
    assert sim.now - start < 2.0  # expected count reached: no last-call wait
    assert results[0].reason == "scale_up" and not results[0].charged
    order = {a.group_rank: name for a, name in zip(results, ["n0", "n1", "n5"], strict=True)}
    assert order == {0: "n1", 1: "n0", 2: "n5"}  # survivors first, in their old order


def test_worker_failure_is_charged_job_wide_until_budget_spent() -> None:
    p = params(min_nodes=2, max_nodes=2, max_restarts=1)
    sim = Sim(seed=5)
    current = first_round(sim, p, 2)
    for expected_count, expected_status in [(1, "ok"), (2, "failed")]:
        sim.spawn("fail", report_failure(p, current[1], by="n1", detail="rank 3 exit 1"))
        sim.run()
        tasks = [
            sim.spawn(f"n{i}", join(p, node(i, prev=current[i]), now=sim.now)) for i in range(2)
        ]
        sim.run()
        current = [t.result for t in tasks]
        check_round(current)
        assert {a.restart_count for a in current} == {expected_count}
        assert {a.status for a in current} == {expected_status}
        assert current[0].detail == "rank 3 exit 1" and current[0].charged


def test_a_worker_failure_that_comes_with_a_lost_node_is_labelled_node_lost() -> None:
    # A node crashes; the survivors' gloo workers fail at once and their agents report a
    # worker failure before any watcher declares the node lost. The round exists because
    # of the loss: node_lost naming the missing member, not charged (torchrun charges it).
    p = params(min_nodes=1, max_nodes=3)
    sim = Sim(seed=8)
    round0 = first_round(sim, p, 3)
    sim.spawn("fail", report_failure(p, round0[0], by="n0", detail="rank 0 exit 1"))
    sim.run()
    rejoin = [sim.spawn(f"n{i}", join(p, node(i, prev=round0[i]), now=sim.now)) for i in (0, 1)]
    sim.run()
    results = [t.result for t in rejoin]
    check_round(results)
    assert (results[0].reason, results[0].detail) == ("node_lost", "n2")
    assert not results[0].charged and results[0].restart_count == 0
    # Everyone back: the same report is a charged worker failure.
    sim.spawn("fail", report_failure(p, results[0], by="n0", detail="rank 0 exit 1"))
    sim.run()
    again = [sim.spawn(f"n{i}", join(p, node(i, prev=results[i]), now=sim.now)) for i in (0, 1)]
    sim.run()
    final = [t.result for t in again]
    check_round(final)
    assert (final[0].reason, final[0].detail, final[0].charged) == (
        "worker_failure",
        "rank 0 exit 1",
        True,
    )
    assert final[0].restart_count == 1


def test_node_loss_detected_by_watcher_and_not_charged() -> None:
    p = params(min_nodes=1, max_nodes=3, keep_alive_interval_s=1.0, keep_alive_max_attempt=3)
    sim = Sim(seed=6)
    round0 = first_round(sim, p, 3)
    watcher = next(a for a in round0 if a.watch == "n2")
    state = WatchState(round=0, group_world_size=3, watched="n2")
    outcomes = []
    for _ in range(6):  # n2 is dead: it never beats
        task = sim.spawn(
            "hb", heartbeat(p, "n0" if watcher is round0[0] else "n1", state, now=sim.now)
        )
        sim.run()
        outcomes.append(task.result)
        sim.now += 1.0
    assert outcomes.count("node_lost") == 1
    survivors = [i for i in range(3) if i != 2]
    rejoin = [sim.spawn(f"n{i}", join(p, node(i, prev=round0[i]), now=sim.now)) for i in survivors]
    sim.run()
    results = [t.result for t in rejoin]
    check_round(results)
    assert results[0].reason == "node_lost" and not results[0].charged
    assert results[0].restart_count == 0 and results[0].group_world_size == 2


def test_a_member_that_finished_is_not_declared_lost_and_a_joiner_waits() -> None:
    """n2's workers all succeeded: it entered the exit barrier and stopped beating while the
    others finish their last steps (a final checkpoint). Its silence is not a node loss,
    and a spare arriving now must not re-form the round under them."""
    p = params(min_nodes=1, max_nodes=4, keep_alive_interval_s=1.0, keep_alive_max_attempt=3)
    sim = Sim(seed=7)
    tasks = [sim.spawn(f"n{i}", join(p, node(i), now=0.0)) for i in range(3)]
    sim.run()
    round0 = {t.name: t.result for t in tasks}
    done = sim.spawn(
        "n2-finish", finish(p, round0["n2"], hosting=False, timeout_s=30.0, now=sim.now)
    )
    sim.run(until=sim.now + 0.5)
    watcher = next(name for name, a in round0.items() if a.watch == "n2")
    state = WatchState(round=0, group_world_size=3, watched="n2")
    outcomes = []
    for _ in range(6):  # n2 never beats again
        task = sim.spawn("hb", heartbeat(p, watcher, state, now=sim.now))
        sim.run(until=sim.now + 0.5)
        outcomes.append(task.result)
        sim.now += 1.0
    assert "node_lost" not in outcomes
    assert sim.store.get(Keys("job").dead("n2")) is None
    spare = sim.spawn("n7", join(p, node(7), now=sim.now))
    sim.run(until=sim.now + 5.0)
    assert round_of(sim.store.get(Keys("job").round)) == 0  # not re-formed
    assert not spare.done and not done.done  # the spare waits; n2 waits for the others


def test_join_timeout() -> None:
    p = params(min_nodes=3, max_nodes=3, join_timeout_s=5.0)
    sim = Sim(seed=7)
    task = sim.spawn("n0", join(p, node(0), now=0.0))
    sim.run()
    assert isinstance(task.error, RendezvousTimeout)
    assert "1 node(s) joined, 3 needed" in str(task.error)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 8),
    min_nodes=st.integers(1, 8),
    max_extra=st.integers(0, 4),
    delays=st.lists(st.floats(0, 3), min_size=8, max_size=8),
)
def test_any_interleaving_settles_on_one_consistent_round(
    seed: int, n: int, min_nodes: int, max_extra: int, delays: list[float]
) -> None:
    min_nodes = min(min_nodes, n)
    p = params(min_nodes=min_nodes, max_nodes=min_nodes + max_extra, last_call_timeout_s=1.0)
    sim = Sim(seed=seed)
    logs: list[list[object]] = [[] for _ in range(n)]
    for i in range(n):

        def info_for(prev: Assignment | None, i: int = i) -> NodeInfo:
            return node(i, nproc=1 + i % 3, prev=prev)

        sim.spawn(f"n{i}", agent_loop(p, info_for, logs[i], end=30.0), at=delays[i])
    # Stop soon after the agents do: a spare left alone would (rightly) declare the
    # stopped members dead after keep_alive_interval x keep_alive_max_attempt.
    sim.run(until=31.0)
    assert all(t.error is None for t in sim.tasks), [t.error for t in sim.tasks]
    finals = [log[-1] for log in logs if log and isinstance(log[-1], Assignment)]
    last_round = max(a.round for a in finals)
    members = [a for a in finals if a.round == last_round]
    # everyone who can fit is in the final round; the rest are spares
    assert len(members) == min(n, p.max_nodes)
    check_round(members)
    ordered = sorted(members, key=lambda a: a.group_rank)
    assert [a.base_rank for a in ordered] == sorted(a.base_rank for a in ordered)
    assert ordered[-1].base_rank < ordered[0].world_size
    # rounds only increase for every node, and nobody was ever charged a restart
    for log in logs:
        rounds = [a.round for a in log if isinstance(a, Assignment)]
        assert rounds == sorted(set(rounds))
    assert all(a.restart_count == 0 for a in finals)


def test_static_orders_by_node_rank() -> None:
    p = params(min_nodes=3, max_nodes=3, static=True)
    sim = Sim(seed=8)
    infos = [
        NodeInfo(node_id=f"n{i}", addr=f"h{i}", master_port=1, nproc=1, node_rank=2 - i)
        for i in range(3)
    ]
    tasks = [sim.spawn(f"n{i}", join(p, infos[i], now=0.0)) for i in range(3)]
    sim.run()
    assert [t.result.group_rank for t in tasks] == [2, 1, 0]
    assert tasks[0].result.master_addr == "h2"


@pytest.mark.parametrize("seed", range(3))
def test_declared_dead_node_learns_it(seed: int) -> None:
    p = params()
    sim = Sim(seed=seed)
    sim.store.set("rdzv/job/dead/n1", "lost")
    task = sim.spawn("hb", heartbeat(p, "n1", None, now=0.0))
    sim.run()
    assert task.result == "declared_dead"


@pytest.mark.parametrize("seed", range(4))
def test_closer_leaves_out_a_candidate_declared_dead_while_the_round_formed(seed: int) -> None:
    p = params(min_nodes=2, max_nodes=3)
    sim = Sim(seed=seed)
    # n1 took part in forming the round, but its watcher gave it up before the close.
    sim.store.set("rdzv/job/dead/n1", "lost")
    tasks = [sim.spawn(f"n{i}", join(p, node(i), now=0.0)) for i in range(3)]
    sim.run()
    assert tasks[1].result == Excluded(round=0)
    members = [tasks[0].result, tasks[2].result]
    check_round(members)
    assert all("n1" not in a.members and a.watch != "n1" for a in members)
    assert members[0].world_size == 4  # two nodes of two workers
    close = json.loads(sim.store.get("rdzv/job/r0/close") or "")
    assert (close["size"], close["members"], close["excluded"]) == (3, 2, ["n1"])
    # The excluded node comes back under a new id: the round has room, so a scale-up.
    again = sim.spawn(
        "n1b",
        join(p, NodeInfo(node_id="n1b", addr="10.0.0.1", master_port=1, nproc=2), now=sim.now),
    )
    sim.run(until=sim.now + 0.5)
    rejoin = [
        sim.spawn(f"re-n{i}", join(p, node(i, prev=tasks[i].result), now=sim.now)) for i in (0, 2)
    ]
    sim.run()
    results = [again.result] + [t.result for t in rejoin]
    check_round(results)
    assert results[0].reason == "scale_up" and results[0].round == 1


def test_closer_restarts_a_round_left_below_min_by_a_dead_candidate() -> None:
    p = params(min_nodes=3, max_nodes=3)
    sim = Sim(seed=1)
    sim.store.set("rdzv/job/dead/n1", "lost")
    tasks = [sim.spawn(f"n{i}", join(p, node(i), now=0.0)) for i in range(3)]
    sim.run(until=2.0)
    assert tasks[1].result == Excluded(round=0)
    assert not tasks[0].done and not tasks[2].done  # waiting in round 1 for a third node
    bump = _record(sim, 1)
    assert bump["reason"] == "node_lost" and bump["detail"] == "n1"
    again = sim.spawn(
        "n1b",
        join(p, NodeInfo(node_id="n1b", addr="10.0.0.1", master_port=1, nproc=2), now=sim.now),
    )
    sim.run()
    check_round([tasks[0].result, again.result, tasks[2].result])
    assert again.result.round == 1 and again.result.group_world_size == 3


def test_spares_that_find_every_member_dead_bump_under_their_own_ids() -> None:
    # Spares used to bump as "spare" (closers as "closer"): two of them bumping from the
    # same round wrote the same value and both read it back as theirs. The round value and
    # the bump record now name the one node that moved the job on.
    p = params(max_nodes=1)
    sim = Sim(seed=2)
    sim.store.set("rdzv/job/round", "1:n0")
    sim.store.set("rdzv/job/r1/close", json.dumps({"size": 1, "closer": "n0"}))
    spares = [sim.spawn(f"s{i}", wait_for_change(p, 1, by=f"s{i}")) for i in range(2)]
    sim.run()  # nobody beats r1/alive: both see every member dead
    assert all(t.done and t.result is None for t in spares)
    value = sim.store.get("rdzv/job/round") or ""
    assert value in ("2:s0+node_lost", "2:s1+node_lost")
    assert _record(sim, 2) == {
        "reason": "node_lost",
        "by": value[2:4],
        "detail": "all",
        "expected": 0,
    }


def test_two_bumps_from_the_same_round_one_wins_and_its_record_counts() -> None:
    p = params()
    sim = Sim(seed=1)
    sim.store.set("rdzv/job/round", "1:n0")
    tasks = [
        sim.spawn(f"s{i}", bump(p, "1:n0", reason="node_lost", by=f"s{i}", expected=2 + i))
        for i in range(2)
    ]
    sim.run()
    assert sorted(t.result for t in tasks) == [False, True]
    winner = next(i for i, t in enumerate(tasks) if t.result)
    assert _record(sim, 2)["expected"] == 2 + winner
    assert sim.store.get("rdzv/job/r2/expected") is None  # only watchers lower it


def test_a_bump_whose_compare_and_set_reply_was_lost_still_has_its_record() -> None:
    # The agent re-runs a failed step from its start: report_failure then finds the round
    # moved (by itself) and does nothing. The record must already be there, or the round
    # has no reason (the failure goes uncharged) and no expected count (a last-call wait).
    p = params(min_nodes=1, max_nodes=3, max_restarts=3)
    sim = Sim(seed=3)
    round0 = first_round(sim, p, 2)
    step = report_failure(p, round0[1], by="n1", detail="rank 3 exit 1")
    op = next(step)
    while not (isinstance(op, CompareSet) and op.key == "rdzv/job/round"):
        op = step.send((perform(sim.store, op), sim.now))
    perform(sim.store, op)  # applied; the reply never comes back
    step.close()
    rerun = sim.spawn("again", report_failure(p, round0[1], by="n1", detail="rank 3 exit 1"))
    sim.run()
    assert rerun.done and sim.store.get("rdzv/job/round") == "1:n1+worker_failure"
    started = sim.now
    rejoin = [sim.spawn(f"n{i}", join(p, node(i, prev=round0[i]), now=sim.now)) for i in range(2)]
    sim.run()
    results = [t.result for t in rejoin]
    check_round(results)
    assert (results[0].reason, results[0].charged, results[0].restart_count) == (
        "worker_failure",
        True,
        1,
    )
    # 2 of MAX 3: only the expected count closes it before the last call.
    assert sim.now - started < p.last_call_timeout_s


def test_one_node_bumping_for_two_reasons_at_once_leaves_one_record() -> None:
    # Node n0's successor crashed: its heartbeat thread declares it lost while its main
    # thread reports the worker failure the crash caused (gloo), both from round 1. Only
    # one may win, and the winner's record (its expected count above all) must stand: the
    # loser used to read its own value back, think it won and overwrite the record.
    p = params()
    sim = Sim(seed=4)
    sim.store.set("rdzv/job/round", "1:n0")
    tasks = [
        sim.spawn("beat", bump(p, "1:n0", reason="node_lost", by="n0", expected=2)),
        sim.spawn("main", bump(p, "1:n0", reason="worker_failure", by="n0", expected=3)),
    ]
    sim.run()
    assert sorted(t.result for t in tasks) == [False, True]
    record = _record(sim, 2)
    assert record["expected"] == (2 if record["reason"] == "node_lost" else 3)


def _record(sim: Sim, rnd: int) -> dict[str, object]:
    """The bump record of round `rnd`: the one its round value's writer wrote."""
    value = sim.store.get("rdzv/job/round") or ""
    assert round_of(value) == rnd
    return dict(json.loads(sim.store.get(f"rdzv/job/r{rnd}/bump/{value.split(':', 1)[1]}") or "{}"))


def _drive(store: MemoryStore, gen: object, *, woken: str | None = None) -> tuple[list, object]:
    """Runs a step against `store`, logging its ops; a Sleep(until=...) is answered with
    `woken` (as an etcd watch would: the value written), other sleeps with None."""
    ops: list = []
    reply: object = None
    try:
        op = gen.send(None)  # type: ignore[attr-defined]
        while True:
            ops.append(op)
            if isinstance(op, Sleep):
                reply = woken if op.until is not None else None
            else:
                reply = perform(store, op)
            op = gen.send((reply, 0.0))  # type: ignore[attr-defined]
    except StopIteration as stop:
        return ops, stop.value


def test_the_closer_returns_its_own_assignment_and_writes_last_with_the_others() -> None:
    # Reading its own assignment back would queue behind every member starting its workers.
    store = MemoryStore()
    ops, result = _drive(store, join(params(min_nodes=1, max_nodes=1), node(0), now=0.0))
    assert isinstance(result, Assignment) and result.group_world_size == 1
    k = Keys("job")
    assert isinstance(ops[-1], MultiSet)
    assert [key for key, _ in ops[-1].items] == [k.assign(0, 0), k.last]
    assert Assignment.from_json(store.get(k.assign(0, 0)) or "") == result


def test_a_joiner_woken_with_its_assignment_reads_nothing_more() -> None:
    store = MemoryStore()
    p = params(min_nodes=2, max_nodes=2, store_wakes=True)
    mine = Assignment(
        round=0, group_rank=1, group_world_size=2, base_rank=2, world_size=4,
        master_addr="10.0.0.1", master_port=1001, restart_count=0, reason="initial",
        charged=False,
    )  # fmt: skip
    ops, result = _drive(store, join(p, node(0), now=0.0), woken=mine.to_json())
    assert result == mine
    sleeps = [op for op in ops if isinstance(op, Sleep)]
    assert len(sleeps) == 1 and sleeps[0].until == Keys("job").assign(0, 0)
    assert ops[-1] is sleeps[0]  # woken with it: no read after
    # ... and none before: it waits right after taking its slot (a poll then met the
    # closer's write and the members' worker starts), for as long as a fallback poll waits
    assert isinstance(ops[-2], Set) and ops[-2].key == Keys("job").node(0, 0)
    assert sleeps[0].seconds > 0
    assert not any(isinstance(op, MultiGet) for op in ops[ops.index(ops[-2]) :])
