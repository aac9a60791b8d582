"""How often a waiting joiner polls its forming round (launcher/rendezvous/state/pacing.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from launcher.rendezvous.state import Params
from launcher.rendezvous.state.pacing import (
    PROMPT_S,
    JoinPace,
    close_imminent,
    spread_poll_s,
    until_target_s,
)

P = Params(run_id="job", min_nodes=50, max_nodes=100, max_restarts=0, last_call_timeout_s=30.0)


def test_the_spread_keeps_the_whole_rounds_poll_rate_flat() -> None:
    assert spread_poll_s(P, 5) == P.poll_interval_s
    assert spread_poll_s(P, 100) == pytest.approx(0.5)
    assert spread_poll_s(P, 10_000) == 1.0


def test_the_predicted_close_follows_the_pace_since_joining() -> None:
    assert until_target_s(60, 100, (20, 10.0), now=11.0) == pytest.approx(1.0)  # 40/s
    assert until_target_s(100, 100, (20, 10.0), now=11.0) == 0.0
    assert math.isinf(until_target_s(20, 100, (20, 10.0), now=11.0))  # no growth: no pace


def test_a_joiner_wakes_for_the_predicted_close_once_not_at_the_full_rate() -> None:
    big = Params(run_id="job", min_nodes=500, max_nodes=1000, max_restarts=0)
    pace = JoinPace(big, joined=10, now=0.0)
    pace.observe(800, 1000, None, now=1.0)  # 790 joined in 1 s: 200 more in 0.25 s
    assert pace.next_poll_s(800, now=1.0) == pytest.approx(200 / 790)  # not the 1 s spread
    pace.observe(850, 1000, None, now=1.25)  # the prediction failed: the spread, once
    assert pace.next_poll_s(850, now=1.25) == spread_poll_s(big, 850) == 1.0
    pace.observe(880, 1000, None, now=2.25)  # then a new prediction
    assert pace.next_poll_s(880, now=2.25) == pytest.approx(120 * 2.25 / 870)


def test_a_round_about_to_close_is_polled_at_the_full_rate_for_a_bounded_time() -> None:
    pace = JoinPace(P, joined=1, now=0.0)
    pace.observe(91, 100, None, now=5.0)  # within a tenth of the 100 expected
    assert pace.next_poll_s(91, now=5.0) == P.poll_interval_s
    assert pace.next_poll_s(91, now=5.0 + PROMPT_S / 2) == P.poll_interval_s
    # The last joiners never came: after PROMPT_S the spread again, not 20 reads a second.
    assert pace.next_poll_s(91, now=5.0 + PROMPT_S + 0.01) >= spread_poll_s(P, 91) - 1e-9


def test_the_last_call_makes_a_round_imminent_in_its_last_half_second() -> None:
    assert not close_imminent(P, 60, 0, min_seen_at=0.0, now=29.0)
    assert close_imminent(P, 60, 0, min_seen_at=0.0, now=29.6)
    assert close_imminent(P, 95, 0, min_seen_at=None, now=0.0)  # round 0: max_nodes counts
    assert not close_imminent(P, 60, 0, min_seen_at=None, now=100.0)


def test_a_joiner_polls_no_later_than_the_last_calls_final_moments() -> None:
    pace = JoinPace(P, joined=60, now=0.0)
    pace.observe(60, 0, min_seen_at=0.0, now=29.2)  # the last call ends at 30 s
    assert pace.next_poll_s(60, now=29.2) == pytest.approx(30.0 - PROMPT_S - 29.2)
    pace.observe(60, 0, min_seen_at=0.0, now=29.5)
    assert pace.next_poll_s(60, now=29.5) == P.poll_interval_s  # then the full rate


WOKEN = dataclasses.replace(P, store_wakes=True)


def test_a_joiner_the_store_wakes_polls_only_as_a_fallback() -> None:
    # Woken with its assignment, it has no reason to poll for the close: not at the full
    # rate near the count, nor timed to a predicted close.
    assert spread_poll_s(WOKEN, 5) == spread_poll_s(WOKEN, 100) == 1.0
    assert not close_imminent(WOKEN, 99, 100, min_seen_at=0.0, now=1.0)
    pace = JoinPace(WOKEN, joined=10, now=0.0)
    pace.observe(40, 100, None, now=1.0)  # 60 more at 30/s: a close 2 s away
    assert pace.next_poll_s(40, now=1.0) == 1.0
    # A close due within the nap: the fallback poll comes a nap after it, not around it.
    pace.observe(95, 100, None, now=1.0)  # 5 more at 85/s
    assert pace.next_poll_s(95, now=1.0) == pytest.approx(1.0 + 5 / 85)
    # Only the end of a last call still needs someone to look, at the full rate.
    assert close_imminent(WOKEN, 60, 0, min_seen_at=0.0, now=29.6)
