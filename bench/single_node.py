"""Side-by-side single-node benchmark: our launcher vs torchrun, same workloads, one run.

    python3 bench/single_node.py [--reps 5] [--nproc 4] [--only METRIC] [--json PATH]

Each repetition runs every selected metric once per tool, alternating which tool goes
first, so both share the machine's noise. Prints median (min) per tool, the ratio
ours/torchrun of the medians and PASS/FAIL against the target ratio; writes JSON too.
Exit code: 0 every target met, 1 some target missed, 2 the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import select
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORKLOADS = BENCH / "workloads"
DEFAULT_JSON = BENCH / "results" / "single_node.json"
RUN_TIMEOUT_S = 60.0
HWM_INTERVAL_S = 0.02
MEMORY_SLEEP_S = 1.5
# The interpreter is started directly (no shell or shim) so the pid we watch is the tool.
TOOLS: dict[str, list[str]] = {
    "launcher": [sys.executable, "-m", "launcher"],
    "torchrun": [sys.executable, "-m", "torch.distributed.run"],
}
OURS, THEIRS = "launcher", "torchrun"


class BenchError(RuntimeError):
    """A run failed, timed out or its workers did not all run: the numbers are void."""


@dataclass(frozen=True)
class Run:
    rc: int
    wall_s: float  # Popen -> exit, monotonic clock
    t_start: float  # time.time() just before Popen, comparable with the workers' stamps
    stdout: str
    stderr: str
    hwm_kb: int | None  # last VmHWM read from /proc/<pid>/status


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the tool and every process below it (collected before the tool dies)."""
    for pid in [proc.pid, *_descendants(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _read_hwm_kb(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else None  # absent once the process is a zombie


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_tool(cmd: Sequence[str], env: dict[str, str], *, sample_hwm: bool = False) -> Run:
    """Run one tool invocation; exact exit time via pidfd, VmHWM sampled if asked."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        hwm: int | None = None
        t_start = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            pidfd = os.pidfd_open(proc.pid)
            try:
                while True:
                    if sample_hwm:
                        hwm = _read_hwm_kb(proc.pid) or hwm
                    left = t0 + RUN_TIMEOUT_S - time.perf_counter()
                    if left <= 0:
                        raise BenchError(f"timed out ({RUN_TIMEOUT_S:g} s): {shlex.join(cmd)}")
                    wait = min(left, HWM_INTERVAL_S) if sample_hwm else left
                    if select.select([pidfd], [], [], wait)[0]:
                        break
            finally:
                os.close(pidfd)
            wall = time.perf_counter() - t0
            rc = proc.wait(timeout=10)
        except BaseException:
            _kill_tree(proc)
            raise
        out.seek(0)
        err.seek(0)
        text = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        return Run(rc, wall, t_start, text[0], text[1], hwm)


def tool_env(tmpdir: Path, pycache: Path) -> dict[str, str]:
    """A clean environment for either tool: no PET_*/TORCHELASTIC_*, no OMP_NUM_THREADS;
    TMPDIR is per run so both tools' default log dirs are cleaned up with the scratch dir.

    Bytecode is cached (under `pycache`, out of the tree) as for any installed package: with
    PYTHONDONTWRITEBYTECODE=1 in the environment (some sandboxes and CI images set it), every
    start of the launcher, an editable install, would compile its modules afresh (50 to 80 ms
    of CPU), while torch's were compiled when pip installed it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PET_", "TORCHELASTIC_"))
        and k not in ("OMP_NUM_THREADS", "PYTHONDONTWRITEBYTECODE")
    }
    env["TMPDIR"] = str(tmpdir)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


class Bench:
    def __init__(self, nproc: int, scratch: Path) -> None:
        self.nproc = nproc
        self.scratch = scratch
        self._count = 0

    def fresh_dir(self) -> Path:
        self._count += 1
        path = self.scratch / f"run{self._count:03d}"
        (path / "tmp").mkdir(parents=True)
        return path

    def env(self, tmpdir: Path) -> dict[str, str]:
        return tool_env(tmpdir, self.scratch / "pycache")

    def launch(
        self, tool: str, script: str, *args: str, flags: Sequence[str] = (), hwm: bool = False
    ) -> tuple[Run, Path]:
        """Run `<tool> --nproc-per-node N [flags] workloads/<script> [out_dir] args`."""
        work = self.fresh_dir()
        out = work / "out"
        out.mkdir()
        cmd = [*TOOLS[tool], "--nproc-per-node", str(self.nproc), *flags]
        cmd += [str(WORKLOADS / script), *([str(out)] if script != "noop.py" else []), *args]
        run = run_tool(cmd, self.env(work / "tmp"), sample_hwm=hwm)
        if run.rc != 0:
            raise BenchError(
                f"{tool} exited {run.rc}: {shlex.join(cmd)}\n--- stderr tail ---\n"
                f"{_tail(run.stderr)}"
            )
        return run, out

    def stamps(self, tool: str, out: Path, prefix: str) -> list[float]:
        """The first-line times every rank wrote; fails unless exactly ranks 0..N-1 did."""
        found = {p.name: float(p.read_text()) for p in out.glob(f"{prefix}*")}
        expected = {f"{prefix}{rank}" for rank in range(self.nproc)}
        if set(found) != expected:
            raise BenchError(f"{tool}: expected files {sorted(expected)}, found {sorted(found)}")
        return list(found.values())


def launch_overhead(bench: Bench, tool: str) -> float:
    run, _ = bench.launch(tool, "noop.py")
    ranks = sorted(int(r) for r in re.findall(r"noop rank=(\d+)", run.stdout))
    if ranks != list(range(bench.nproc)):
        raise BenchError(f"{tool}: noop printed ranks {ranks}\n{_tail(run.stdout)}")
    return run.wall_s


def first_user_code(bench: Bench, tool: str) -> float:
    run, out = bench.launch(tool, "stamp.py")
    return max(bench.stamps(tool, out, "stamp_")) - run.t_start


def restart_latency(bench: Bench, tool: str) -> float:
    _, out = bench.launch(tool, "restart.py", flags=["--max-restarts", "1"])
    if not (out / "fail").exists():
        raise BenchError(f"{tool}: rank 1 never recorded its failure")
    failed_at = float((out / "fail").read_text())
    latency = max(bench.stamps(tool, out, "attempt1_")) - failed_at
    if latency <= 0:
        raise BenchError(f"{tool}: restarted workers stamped before the failure ({latency:.3f} s)")
    return latency


def peak_memory(bench: Bench, tool: str) -> float:
    run, out = bench.launch(tool, "stamp.py", str(MEMORY_SLEEP_S), hwm=True)
    bench.stamps(tool, out, "stamp_")
    if run.hwm_kb is None:
        raise BenchError(f"{tool}: could not read VmHWM of the launcher process")
    return run.hwm_kb / 1024


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    unit: str
    target: float  # ratio ours/torchrun must be <= this
    measure: Callable[[Bench, str], float]


METRICS = [
    Metric("launch_overhead", "launch overhead (noop, wall)", "s", 0.25, launch_overhead),
    Metric("first_user_code", "time to first user code", "s", 0.25, first_user_code),
    Metric("restart_latency", "restart latency", "s", 0.25, restart_latency),
    Metric("peak_memory", "launcher peak RSS (VmHWM)", "MiB", 0.25, peak_memory),
]


def _fmt(value: float, unit: str) -> str:
    return f"{value * 1000:.0f} ms" if unit == "s" else f"{value:.1f} {unit}"


def summarize(metric: Metric, samples: dict[str, list[float]]) -> dict[str, object]:
    stats = {
        tool: {"median": statistics.median(v), "min": min(v), "samples": v}
        for tool, v in samples.items()
    }
    ratio = stats[OURS]["median"] / stats[THEIRS]["median"]  # type: ignore[operator]
    return {
        "title": metric.title,
        "unit": metric.unit,
        **stats,
        "ratio": ratio,
        "target_ratio": metric.target,
        "pass": ratio <= metric.target,
    }


def print_table(results: dict[str, dict[str, object]]) -> None:
    head = f"{'metric':<30} {OURS + ' median (min)':>24} {THEIRS + ' median (min)':>24}"
    print(f"{head} {'ratio':>6} {'target':>7}  result")
    for res in results.values():
        unit = str(res["unit"])
        cells = []
        for tool in (OURS, THEIRS):
            stats: dict[str, float] = res[tool]  # type: ignore[assignment]
            cells.append(f"{_fmt(stats['median'], unit)} ({_fmt(stats['min'], unit)})")
        verdict = "PASS" if res["pass"] else "FAIL"
        print(
            f"{res['title']!s:<30} {cells[0]:>24} {cells[1]:>24} {res['ratio']:>6.3f} "
            f"{'<=' + format(res['target_ratio'], '.2f'):>7}  {verdict}"
        )


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions per tool (default 5)")
    parser.add_argument("--nproc", type=int, default=4, help="--nproc-per-node (default 4)")
    parser.add_argument(
        "--only",
        action="append",
        choices=[m.name for m in METRICS],
        metavar="METRIC",
        help=f"run only this metric (repeatable): {', '.join(m.name for m in METRICS)}",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.nproc < 2:
        parser.error("--reps must be >= 1 and --nproc >= 2 (rank 1 fails in restart_latency)")
    metrics = [m for m in METRICS if not args.only or m.name in args.only]
    samples: dict[str, dict[str, list[float]]] = {m.name: {OURS: [], THEIRS: []} for m in metrics}
    started = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_single_node_") as scratch:
            bench = Bench(args.nproc, Path(scratch))
            for tool in (OURS, THEIRS):  # warm-up: page cache, bytecode caches; not recorded
                launch_overhead(bench, tool)
            for rep in range(args.reps):
                order = (OURS, THEIRS) if rep % 2 == 0 else (THEIRS, OURS)
                print(
                    f"rep {rep + 1}/{args.reps} ({' first, '.join(order)} second)",
                    file=sys.stderr,
                    flush=True,
                )
                for metric in metrics:
                    for tool in order:
                        samples[metric.name][tool].append(metric.measure(bench, tool))
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    results = {m.name: summarize(m, samples[m.name]) for m in metrics}
    print_table(results)
    report = {
        "benchmark": "single_node",
        "created_unix": started,
        "duration_s": time.time() - started,
        "reps": args.reps,
        "nproc_per_node": args.nproc,
        "interleaved": True,
        "warmup_runs": 1,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "launcher": _version("elastic-launcher"),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "commands": TOOLS,
        "metrics": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON written to {args.json}")
    return 0 if all(res["pass"] for res in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
