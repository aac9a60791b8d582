from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaos.sim.faults import (
    KINDS,
    NODE_KINDS,
    WINDOW_KINDS,
    Fault,
    FaultSpecError,
    draw,
    format_faults,
    parse_fault,
    parse_faults,
    quiet_at,
    resolve,
)


def test_examples_parse() -> None:
    faults = parse_faults(
        "crash:3@10,pause:1-3@5+8,partition:1/5/9@2.5+1,spike:10@1+2,drop:0.05@3+1,"
        "delay:0.5@4+2,restart@6+2,restart:wipe@7+1,leave:~2@9,late:~10%@3,fail:0@1"
    )
    assert faults[0] == Fault(kind="crash", at_s=10.0, nodes=(3,))
    assert faults[1].nodes == (1, 2, 3) and faults[1].end_s == 13.0
    assert faults[2].nodes == (1, 5, 9)
    assert faults[3].value == 10.0 and faults[4].value == 0.05
    assert faults[6].value == 0.0 and faults[7].value == 1.0
    assert faults[8].pick == "2" and faults[9].pick == "10%"


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("explode:1@3", "unknown kind"),
        ("crash@3", "needs nodes"),
        ("pause:1@3", "needs a duration"),
        ("crash:1@3+2", "takes no duration"),
        ("drop:2@1+1", "probability"),
        ("spike:0.5@1+1", "at least 1"),
        ("crash:a-b@1", "bad node set"),
        ("crash:~0@1", "bad node pick"),
        ("restart:now@1+1", "wipe"),
        ("forge:3@1+1", "no argument"),
        ("forge@1", "needs a duration"),
        ("crash:1", "KIND"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, why: str) -> None:
    with pytest.raises(FaultSpecError, match=why):
        parse_fault(spec)


@st.composite
def faults(draw_: st.DrawFn) -> Fault:
    kind = draw_(st.sampled_from(KINDS))
    at = draw_(st.integers(0, 10_000)) / 100
    dur = draw_(st.integers(1, 10_000)) / 100 if kind in WINDOW_KINDS else 0.0
    if kind in NODE_KINDS:
        nodes = tuple(sorted(draw_(st.sets(st.integers(0, 50), min_size=1, max_size=5))))
        return Fault(kind=kind, at_s=at, duration_s=dur, nodes=nodes)
    value = {
        "spike": float(draw_(st.integers(1, 100))),
        "drop": draw_(st.integers(1, 100)) / 100,
        "delay": draw_(st.integers(1, 500)) / 100,
        "restart": float(draw_(st.booleans())),
        "forge": 0.0,
    }[kind]
    return Fault(kind=kind, at_s=at, duration_s=dur, value=value)


@given(st.lists(faults(), max_size=6))
def test_specs_round_trip(schedule: list[Fault]) -> None:
    assert parse_faults(format_faults(schedule)) == tuple(schedule)


def test_picks_are_drawn_from_the_seed() -> None:
    schedule = parse_faults("crash:~3@1,pause:~10%@2+1")
    one = resolve(schedule, 50, random.Random(7))
    assert one == resolve(schedule, 50, random.Random(7))
    assert len(one[0].nodes) == 3 and len(one[1].nodes) == 5
    assert not one[0].pick and all(0 <= n < 50 for n in one[0].nodes)


def test_drawn_schedules_are_valid_and_replayable() -> None:
    schedule = draw(random.Random(3), count=20, nodes=8, start_s=2.0, window_s=10.0)
    assert len(schedule) == 20
    assert all(2.0 <= f.at_s < 12.0 for f in schedule)
    assert parse_faults(format_faults(schedule)) == schedule


def test_quiet_time_covers_hanging_ops() -> None:
    schedule = parse_faults("crash:1@5,drop:0.1@10+2,pause:2@3+4")
    assert quiet_at(schedule, read_timeout_s=60.0, latency_cap_s=0.02) == 72.0
    assert quiet_at(parse_faults("spike:10@1+1"), read_timeout_s=1, latency_cap_s=0.1) == 3.0


def test_a_forger_needs_a_secret_and_is_refused_by_every_reader() -> None:
    from chaos.sim import SimConfig, simulate

    faults = parse_faults("forge@0.5+15,crash:3@6")
    with pytest.raises(ValueError, match="needs a job secret"):
        SimConfig(nodes=6, min_nodes=4, max_nodes=6, faults=faults).validate()
    cfg = SimConfig(
        nodes=6, min_nodes=4, max_nodes=6, seed=5, faults=faults, last_call_timeout_s=2.0,
        secret=True,
    )  # fmt: skip
    result = simulate(cfg)
    assert result.ok, result.safety
    assert result.forged > 0 and result.rejected > 0
    assert [row.size for row in result.rounds][-1] == 5  # the crash re-formed, nothing else
