"""Faults as data: what happens, to whom, when, for how long; parsed from and printed as
one-line specs so a failing schedule can be replayed from the command line.

    KIND[:ARG]@AT[+DURATION]        times in virtual seconds

    crash:3@10          node 3's agent dies (SIGKILL: no goodbye, no more heartbeats)
    pause:3@10+8        node 3 stops for 8 s (SIGSTOP/SIGCONT), then carries on
    leave:3@10          node 3's agent gets SIGTERM: it announces its departure and exits
    fail:3@10           a worker on node 3 fails (the job restarts, charged to the budget)
    late:3@10           node 3's agent starts at t=10 instead of with the others
    partition:0-4@10+5  nodes 0..4 cannot reach the store for 5 s
    spike:10@10+2       every store round trip takes 10x longer for 2 s
    drop:0.05@10+2      each reply is lost with probability 0.05 for 2 s
    delay:0.5@10+2      each reply comes up to 0.5 s late for 2 s
    restart@10+2        the store is down for 2 s (data kept, as etcd's is)
    restart:wipe@10+2   ... and comes back empty (a c10d host that restarted)
    forge@10+5          an intruder without the job secret writes forged values every 0.1 s
                        for 5 s (needs --secret; see chaos/sim/forger.py)

Node sets: `3`, `0-4`, `1/5/9`, `~3` (three nodes drawn from the seed), `~1%`.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

NODE_KINDS = ("crash", "pause", "leave", "fail", "late", "partition")
STORE_KINDS = ("spike", "drop", "delay", "restart", "forge")
KINDS = NODE_KINDS + STORE_KINDS
WINDOW_KINDS = frozenset({"pause", "partition", *STORE_KINDS})
# What random schedules draw from (forging needs a job secret, and a seed's schedule must
# not change as kinds are added).
DRAWN_KINDS = tuple(k for k in KINDS if k != "forge")

_SPEC = re.compile(r"^(?P<kind>[a-z]+)(?::(?P<arg>[^@]+))?@(?P<at>[0-9.]+)(?:\+(?P<dur>[0-9.]+))?$")


class FaultSpecError(ValueError):
    def __init__(self, spec: str, why: str) -> None:
        self.spec, self.why = spec, why
        super().__init__(f"bad fault {spec!r}: {why} (see `chaos sim --help`)")


@dataclass(frozen=True, kw_only=True)
class Fault:
    kind: str
    at_s: float
    duration_s: float = 0.0
    nodes: tuple[int, ...] = ()
    # Nodes still to be drawn from the seed: a count ("3") or a share ("1%").
    pick: str = ""
    # spike: the latency factor; drop: the probability; delay: the most seconds added;
    # restart: 1.0 wipes the data.
    value: float = 0.0

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    def spec(self) -> str:
        if self.kind in NODE_KINDS:
            arg = f"~{self.pick}" if self.pick else format_nodes(self.nodes)
        elif self.kind == "restart":
            arg = "wipe" if self.value else ""
        elif self.kind == "forge":
            arg = ""
        else:
            arg = f"{self.value:g}"
        text = f"{self.kind}{':' + arg if arg else ''}@{self.at_s:g}"
        return text + (f"+{self.duration_s:g}" if self.kind in WINDOW_KINDS else "")


def parse_fault(spec: str) -> Fault:
    match = _SPEC.match(spec.strip())
    if match is None:
        raise FaultSpecError(spec, "expected KIND[:ARG]@AT[+DURATION]")
    kind, arg = match["kind"], match["arg"] or ""
    if kind not in KINDS:
        raise FaultSpecError(spec, f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    at, dur = float(match["at"]), float(match["dur"] or 0.0)
    if kind in WINDOW_KINDS and dur <= 0:
        raise FaultSpecError(spec, f"{kind} needs a duration: {kind}...@AT+SECONDS")
    if kind not in WINDOW_KINDS and match["dur"]:
        raise FaultSpecError(spec, f"{kind} takes no duration")
    if kind in NODE_KINDS:
        if not arg:
            raise FaultSpecError(spec, f"{kind} needs nodes: {kind}:3@AT, {kind}:0-4@AT, ~2")
        if arg.startswith("~"):
            return Fault(kind=kind, at_s=at, duration_s=dur, pick=_check_pick(spec, arg[1:]))
        return Fault(kind=kind, at_s=at, duration_s=dur, nodes=_parse_nodes(spec, arg))
    if kind == "forge":
        if arg:
            raise FaultSpecError(spec, "forge takes no argument")
        return Fault(kind=kind, at_s=at, duration_s=dur)
    if kind == "restart":
        if arg not in ("", "wipe"):
            raise FaultSpecError(spec, "restart takes no argument or `wipe`")
        return Fault(kind=kind, at_s=at, duration_s=dur, value=1.0 if arg else 0.0)
    try:
        value = float(arg)
    except ValueError:
        raise FaultSpecError(spec, f"{kind} needs a number: {kind}:NUMBER@AT+SECONDS") from None
    if kind == "drop" and not 0 < value <= 1:
        raise FaultSpecError(spec, "a drop probability is in (0, 1]")
    if kind == "spike" and value < 1:
        raise FaultSpecError(spec, "a spike factor is at least 1")
    if kind == "delay" and value <= 0:
        raise FaultSpecError(spec, "a delay is positive")
    return Fault(kind=kind, at_s=at, duration_s=dur, value=value)


def parse_faults(text: str) -> tuple[Fault, ...]:
    return tuple(parse_fault(part) for part in text.split(",") if part.strip())


def format_faults(faults: Iterable[Fault]) -> str:
    return ",".join(f.spec() for f in faults)


def format_nodes(nodes: tuple[int, ...]) -> str:
    if len(nodes) > 1 and nodes == tuple(range(nodes[0], nodes[-1] + 1)):
        return f"{nodes[0]}-{nodes[-1]}"
    return "/".join(str(n) for n in nodes)


def _parse_nodes(spec: str, arg: str) -> tuple[int, ...]:
    try:
        if "-" in arg:
            lo, hi = (int(x) for x in arg.split("-", 1))
            nodes = tuple(range(lo, hi + 1))
        else:
            nodes = tuple(int(x) for x in arg.split("/"))
    except ValueError:
        raise FaultSpecError(spec, f"bad node set {arg!r}") from None
    if not nodes or min(nodes) < 0:
        raise FaultSpecError(spec, f"bad node set {arg!r}")
    return nodes


def _check_pick(spec: str, pick: str) -> str:
    body = pick[:-1] if pick.endswith("%") else pick
    try:
        ok = float(body) > 0 if pick.endswith("%") else int(body) > 0
    except ValueError:
        ok = False
    if not ok:
        raise FaultSpecError(spec, f"bad node pick ~{pick}: a count (~3) or a share (~1%)")
    return pick


def resolve(faults: Iterable[Fault], nodes: int, rng: random.Random) -> tuple[Fault, ...]:
    """Draws the nodes of `~` picks from the seed's generator (in fault order)."""
    out = []
    for fault in faults:
        if fault.pick:
            share = fault.pick.endswith("%")
            count = math.ceil(nodes * float(fault.pick[:-1]) / 100) if share else int(fault.pick)
            chosen = tuple(sorted(rng.sample(range(nodes), min(nodes, count))))
            fault = replace(fault, nodes=chosen, pick="")
        out.append(fault)
    return tuple(out)


