"""root_cause: the failure the launcher blamed is the one the scenario expects and injected.

The launcher's root cause is the agents' own blame: the `root_cause` of the nodes' agent.exit
events or, when no agent named one (the job recovered), of their group.failed events, else
any failure a group.failed listed. Among several it takes the most causal kind first (the
failure object's `kind`: `self` or `hang`, then `symptom`, then `stopped`; a log without kinds
counts `stopped_by_agent` as `stopped`, the rest as `self`), then the earliest. So a peer's
symptom or a worker an agent stopped is never blamed while the episode has a worker's own
failure: when agent.exit named only symptoms, the same episode's group.failed blames (same
restart count) are searched for one. When the best is still a symptom and that node's next
round was `node_lost`, the cause is the lost node (its harness index; no rank or code).

Its rank, node (the harness index of the node whose log holds it), exit code and signal are
compared with expect.root_cause (fields left unset are not compared), and with what the
kill_worker faults did (their fault.fire `did` keys rank, local_rank, pid, node, signal,
exit_code, where present).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos.checkers import facts
from chaos.checkers.verdict import Verdict, unknown, verdict
from chaos.history import History
from chaos.scenario.schema import Scenario
from launcher import events as ev

# Lower is blamed first (launcher/failures/classify.py; chaos reads only the log's spelling).
_BLAME = {"hang": 0, "self": 0, "symptom": 1, "stopped": 2}
NODE_LOST_KIND = "node_lost"  # the kind of the failure object made up for a lost node

Named = list[tuple[int, Mapping[str, Any]]]


def launcher_root_cause(history: History) -> tuple[int, Mapping[str, Any], str] | None:
    """(node, failure object, where it was found) of the launcher's root cause.

    For a lost node the failure object is {"kind": "node_lost", "detail": ...} and `node`
    the lost node's harness index (-1 when its id is in no log)."""
    exits = [(node, e) for node, e in facts.events_named(history, ev.AGENT_EXIT)]
    named: Named = [
        (node, e.fields["root_cause"])
        for node, e in exits
        if isinstance(e.fields.get("root_cause"), dict)
    ]
    where = "agent.exit root_cause"
    blamed = [
        (node, e.fields["root_cause"], e.fields.get("restart_count"))
        for node, e in facts.events_named(history, ev.GROUP_FAILED)
        if isinstance(e.fields.get("root_cause"), dict)
    ]
    if named and _blame(_best(named)[1]) > 0:
        # An agent whose workers only failed on a peer's account: the peer's own failure, if
        # some agent logged it, is in the same episode's group.failed.
        episode = {facts.as_int(e.fields.get("restarts")) for _, e in exits}
        own = [
            (node, f)
            for node, f, count in blamed
            if _blame(f) == 0 and facts.as_int(count) in episode
        ]
        if own:
            named, where = own, "group.failed root_cause"
    if not named:
        # The job recovered: each failed group's own blame (launchers that name it), else
        # every failure it listed.
        named = [(node, f) for node, f, _ in blamed]
        where = "group.failed root_cause"
    if not named:
        named = [
            (node, failure)
            for node, e in facts.events_named(history, ev.GROUP_FAILED)
            for failure in e.fields.get("failures") or []
            if isinstance(failure, dict)
        ]
        where = "group.failed"
    if not named:
        # No failure reported at all: survivors whose workers only saw the broken
        # connection wait for the cause, and a lost node's round comes first.
        for _, e in facts.events_named(history, ev.GROUP_RESTART):
            if e.fields.get("reason") == NODE_LOST_KIND:
                gone = str(e.fields.get("detail") or "")
                made_up = {"kind": NODE_LOST_KIND, "detail": gone}
                return _lost_node(history, gone), made_up, "group.restart node_lost"
        return None
    node, failure = _best(named)
    if _blame(failure) > 0:
        lost = _node_lost_after(history, node, failure)
        if lost is not None:
            return (
                _lost_node(history, lost),
                {"kind": NODE_LOST_KIND, "detail": lost},
                (f"rendezvous round after node {node}'s {failure.get('kind')} failure: node_lost"),
            )
    return node, failure, where


def _best(named: Named) -> tuple[int, Mapping[str, Any]]:
    return min(named, key=lambda nf: (_blame(nf[1]), _when(nf[1])))


def _blame(failure: Mapping[str, Any]) -> int:
    kind = failure.get("kind")
    if isinstance(kind, str) and kind in _BLAME:
        return _BLAME[kind]
    return _BLAME["stopped" if failure.get("stopped_by_agent") else "self"]


