"""The pure parts of the hang path's dumps: which frames matter, and NCCL's debug pipe."""

from __future__ import annotations

import os
from pathlib import Path

from launcher.progress.dumps import key_frames, trigger_flight_recorder

PY_SPY = """\
Process 20148: python3 -u train.py
Python v3.11.7 (/usr/bin/python3.11)

Thread 20150 (idle): "Thread-1"
    wait (threading.py:327)
Thread 20148 (idle): "MainThread"
    chaos_hang (hanger.py:29)
    main (hanger.py:54)
    <module> (hanger.py:64)
"""
FAULTHANDLER = """\
Fatal Python error: Aborted

Thread 0x00007f0000000001 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 327 in wait
Current thread 0x00007f0000000002 (most recent call first):
  File "/work/hanger.py", line 29 in chaos_hang
  File "/work/hanger.py", line 54 in main
"""


def test_the_main_threads_innermost_frames_are_the_ones_shown() -> None:
    assert key_frames(PY_SPY) == ["chaos_hang (hanger.py:29)", "main (hanger.py:54)",
                                  "<module> (hanger.py:64)"]  # fmt: skip
    assert key_frames(PY_SPY, limit=1) == ["chaos_hang (hanger.py:29)"]
    assert key_frames(FAULTHANDLER) == [
        'File "/work/hanger.py", line 29 in chaos_hang',
        'File "/work/hanger.py", line 54 in main',
    ]
    assert key_frames("(traceback printed to the worker's console)") == []


def test_the_flight_recorder_pipe_of_each_rank_gets_one_byte(tmp_path: Path) -> None:
    prefix = str(tmp_path / "nccl_trace_rank_")
    os.mkfifo(f"{prefix}1.pipe")
    reader = os.open(f"{prefix}1.pipe", os.O_RDONLY | os.O_NONBLOCK)  # as NCCL's listener
    try:
        # rank 0 has no pipe (no trace buffer): skipped, not an error
        assert trigger_flight_recorder(prefix, [0, 1]) == {1: f"{prefix}1.pipe"}
        assert os.read(reader, 16) == b"1"
        assert trigger_flight_recorder(None, [0, 1]) == {}
    finally:
        os.close(reader)