def draw(
    rng: random.Random, *, count: int, nodes: int, start_s: float, window_s: float
) -> tuple[Fault, ...]:
    """`count` faults drawn from the seed, at times within [start_s, start_s + window_s)."""
    faults = []
    for _ in range(count):
        kind = rng.choice(DRAWN_KINDS)
        at = round(start_s + rng.random() * window_s, 3)
        dur = round(0.5 + rng.random() * 9.5, 3) if kind in WINDOW_KINDS else 0.0
        picked = tuple(sorted(rng.sample(range(nodes), rng.randint(1, max(1, nodes // 4)))))
        if kind in NODE_KINDS:
            one = kind in ("crash", "leave", "late", "fail")
            faults.append(
                Fault(kind=kind, at_s=at, duration_s=dur, nodes=picked[:1] if one else picked)
            )
        elif kind == "spike":
            faults.append(Fault(kind=kind, at_s=at, duration_s=dur, value=rng.choice((5, 20, 100))))
        elif kind == "drop":
            faults.append(Fault(kind=kind, at_s=at, duration_s=dur, value=rng.choice((0.01, 0.1))))
        elif kind == "delay":
            faults.append(Fault(kind=kind, at_s=at, duration_s=dur, value=rng.choice((0.1, 1.0))))
        else:
            faults.append(Fault(kind=kind, at_s=at, duration_s=dur))
    return tuple(sorted(faults, key=lambda f: f.at_s))


def quiet_at(faults: Iterable[Fault], *, read_timeout_s: float, latency_cap_s: float) -> float:
    """When the last fault's effects are over: no op is held, slowed or left hanging.

    A lost reply leaves its op hanging until the read timeout; a spike's slowed ops land
    up to one capped round trip later; a partition or a store outage ends when it ends
    (an op held longer than the read timeout has failed by then)."""
    quiet = 0.0
    for f in faults:
        end = f.end_s
        if f.kind == "drop":
            end += read_timeout_s
        elif f.kind == "spike":
            end += latency_cap_s * f.value
        elif f.kind == "delay":
            end += f.value
        quiet = max(quiet, end)
    return quiet
