"""Root cause, messages, exit codes and the torchrun failure summary."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher.failures.classify import FailureKind
from launcher.failures.error_file import ErrorRecord
from launcher.failures.report import (
    NO_TRACEBACK_HINT,
    WorkerFailure,
    brief,
    cause_note,
    exit_code_for,
    failure_fields,
    failure_message,
    format_summary,
    observe_failure,
    root_cause,
    signal_name,
)

# torchrun 2.13, `torchrun --nproc-per-node 2 fail.py`: rank 1 raised ValueError inside a
# function decorated with torch's @record, rank 0 waited in signal.pause() and was terminated.
# The text after "ChildFailedError: " on stderr, split into lines (trailing spaces matter).
TORCHRUN_SUMMARY = [
    "",
    "============================================================",
    "fail.py FAILED",
    "------------------------------------------------------------",
    "Failures:",
    "[1]:",
    "  time      : 2026-11-25_17:43:26",
    "  host      : localhost",
    "  rank      : 0 (local_rank: 0)",
    "  exitcode  : -15 (pid: 3895)  (SIGTERM)",
    "  error_file: <N/A>",
    "  traceback : Signal 15 (SIGTERM) received by PID 3895",
    "------------------------------------------------------------",
    "Root Cause (first observed failure):",
    "[0]:",
    "  time      : 2026-11-25_17:43:26",
    "  host      : localhost",
    "  rank      : 1 (local_rank: 1)",
    "  exitcode  : 1 (pid: 3896) ",
    "  error_file: /tmp/torchelastic_2aqvwivu/273f4525-a5fc-46df-a150-8f70c2a7cce9_3jkbmkfm/"
    "attempt_0/1/error.json",
    "  traceback : Traceback (most recent call last):",
    '    File "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/torch/distributed/'
    'elastic/multiprocessing/errors/__init__.py", line 367, in wrapper',
    "      return f(*args, **kwargs)",
    "             ^^^^^^^^^^^^^^^^^^",
    '    File "/tmp/fx/fail.py", line 7, in main',
    '      raise ValueError("boom from rank 1")',
    "  ValueError: boom from rank 1",
    "  ",
    "============================================================",
]
TORCH_CALLSTACK = (
    "Traceback (most recent call last):\n"
    '  File "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/torch/distributed/'
    'elastic/multiprocessing/errors/__init__.py", line 367, in wrapper\n'
    "    return f(*args, **kwargs)\n"
    "           ^^^^^^^^^^^^^^^^^^\n"
    '  File "/tmp/fx/fail.py", line 7, in main\n'
    '    raise ValueError("boom from rank 1")\n'
    "ValueError: boom from rank 1\n"
)
# 2026-11-25 17:43:26 in this machine's local time zone, so the printed `time` is the same.
LOCAL_17_43_26 = int(time.mktime((2026, 11, 25, 17, 43, 26, 0, 0, -1)))


def nested(message: str, traceback: str | None = None, timestamp: int = 0) -> ErrorRecord:
    extra: dict[str, object] = {"timestamp": str(timestamp)}
    if traceback is not None:
        extra["py_callstack"] = traceback
    return ErrorRecord(
        message=message,
        traceback=traceback,
        timestamp=timestamp,
        raw={"message": {"message": message, "extraInfo": extra}},
    )


def failure(
    rank: int = 0,
    *,
    exitcode: int = 1,
    pid: int = 100,
    timestamp: float = 1_700_000_000.0,
    record: ErrorRecord | None = None,
    error_file: Path | None = None,
    host: str = "node0",
    precise_at: float | None = None,
) -> WorkerFailure:
    return WorkerFailure(
        local_rank=rank,
        global_rank=rank,
        pid=pid,
        exitcode=exitcode,
        error_file=error_file,
        record=record,
        timestamp=timestamp,
        host=host,
        precise_at=precise_at,
    )


def test_summary_matches_real_torchrun_output() -> None:
    error_file = Path(
        "/tmp/torchelastic_2aqvwivu/273f4525-a5fc-46df-a150-8f70c2a7cce9_3jkbmkfm/"
        "attempt_0/1/error.json"
    )
    raised = WorkerFailure(
        local_rank=1,
        global_rank=1,
        pid=3896,
        exitcode=1,
        error_file=error_file,
        record=nested("ValueError: boom from rank 1", TORCH_CALLSTACK, LOCAL_17_43_26),
        timestamp=LOCAL_17_43_26 + 0.4,
        host="localhost",
    )
    terminated = WorkerFailure(
        local_rank=0,
        global_rank=0,
        pid=3895,
        exitcode=-15,
        error_file=Path("/tmp/never/written/0/error.json"),
        record=None,
        timestamp=LOCAL_17_43_26 + 0.5,
        host="localhost",
    )

    summary = format_summary("fail.py", [raised, terminated])

    assert summary.split("\n") == TORCHRUN_SUMMARY


def test_summary_without_other_failures() -> None:
    only = failure(3, exitcode=2, pid=7, timestamp=LOCAL_17_43_26)

    lines = format_summary("train.py", [only]).split("\n")

    width = len("  traceback : " + NO_TRACEBACK_HINT)
    assert width > 60
    assert lines[1] == "=" * 60
    assert lines[4:7] == ["Failures:", "  <NO_OTHER_FAILURES>", "-" * 60]
    assert lines[7:] == [
        "Root Cause (first observed failure):",
        "[0]:",
        "  time      : 2026-11-25_17:43:26",
        "  host      : node0",
        "  rank      : 3 (local_rank: 3)",
        "  exitcode  : 2 (pid: 7) ",
        "  error_file: <N/A>",
        f"  traceback : {NO_TRACEBACK_HINT}",
        "=" * 60,
    ]


def test_width_is_longest_failure_line_below_sixty() -> None:
    record = nested("E: x", "short", LOCAL_17_43_26)
    only = failure(record=record, error_file=Path("/e"))

    lines = format_summary("x", [only]).split("\n")

    # The time line is the longest failure line; like torch, the fixed headings are not
    # counted, so "Root Cause (first observed failure):" sticks out past the rules.
    longest = "  time      : 2026-11-25_17:43:26"
    assert lines[1] == "=" * len(longest)
    assert lines[3] == "-" * len(longest)
    assert lines[-1] == "=" * len(longest)
    assert len("Root Cause (first observed failure):") > len(longest)


def test_width_counts_the_title_and_every_failure() -> None:
    short = failure(0, record=nested("E: x", "t", 1), error_file=Path("/e"))
    longer = failure(1, record=nested("E: y", "t" * 40, 2), error_file=Path("/e"))
    title_only = "n" * 45

    by_other = format_summary("x", [short, longer]).split("\n")
    by_title = format_summary(title_only, [short]).split("\n")

    assert by_other[1] == "=" * len("  traceback : " + "t" * 40)
    assert by_title[1] == "=" * len(f"{title_only} FAILED")


def test_traceback_lines_are_indented_but_flat_messages_are_not() -> None:
    tb = failure(0, record=nested("E: x", "line one\nline two\n", 1), error_file=Path("/e"))
    flat = failure(
        1,
        record=ErrorRecord(message="first\nsecond", timestamp=2, raw={"message": "first\nsecond"}),
        error_file=Path("/f"),
    )

    summary = format_summary("x", [tb, flat])

    assert "  traceback : line one\n  line two\n  \n" in summary
    # torch prints a flat message verbatim: continuation lines start at column 0.
    assert "  traceback : first\nsecond\n" in summary


def test_error_file_shown_only_when_it_was_read() -> None:
    unread = failure(0, error_file=Path("/tmp/x/error.json"), record=None)
    read = failure(1, error_file=Path("/tmp/y/error.json"), record=nested("E: x", "tb"))

    summary = format_summary("x", [unread, read])

    assert "  error_file: <N/A>" in summary
    assert "  error_file: /tmp/y/error.json" in summary
    assert "/tmp/x/error.json" not in summary


def test_summary_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no failures"):
        format_summary("x", [])


@pytest.mark.parametrize(
    ("exitcode", "name"),
    [(-15, "SIGTERM"), (-9, "SIGKILL"), (-11, "SIGSEGV"), (-6, "SIGABRT"), (1, None), (0, None)],
)
def test_signal_name(exitcode: int, name: str | None) -> None:
    assert signal_name(exitcode) == name


def test_signal_name_of_unknown_signal_is_none() -> None:
    assert signal_name(-1000) is None


def test_failure_message_prefers_traceback() -> None:
    with_tb = failure(record=nested("ValueError: boom", "Traceback ...\nValueError: boom\n"))
    without_tb = failure(record=nested("ValueError: boom"))

    assert failure_message(with_tb) == "Traceback ...\nValueError: boom\n"
    assert failure_message(without_tb) == "ValueError: boom"


def test_failure_message_without_record() -> None:
    assert failure_message(failure(exitcode=-9, pid=42)) == "Signal 9 (SIGKILL) received by PID 42"
    assert (
        failure_message(failure(exitcode=-1000, pid=4)) == "Signal 1000 (<N/A>) received by PID 4"
    )
    assert failure_message(failure(exitcode=3)) == NO_TRACEBACK_HINT


def test_failure_message_of_empty_flat_record_falls_back() -> None:
    empty = ErrorRecord(message="", raw={"message": ""})

    assert failure_message(failure(exitcode=-15, pid=5, record=empty)).startswith("Signal 15")


@pytest.mark.parametrize(("exitcode", "expected"), [(1, 1), (3, 3), (-9, 137), (-15, 143), (0, 1)])
def test_exit_code_for(exitcode: int, expected: int) -> None:
    assert exit_code_for(failure(exitcode=exitcode)) == expected


def test_root_cause_is_earliest() -> None:
    late = failure(0, timestamp=200.0)
    early = failure(1, timestamp=100.0)

    assert root_cause([late, early]) is early


def test_root_cause_ties_within_a_second_go_to_first_listed() -> None:
    first = failure(0, timestamp=100.9)
    second = failure(1, timestamp=100.1)

    assert root_cause([first, second]) is first


def test_root_cause_within_a_second_goes_to_the_precise_first() -> None:
    """A peer's collective fails (its error file says "Connection reset by peer") in the same
    second as the worker that was killed: whole seconds and the lowest rank would name the
    peer, as torch does; the precise times name the worker that died first."""
    peer = failure(0, timestamp=100.0, record=nested("E: reset", "tb", 100), precise_at=100.93)
    killed = failure(1, timestamp=100.91, precise_at=100.91)

    assert root_cause([peer, killed]) is killed
    # The agent noticed the killed worker a scheduling delay after the peer's error file.
    late_seen = failure(1, exitcode=-9, timestamp=100.95, precise_at=100.95)
    stopped_peer = failure(
        0, exitcode=-15, record=nested("E: closed by peer", "tb", 100), precise_at=100.93
    )
    stopped_peer = dataclasses.replace(stopped_peer, stopped_by_agent=True)
    assert root_cause([stopped_peer, late_seen]) is late_seen
    # Seconds apart, a worker the agent stopped still never outranks one that failed itself.
    assert (
        root_cause([dataclasses.replace(stopped_peer, precise_at=98.0), late_seen]).global_rank == 1
    )
    # Seconds apart and both their own: the earlier one stays the root cause.
    assert root_cause([failure(0, timestamp=100.0, precise_at=100.5), killed]).global_rank == 0


def test_root_cause_uses_the_workers_own_timestamp() -> None:
    # Observed late (the agent polls), but the worker recorded an earlier failure time.
    recorded = failure(0, timestamp=300.0, record=nested("E: x", "tb", 100))
    observed = failure(1, timestamp=200.0)
    unknown_time = failure(2, timestamp=150.0, record=nested("E: y", "tb", 0))

    assert root_cause([observed, recorded]) is recorded
    assert root_cause([recorded, unknown_time]) is recorded
    assert root_cause([observed, unknown_time]) is unknown_time


def test_root_cause_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no failures"):
        root_cause([])


def test_root_cause_is_listed_last_with_its_own_index() -> None:
    failures = [
        failure(0, timestamp=300.0),
        failure(1, timestamp=100.0),
        failure(2, timestamp=200.0),
    ]

    lines = format_summary("x", failures).split("\n")
    index_lines = [line for line in lines if line.startswith("[")]

    assert index_lines == ["[0]:", "[2]:", "[1]:"]


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=1, max_value=2e9), st.integers(min_value=0, max_value=2_000_000_000)
        ),
        min_size=1,
        max_size=8,
    )
)
def test_root_cause_is_first_minimum(times: list[tuple[float, int]]) -> None:
    failures = [
        failure(i, timestamp=observed, record=nested("E: x", "tb", recorded) if recorded else None)
        for i, (observed, recorded) in enumerate(times)
    ]
    seconds = [recorded or int(observed) for observed, recorded in times]

    chosen = root_cause(failures)

    assert chosen is failures[seconds.index(min(seconds))]


# -- kinds before times (issue 9, section 5) --------------------------------------------------
GLOO_CLOSED = (
    "RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] "
    "Connection closed by peer [127.0.0.1]:31661. This is typically caused by a remote worker "
    "crashing. Check the logs of the remote worker before reporting an error. GLHF!"
)
GLOO_TIMEOUT = (
    "RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc"
    ":78] Timed out waiting 5000ms for recv operation to complete"
)
NCCL_WATCHDOG = (
    "DistBackendError: [Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7,"
    " OpType=ALLREDUCE, Timeout(ms)=600000) ran for 600012 milliseconds before timing out."
)


def test_the_issue_case_names_the_worker_that_exited_not_the_stopped_symptom() -> None:
    """Rank 1 exits 3; rank 0's collective fails and writes "Connection closed by peer" a
    second and a half before rank 1's exit is observed; the agent then SIGTERMs rank 0."""
    symptom = failure(0, exitcode=-15, record=nested(GLOO_CLOSED, "tb", 100), precise_at=100.0)
    symptom = dataclasses.replace(symptom, stopped_by_agent=True)
    cause = failure(1, exitcode=3, timestamp=101.5, precise_at=101.5)

    for order in ([symptom, cause], [cause, symptom]):
        chosen = root_cause(order)
        assert chosen is cause and chosen.kind is FailureKind.SELF
    summary = format_summary("train.py", [symptom, cause])
    root = summary[summary.index("Root Cause") :]
    assert "rank      : 1 (local_rank: 1)" in root and "exitcode  : 3 (pid: 100) " in root
    assert failure_fields(symptom)["kind"] == "stopped"
    assert failure_fields(symptom)["stopped_by_agent"] is True
    assert failure_fields(cause)["kind"] == "self"
    assert cause_note([symptom, cause]) is None


