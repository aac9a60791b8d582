"""What one `launcher.progress` call costs a training step, in nanoseconds.

    python3 bench/progress_beat.py            # 1,000,000 beats, best of 5 runs
    python3 bench/progress_beat.py --calls 200000 --runs 3

Sets `LAUNCHER_PROGRESS_FILE` to a temporary file (as the launcher does), then times
`beat(step=i)`, `beat()`, `with section(...)` and, for comparison, `beat()` with the variable
unset (the no-op path under torchrun, measured in a child process so the module starts fresh).
Prints the best run per call kind; the target for `beat` is < 2000 ns. Exit 1 if it is missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_NS = 2000.0


def best_ns(call: Callable[[int], None], calls: int, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter_ns()
        for i in range(calls):
            call(i)
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def loop_ns(calls: int, runs: int) -> float:
    """The bare `for` loop and call overhead, so the figures can be read net of it."""

    def nothing(i: int) -> None:
        return None

    return best_ns(nothing, calls, runs)


def measure(calls: int, runs: int) -> dict[str, float]:
    from launcher import progress

    results = {"empty loop + call": loop_ns(calls, runs)}
    if not progress.enabled():
        results["beat() no-op (no env var)"] = best_ns(progress.beat, calls, runs)
        return results

    def bare_beat(i: int) -> None:
        progress.beat()

    def with_section(i: int) -> None:
        with progress.section("compute"):
            pass

    results["beat(step=i)"] = best_ns(progress.beat, calls, runs)
    results["beat()"] = best_ns(bare_beat, calls, runs)
    results["with section(name)"] = best_ns(with_section, calls, runs)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        for name, ns in measure(args.calls, args.runs).items():
            print(f"{name:28s} {ns:8.0f} ns/call")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LAUNCHER_PROGRESS_FILE"] = str(Path(tmp) / "rank0")
        results = measure(args.calls, args.runs)
    env = {k: v for k, v in os.environ.items() if k != "LAUNCHER_PROGRESS_FILE"}
    argv = [sys.executable, __file__, "--child", f"--calls={args.calls}", f"--runs={args.runs}"]
    noop = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=300)
    print(f"python {sys.version.split()[0]}, {args.calls} calls, best of {args.runs} runs")
    for name, ns in results.items():
        print(f"{name:28s} {ns:8.0f} ns/call")
    print(noop.stdout.splitlines()[-1])
    beat_ns = results["beat(step=i)"]
    verdict = "PASS" if beat_ns < TARGET_NS else "FAIL"
    print(f"beat(step=i): {beat_ns:.0f} ns, target < {TARGET_NS:.0f} ns: {verdict}")
    return 0 if beat_ns < TARGET_NS else 1


if __name__ == "__main__":
    sys.exit(main())
