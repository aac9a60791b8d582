from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = Path(__file__).resolve().parent / "workloads"

# The suite is a gate: property tests draw the same examples on every run, so a red CI
# means a change broke something, not that the dice found an old rare bug. To hunt for new
# ones, draw fresh examples (more of them): HYPOTHESIS_PROFILE=explore pytest tests/unit
# (docs/simulator.md, "Hunting").
settings.register_profile("gate", derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=2000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gate"))


@pytest.hookimpl(trylast=True)  # after xdist's pytest_configure made its reporter
def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist's worker status, without a terminal (CI, a pipe) and without -v, is the
    # line "bringing up nodes...", written twice per run and again whenever it replaces a
    # crashed worker, amid the dots. Keep its status for -v, where it says something.
    reporter = config.pluginmanager.getplugin("terminaldistreporter")
    if reporter is not None and config.option.verbose <= 0:
        reporter.ensure_show_status = lambda: None


def clean_env(**extra: str) -> dict[str, str]:
    """A small, deterministic environment for launcher and torchrun runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "TORCHELASTIC_"))}
    env.pop("OMP_NUM_THREADS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_until(predicate: object, timeout_s: float, interval_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval_s)
    return bool(predicate())  # type: ignore[operator]


def wait_for_file(path: Path, timeout_s: float) -> bool:
    return wait_until(path.exists, timeout_s)


class Procs:
    """Starts launcher/torchrun processes and kills whatever is left at teardown."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []
        self.extra_pids: set[int] = set()

    def launcher(self, *args: str, **kw: object) -> subprocess.Popen[str]:
        return self.popen([sys.executable, "-m", "launcher", *args], **kw)

    def torchrun(self, *args: str, **kw: object) -> subprocess.Popen[str]:
        return self.popen([sys.executable, "-m", "torch.distributed.run", *args], **kw)

    def popen(self, argv: list[str], **kw: object) -> subprocess.Popen[str]:
        kw.setdefault("env", clean_env())
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        proc = subprocess.Popen(argv, **kw)  # type: ignore[call-overload]
        self.started.append(proc)
        return proc

    def run_launcher(self, *args: str, timeout: float = 120, **kw: object) -> Result:
        return self._finish(self.launcher(*args, **kw), timeout)

    def run_torchrun(self, *args: str, timeout: float = 120, **kw: object) -> Result:
        return self._finish(self.torchrun(*args, **kw), timeout)

    @staticmethod
    def _finish(proc: subprocess.Popen[str], timeout: float) -> Result:
        out, err = proc.communicate(timeout=timeout)
        return Result(proc.returncode, out, err)

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for pid in self.extra_pids:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-4000:]!r})"


@pytest.fixture
def procs() -> Iterator[Procs]:
    tracker = Procs()
    try:
        yield tracker
    finally:
        tracker.cleanup()