@pytest.mark.parametrize("message", [GLOO_CLOSED, GLOO_TIMEOUT, NCCL_WATCHDOG])
def test_an_own_failure_outranks_earlier_symptoms_whatever_the_times(message: str) -> None:
    symptoms = [
        failure(r, record=nested(message, "tb", 100), timestamp=100.0, precise_at=100.0 + r / 10)
        for r in range(3)
    ]
    cause = failure(3, exitcode=1, record=nested("ValueError: nan loss", "tb", 105), precise_at=105)

    assert root_cause([*symptoms, cause]) is cause
    # Without precise times too (torch's whole-second rule applies within a kind only).
    plain = [dataclasses.replace(f, precise_at=None) for f in [*symptoms, cause]]
    assert root_cause(plain).global_rank == 3


def test_a_symptom_outranks_a_stopped_worker_and_is_marked() -> None:
    stopped = dataclasses.replace(failure(0, exitcode=-15, precise_at=99.0), stopped_by_agent=True)
    symptom = failure(1, record=nested(GLOO_CLOSED, "tb", 100), precise_at=100.0)

    chosen = root_cause([stopped, symptom])
    assert chosen is symptom and chosen.kind is FailureKind.SYMPTOM
    assert failure_fields(chosen)["kind"] == "symptom"
    assert "a symptom" in brief(chosen)
    note = cause_note([stopped, symptom], remote_detail="rank 3 (...) exit code 7 on node1")
    assert note is not None and "cause is on another node: rank 3" in note
    # The summary itself keeps torch's layout: the note is a separate line.
    last = format_summary("x", [stopped, symptom]).split("\n")[-1]
    assert set(last) == {"="}


