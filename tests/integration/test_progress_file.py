from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from launcher.progress import PROGRESS_FILE_ENV
from launcher.progress.reader import read_progress
from tests.conftest import clean_env

pytestmark = pytest.mark.integration

# Beats as fast as it can for a second, step i on beat i + 1: a torn read would break that.
WRITER = textwrap.dedent(
    """
    import time
    from launcher import progress
    end = time.monotonic() + 1.0
    i = 0
    while time.monotonic() < end:
        progress.beat(step=i)
        i += 1
    print(i, flush=True)
    """
)


@pytest.mark.timeout(60)
def test_the_reader_never_returns_a_torn_snapshot_of_a_live_writer(tmp_path: Path) -> None:
    path = tmp_path / "rank0"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER],
        env=clean_env(**{PROGRESS_FILE_ENV: str(path)}),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        seen = 0
        while proc.poll() is None:
            snap = read_progress(path)
            if snap is not None and snap.beats:
                assert snap.step == snap.beats - 1, snap
                assert snap.seq >= snap.beats
                seen += 1
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == 0
    final = read_progress(path)
    assert final is not None and final.beats == int(out) and final.step == int(out) - 1
    assert seen > 10  # the reader really did overlap the writer