def _node_lost_after(history: History, node: int, failure: Mapping[str, Any]) -> str | None:
    """The detail (lost node ids) when the round after `failure`'s group.failed on `node`
    was formed because a node was lost."""
    seen = False
    for event in history.events.get(node, ()):
        if event.name == ev.GROUP_FAILED:
            listed = [event.fields.get("root_cause"), *(event.fields.get("failures") or [])]
            seen = seen or failure in listed
        elif seen and event.name == ev.RDZV_ROUND_COMPLETE:
            if event.fields.get("reason") != NODE_LOST_KIND:
                return None
            restart = [
                e
                for e in history.events.get(node, ())
                if e.name == ev.GROUP_RESTART and e.wall_time >= event.wall_time
            ]
            return str(restart[0].fields.get("detail") or "") if restart else ""
    return None


def _lost_node(history: History, detail: str) -> int:
    """The harness index of the first lost node in `detail`: rendezvous ids are the agent's
    node id (its --local-addr) followed by "-<pid>-<nonce>"."""
    for part in detail.split(","):
        part = part.strip()
        owners = [
            (len(node_id), node)
            for node, node_id in facts.node_ids(history).items()
            if part == node_id or part.startswith(f"{node_id}-")
        ]
        if owners:
            return max(owners)[1]  # the longest id: "node-1" must not claim "node-10-..."
    return -1


def _when(failure: Mapping[str, Any]) -> float:
    """Sub-second where the launcher knows it (an error file's timestamp is whole seconds)."""
    precise = failure.get("precise_at")
    if isinstance(precise, int | float):
        return float(precise)
    return float(failure.get("timestamp") or 0.0)


def _observed(node: int, failure: Mapping[str, Any]) -> dict[str, Any]:
    code = facts.as_int(failure.get("exit_code"))
    sig = facts.signal_name(failure.get("signal"))
    if sig is None and code is not None and code < 0:
        sig = facts.signal_name(-code)
    return {
        "rank": facts.as_int(failure.get("rank")),
        "node": node,
        "exit_code": code,
        "signal": sig,
    }


def _mismatches(observed: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    return [
        f"{key} {observed.get(key)} (expected {value})"
        for key, value in wanted.items()
        if value is not None and observed.get(key) != value
    ]


class RootCauseChecker:
    name = "root_cause"

    def applies(self, scenario: Scenario) -> bool:
        return scenario.expect.root_cause is not None

    def check(self, history: History, scenario: Scenario) -> Verdict:
        expected = scenario.expect.root_cause
        no_log = facts.no_event_log_reason(history, scenario)
        if expected is None or no_log is not None:
            return unknown(self.name, f"cannot name the root cause: {no_log or 'nothing expected'}")
        found = launcher_root_cause(history)
        if found is None:
            return verdict(self.name, False, "the launcher reported no failure at all")
        node, failure, where = found
        observed = _observed(node, failure)
        said = f"rank {observed['rank']} on node {node}, exit code {observed['exit_code']}" + (
            f" ({observed['signal']})" if observed["signal"] else ""
        )
        if failure.get("kind") == NODE_LOST_KIND:
            said = f"node {node} lost ({failure.get('detail') or 'ids unknown'})"
        elif failure.get("kind") not in (None, "self"):
            said += f", a {failure.get('kind')} failure"
        evidence = [f"{where}: {said}"]
        if failure.get("message"):
            evidence.append(f"message: {failure.get('message')}")
        wanted = {
            "rank": expected.rank,
            "node": expected.node,
            "exit_code": expected.exit_code,
            "signal": facts.signal_name(expected.signal),
        }
        problems = _mismatches(observed, wanted)
        kills = [
            f
            for f in facts.fault_fires(history, scenario)
            if f.kind == "kill_worker" and f.skipped is None
        ]
        matched = None
        for fire in kills:
            did = {
                "rank": facts.as_int(fire.did.get("rank")),
                "pid": facts.as_int(fire.did.get("pid")),
                "node": facts.as_int(fire.did.get("node")),
                "exit_code": facts.as_int(fire.did.get("exit_code")),
                "signal": facts.signal_name(fire.did.get("signal")),
            }
            if did["exit_code"] is not None:
                did["signal"] = None  # the worker was made to exit with a code, not signaled
            seen = {**observed, "pid": facts.as_int(failure.get("pid"))}
            evidence.append(
                f"fault {fire.index} (kill_worker at t={fire.t:.2f}s) did {dict(fire.did)}"
            )
            if not _mismatches(seen, did):
                matched = fire.index
        if kills and matched is None:
            problems.append("it matches no injected kill_worker fault")
        elif not kills:
            evidence.append("no kill_worker fault fired: compared with the expectation only")
        measured = {**observed, "fault": matched}
        if problems:
            return verdict(
                self.name, False, f"root cause {said}: " + "; ".join(problems), evidence, measured
            )
        tail = f", injected by fault {matched}" if matched is not None else ""
        return verdict(self.name, True, f"root cause {said}{tail}", evidence, measured)