def test_only_stopped_workers_the_earliest_is_named() -> None:
    a = dataclasses.replace(failure(0, exitcode=-15, precise_at=100.5), stopped_by_agent=True)
    b = dataclasses.replace(failure(1, exitcode=-15, precise_at=100.2), stopped_by_agent=True)
    assert root_cause([a, b]) is b and b.kind is FailureKind.STOPPED
    assert brief(b).endswith("SIGTERM, stopped by the launcher")


def test_a_hung_worker_outranks_the_symptoms_of_its_peers() -> None:
    symptom = failure(0, record=nested(GLOO_TIMEOUT, "tb", 100), precise_at=100.0)
    hung = dataclasses.replace(
        failure(1, exitcode=-15, precise_at=130.0), stopped_by_agent=True, hung=True
    )
    assert root_cause([symptom, hung]) is hung
    assert failure_fields(hung)["kind"] == "hang"


def test_within_a_moment_an_outside_signal_still_precedes_an_exit_code() -> None:
    exited = failure(0, exitcode=1, precise_at=100.2)
    killed = failure(1, exitcode=-9, precise_at=100.6)
    assert root_cause([exited, killed]) is killed


def test_observe_failure_carries_hung(tmp_path: Path) -> None:
    f = observe_failure(
        local_rank=0,
        global_rank=0,
        pid=1,
        exitcode=-15,
        error_file=None,
        exited_at=100.0,
        host="h",
        stopped_by_agent=True,
        hung=True,
    )
    assert f.kind is FailureKind.HANG
