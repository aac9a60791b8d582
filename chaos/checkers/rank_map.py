"""rank_map: the rank-map contract, for every round the job formed.

Per round (from rendezvous.round.complete and that round's worker.started events):
  - all nodes agree on world size, group world size, master address and port, members;
  - group ranks are unique and, when every node logged the round, exactly 0..G-1; the
    members list (when given) names each node at its group rank;
  - base ranks follow group ranks (a node's base rank = the local world sizes before it);
  - on each node: local ranks exactly 0..L-1, rank = base_rank + local_rank (contiguous),
    and the workers' GROUP_RANK and WORLD_SIZE match the round;
  - across nodes: global ranks unique and, when complete, exactly 0..W-1.
Between consecutive rounds, nodes in both keep their relative order.
A node that logged a round but started no worker for it is allowed only when a fault stopped
it on purpose (its workers may never have started).
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

from chaos.checkers import facts
from chaos.checkers.verdict import Verdict, unknown, verdict
from chaos.history import History
from chaos.scenario.schema import Scenario

_AGREED = ("world_size", "group_world_size", "master_addr", "master_port", "restart_count")


def _spans(ranks: list[int]) -> str:
    if not ranks:
        return "-"
    ranks = sorted(ranks)
    return (
        f"{ranks[0]}-{ranks[-1]}" if ranks == list(range(ranks[0], ranks[-1] + 1)) else str(ranks)
    )


def _names(members: Any, index: int, node_id: str) -> bool:
    """Whether members[index] is this node: its id, or its id plus an incarnation suffix
    (the dynamic rendezvous lists `addr-pid-nonce`)."""
    member = str(list(members)[index])
    return member == node_id or member.startswith(node_id + "-")


def check_round(rnd: facts.Round, stopped: set[int], ids: dict[int, str]) -> list[str]:
    """The problems of one round (empty when it keeps the contract)."""
    r = rnd.number
    problems = []
    for key in (*_AGREED, "members"):
        values = {n: f.get(key) for n, f in rnd.nodes.items()}
        if len({repr(v) for v in values.values()}) > 1:
            said = ", ".join(f"node {n}: {v}" for n, v in sorted(values.items()))
            problems.append(f"round {r}: nodes disagree on {key} ({said})")
    world = rnd.world_size
    gws = Counter(facts.as_int(f.get("group_world_size")) for f in rnd.nodes.values())
    groups = gws.most_common(1)[0][0] or 0
    group_rank = {n: facts.as_int(f.get("group_rank")) for n, f in rnd.nodes.items()}
    base = {n: facts.as_int(f.get("base_rank")) for n, f in rnd.nodes.items()}
    dupes = [g for g, c in Counter(group_rank.values()).items() if c > 1]
    if dupes:
        problems.append(f"round {r}: group rank(s) {dupes} held by more than one node")
    everyone = len(rnd.nodes) == groups
    if everyone and sorted(g for g in group_rank.values() if g is not None) != list(range(groups)):
        problems.append(
            f"round {r}: group ranks {sorted(map(str, group_rank.values()))} "
            f"are not 0..{groups - 1}"
        )
    if len(rnd.nodes) < groups and not stopped:
        problems.append(f"round {r}: only {len(rnd.nodes)} of {groups} nodes logged it")
    for n, f in rnd.nodes.items():
        members = f.get("members")
        g = group_rank[n]
        listed = isinstance(members, list) and len(members) == groups and n in ids
        if listed and g is not None and not (0 <= g < groups and _names(members, g, ids[n])):
            problems.append(
                f"round {r}: node {n} ({ids[n]}) has group rank {g} but members say {members}"
            )
    # -- workers of each node
    local_size: dict[int, int] = {}
    owner: dict[int, list[int]] = {}
    for n in sorted(rnd.nodes):
        workers = rnd.workers.get(n, ())
        if not workers:
            if not rnd.budget_spent and n not in stopped:
                problems.append(f"round {r}: node {n} started no worker")
            continue
        locals_ = sorted(
            lr for w in workers if (lr := facts.as_int(w.get("local_rank"))) is not None
        )
        sizes = {s for w in workers if (s := facts.as_int(w.get("local_world_size"))) is not None}
        size = sizes.pop() if len(sizes) == 1 else len(workers)
        local_size[n] = size
        if locals_ != list(range(size)):
            problems.append(f"round {r}: node {n} local ranks {locals_}, expected 0..{size - 1}")
        for w in workers:
            rank, lr, b = facts.as_int(w.get("rank")), facts.as_int(w.get("local_rank")), base[n]
            if rank is not None:
                owner.setdefault(rank, []).append(n)
            if rank is not None and lr is not None and b is not None and rank != b + lr:
                problems.append(
                    f"round {r}: node {n} local rank {lr} has rank {rank}, "
                    f"expected base {base[n]} + {lr} (ranks not contiguous)"
                )
            if facts.as_int(w.get("group_rank")) != group_rank[n]:
                problems.append(
                    f"round {r}: node {n} worker rank {rank} has GROUP_RANK "
                    f"{w.get('group_rank')}, the round says {group_rank[n]}"
                )
            if facts.as_int(w.get("world_size")) != world:
                problems.append(
                    f"round {r}: worker rank {rank} has WORLD_SIZE {w.get('world_size')}, "
                    f"the round says {world}"
                )
    for rank, nodes in sorted(owner.items()):
        if len(nodes) > 1:
            problems.append(f"round {r}: rank {rank} started {len(nodes)} times (nodes {nodes})")
    complete = everyone and set(local_size) == set(rnd.nodes)
    if complete and world is not None and sorted(owner) != list(range(world)):
        problems.append(
            f"round {r}: global ranks {_spans(list(owner))} are not exactly 0..{world - 1}"
        )
    # base ranks follow group ranks: each node's base = the local world sizes before it
    ordered = sorted((g, n) for n, g in group_rank.items() if g is not None)
    expected_base = 0
    for g, n in ordered:
        if n not in local_size:
            break  # cannot know the sizes past a node without workers
        if everyone and base[n] != expected_base:
            problems.append(
                f"round {r}: node {n} (group rank {g}) has base rank {base[n]}, "
                f"expected {expected_base}"
            )
        expected_base += local_size[n]
    return problems


def _identity(rnd: facts.Round, node: int) -> object:
    """The agent incarnation node `node` was in `rnd` (members are listed by group rank)."""
    fields = rnd.nodes[node]
    members, g = fields.get("members"), facts.as_int(fields.get("group_rank"))
    if isinstance(members, list) and g is not None and 0 <= g < len(members):
        return members[g]
    return None


def check_order(prev: facts.Round, cur: facts.Round) -> list[str]:
    """Nodes in both rounds keep their relative order. A node that came back under a new
    identity (declared lost while cut from the store, then rejoined) is a newcomer: it
    goes after the survivors."""

    def order(rnd: facts.Round) -> list[int]:
        return [
            n
            for _, n in sorted(
                (facts.as_int(f.get("group_rank")) or 0, n) for n, f in rnd.nodes.items()
            )
        ]

    both = {n for n in set(prev.nodes) & set(cur.nodes) if _identity(prev, n) == _identity(cur, n)}
    before = [n for n in order(prev) if n in both]
    after = [n for n in order(cur) if n in both]
    if before != after:
        return [f"round {cur.number}: surviving nodes reordered from {before} to {after}"]
    return []


class RankMapChecker:
    name = "rank_map"

    def applies(self, scenario: Scenario) -> bool:
        return scenario.expect.rank_invariants

    def check(self, history: History, scenario: Scenario) -> Verdict:
        no_log = facts.no_event_log_reason(history, scenario)
        if no_log is not None:
            return unknown(self.name, f"cannot check the rank map: {no_log}")
        all_rounds = facts.rounds(history)
        if not all_rounds:
            return unknown(self.name, "no rendezvous round completed")
        stopped = facts.stopped_nodes(history, scenario)
        ids = facts.node_ids(history)
        problems: list[str] = []
        shapes: list[str] = []
        formed = [r for r in all_rounds if not r.budget_spent]
        for rnd in formed:
            problems += check_round(rnd, stopped, ids)
            nodes = ", ".join(
                f"node {n}: g{rnd.nodes[n].get('group_rank')} ranks "
                f"{_spans([facts.as_int(w.get('rank')) or 0 for w in rnd.workers.get(n, ())])}"
                for n in sorted(rnd.nodes)
            )
            shapes.append(f"round {rnd.number} ({rnd.reason}) W={rnd.world_size}: {nodes}")
        for prev, cur in itertools.pairwise(formed):
            problems += check_order(prev, cur)
        measured = {"rounds": len(formed), "problems": len(problems)}
        if problems:
            summary = f"{len(problems)} rank-map violation(s); first: {problems[0]}"
            return verdict(self.name, False, summary, problems + shapes, measured)
        return verdict(
            self.name, True, f"rank map holds in all {len(formed)} round(s)", shapes, measured
        )
