"""Side-by-side multi-node benchmark on loopback: our launcher vs torchrun, same workloads.

    python3 bench/multi_node.py [--reps 3] [--fault-reps 1] [--only METRIC] [--skip-torchrun]
                                [--secret]   (ours again with a job secret, same run)

Every agent is a separate process with its own --local-addr 127.0.0.N (N = 2, 3, ...); the
c10d rendezvous is hosted at 127.0.0.2 on a fresh port; workers are gloo jobs
(workloads/elastic.py). Each repetition runs every selected case once per tool, alternating
which tool goes first. Prints median (min) per tool, the ratio ours/torchrun and PASS/FAIL;
writes JSON too. Exit code: 0 every target met, 1 some target missed, 2 the bench failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from single_node import TOOLS, BenchError, _descendants, _tail, _version
from single_node import Bench as SingleNodeBench

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORKLOAD = BENCH / "workloads" / "elastic.py"
DEFAULT_JSON = BENCH / "results" / "multi_node.json"
OURS, THEIRS = "launcher", "torchrun"
# Ours again with a job secret (--secret): every rendezvous value sealed and checked.
SIGNED = "launcher+secret"
POLL_S = 0.05  # only how often the bench looks: latencies come from the workers' own stamps
SETUP_TIMEOUT_S = 90.0  # agents up and every worker started (or the first group all-reducing)
NODE_LOSS_BUDGET_S = 60.0
SCALE_UP_BUDGET_S = 45.0
READY_GRACE_S = 10.0  # after a re-formed group's first lines: time to its first all_reduce
FAULT_CONF = ["--rdzv-conf", "last_call_timeout=1"]
START_TARGET_RATIO = 0.5  # issue 11: half of torchrun's start time at 2, 4 and 8 agents
RSS_TARGET_MIB = 30.0  # issue 11: a multi-node agent's peak RSS (VmHWM), ours only


def _addr(index: int) -> str:
    return f"127.0.0.{index + 2}"


def _listening(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            for cols in (row.split() for row in handle.read().splitlines()[1:]):
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def _hwm_mib(pid: int) -> float | None:
    """VmHWM (peak RSS) of a live process in MiB; None if it is gone."""
    with contextlib.suppress(OSError):
        for row in Path(f"/proc/{pid}/status").read_text().splitlines():
            if row.startswith("VmHWM:"):
                return int(row.split()[1]) / 1024
    return None


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat after the name: [0] state, [19] start time; [] if gone."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return []


def _alive(pid: int, started: str | None = None) -> bool:
    """Running (not a zombie) and, given its start time, still the process we saw."""
    stat = _stat(pid)
    return bool(stat) and stat[0] != "Z" and started in (None, stat[19])


class Line(NamedTuple):  # one line of starts.txt / ready.txt (the fields the bench uses)
    time: float
    rank: int
    world: int
    pid: int


class Reaper:
    """Ends every process a bench job started, on every exit path: its agents, their trees,
    and every live process with the job's unique `work` dir in argv (workers, orphans),
    each checked against the start time it was first seen with (no reused pid is hit).
    A mixin of the jobs here and in many_agents.py, which own these attributes."""

    work: Path
    agents: dict[str, subprocess.Popen[bytes]]
    seen: set[tuple[int, str]]

    def __exit__(self, *exc: object) -> None:
        self.kill_all()

    def remember(self, pids: Sequence[int]) -> None:
        self.seen.update((pid, stat[19]) for pid in pids if (stat := _stat(pid)))

    def _by_argv(self) -> list[int]:
        needle, found = str(self.work).encode(), []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
        return found

    def kill_all(self) -> None:
        for _ in range(3):  # again, in case something was forking while we killed
            for proc in self.agents.values():
                if proc.poll() is None:  # never a reaped (reusable) pid
                    self.remember([proc.pid, *_descendants(proc.pid)])
            self.remember(self._by_argv())
            for pid, started in self.seen:
                if _alive(pid, started):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            for proc in self.agents.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            if not any(_alive(pid, started) for pid, started in self.seen):
                return
            time.sleep(0.2)


class Job(Reaper):
    """One multi-node job. Everything it started is SIGKILLed when the `with` block ends."""

    def __init__(self, scratch: Path, tool: str, nnodes: str, flags: Sequence[str]) -> None:
        self.tool = tool
        self.work = Path(tempfile.mkdtemp(dir=scratch, prefix=f"{tool}-{nnodes}-"))
        self.out = self.work / "out"
        self.out.mkdir()
        (self.work / "tmp").mkdir()
        with socket.socket() as sock:  # a free port: bind port 0
            sock.bind(("127.0.0.2", 0))
            self.port = int(sock.getsockname()[1])
        self.cmd = [*TOOLS[THEIRS if tool == THEIRS else OURS], "--nnodes", nnodes]
        self.cmd += ["--nproc-per-node", "1"]
        self.cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.2:{self.port}"]
        self.cmd += ["--rdzv-id", f"bench-{uuid.uuid4().hex[:12]}", *flags]
        if tool != THEIRS:  # our extension; torchrun has no event log
            self.cmd += ["--event-log", str(self.work / "events.jsonl")]
        # single_node.py's clean env: no PET_*/TORCHELASTIC_*/OMP_NUM_THREADS, TMPDIR per run
        env = SingleNodeBench(1, scratch).env(self.work / "tmp")
        env.update(RUN_S="600", STEP_S="0.2")
        if tool == SIGNED:  # the environment names the file, so FAULT_CONF stays as it is
            secret = self.work / "job.secret"
            secret.write_bytes(os.urandom(32).hex().encode())
            secret.chmod(0o600)
            env["LAUNCHER_RDZV_SECRET_FILE"] = str(secret)
        self.popen: dict[str, Any] = {"env": env, "cwd": ROOT, "stdin": subprocess.DEVNULL}
        self.popen.update(stderr=subprocess.STDOUT, start_new_session=True)
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.seen: set[tuple[int, str]] = set()

    def __enter__(self) -> Job:
        return self

    def start_agent(self, addr: str) -> float:
        cmd = [*self.cmd, "--local-addr", addr, str(WORKLOAD), str(self.out)]
        with open(self.work / f"agent_{addr}.log", "wb") as log:
            t_start = time.time()
            self.agents[addr] = subprocess.Popen(cmd, stdout=log, **self.popen)
        return t_start

    def setup(self, count: int) -> None:
        """The host agent first, the others once the store listens (so 127.0.0.2 hosts it
        for torchrun too: it lets any loopback agent host), then wait for all-reduces."""
        self.start_agent(_addr(0))
        if self.wait_for(lambda: _listening(self.port) or None, SETUP_TIMEOUT_S) is None:
            raise self.error("the host agent never listened on the rendezvous port")
        for index in range(1, count):
            self.start_agent(_addr(index))
        if self.wait_for(lambda: self.group_at("ready.txt", count, 0.0), SETUP_TIMEOUT_S) is None:
            raise self.error(f"the first {count}-node group never all-reduced")

    def kill_agent(self, addr: str) -> tuple[float, list[int]]:
        """SIGKILL one agent only (a lost node's agent); returns the time and its tree."""
        proc = self.agents[addr]
        tree = _descendants(proc.pid)
        self.remember([proc.pid, *tree])
        t_kill = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        return t_kill, tree

    def lines(self, name: str) -> list[Line]:
        try:
            text = (self.out / name).read_text()
        except FileNotFoundError:
            return []
        rows = [r.split() for r in text.split("\n")[:-1]]  # a line cut short has no "\n"
        return [Line(float(r[0]), int(r[4]), int(r[5]), int(r[6])) for r in rows]

    def group_at(self, name: str, world: int, after: float) -> float | None:
        """When every rank 0..world-1 had first written a `world`-sized line after `after`."""
        first: dict[int, float] = {}
        for ln in self.lines(name):
            if ln.world == world and ln.time >= after:
                first.setdefault(ln.rank, ln.time)
        return max(first.values()) if set(first) == set(range(world)) else None

    def running(self) -> list[str]:
        return [addr for addr, proc in self.agents.items() if proc.poll() is None]

    def wait_for(self, probe: Callable[[], float | bool | None], timeout: float) -> float | None:
        """Poll until probe() gives a value, `timeout` passes or every agent has exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = probe()
            if value is not None:
                return float(value)
            if not self.running():
                return None
            time.sleep(POLL_S)
        return None

    def error(self, what: str) -> BenchError:
        logs = "".join(
            f"\n--- {addr} (exit {proc.poll()}) log tail ---\n"
            + _tail((self.work / f"agent_{addr}.log").read_text(errors="replace"), 8)
            for addr, proc in self.agents.items()
        )
        return BenchError(f"{self.tool}: {what}: {' '.join(self.cmd)}{logs}")

    def old_world(self, world: int, t_ref: float) -> str:
        """Whether a `world`-sized group's workers still all-reduce, else when they stopped."""
        stamps: dict[float, bool] = {}  # last all_reduce -> that worker still alive
        for path in self.out.glob("alive_*"):
            with contextlib.suppress(ValueError, OSError):
                stamp, size = path.read_text().split()
                if int(size) == world:
                    stamps[float(stamp)] = _alive(int(path.name.split("_")[1]))
        now = time.time()
        if any(alive and now - stamp < 1.0 for stamp, alive in stamps.items()):
            return f"old world-{world} workers still all-reducing at +{now - t_ref:.1f} s"
        last = max(stamps, default=math.nan) - t_ref
        return f"old world-{world} workers stopped (last all_reduce at {last:+.2f} s)"

    def breakdown(self, t_ref: float, world: int) -> dict[str, list[float]]:
        """Our event log after t_ref: event -> [first, last] offset in s (where time went)."""
        seen: dict[str, list[float]] = {}
        with contextlib.suppress(FileNotFoundError):
            for raw in (self.work / "events.jsonl").read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError):
                    ev = json.loads(raw)
                    when = round(float(ev["time"]) - t_ref, 3)
                    if when >= 0 and ev["fields"].get("world_size") in (world, None):
                        first, last = seen.get(ev["event"], [when, when])
                        seen[ev["event"]] = [min(first, when), max(last, when)]
        return seen


@dataclass
class Sample:
    value: float  # seconds; math.inf: it never happened within the budget
    notes: list[str] = field(default_factory=list)
    breakdown: dict[str, list[float]] = field(default_factory=dict)
    rss_mib: float | None = None  # start cases: the largest agent's VmHWM once all started


def start_time(scratch: Path, tool: str, nodes: int) -> Sample:
    with Job(scratch, tool, str(nodes), ()) as job:
        t0 = time.time()
        for index in range(nodes):  # back to back, no waiting
            job.start_agent(_addr(index))
        done = job.wait_for(lambda: job.group_at("starts.txt", nodes, t0), SETUP_TIMEOUT_S)
        if done is None:
            raise job.error(f"not all {nodes} workers started")
        sample = Sample(done - t0, breakdown=job.breakdown(t0, nodes))
        # The agents themselves (the pids the bench started), not their workers.
        peaks = [_hwm_mib(proc.pid) for proc in job.agents.values()]
        sample.rss_mib = max((p for p in peaks if p is not None), default=None)
        if tool != THEIRS:
            sample.notes.append(f"events: {_fmt_breakdown(sample.breakdown)}")
        return sample


def _fmt_breakdown(parts: dict[str, list[float]]) -> str:
    names = [  # (event, label, 0: the first agent's time, 1: the last agent's)
        ("agent.started", "agent up", 1), ("worker.exited", "first worker exit seen", 0),
        ("rendezvous.membership.changed", "first change seen", 0), ("group.restart",
        "first restart", 0), ("rendezvous.round.complete", "round complete", 1),
        ("worker.started", "workers spawned", 1),
    ]  # fmt: skip
    found = sorted((parts[ev][i], lbl) for ev, lbl, i in names if ev in parts)
    return ", ".join(f"{label} +{when:.2f} s" for when, label in found)


def _conclude(job: Job, done: float | None, old: int, world: int, t_ref: float) -> Sample:
    """The common end of the fault cases: the old group's fate, whether the new one formed
    and all-reduced, and (ours) where the time went according to the event log."""
    sample = Sample(math.inf if done is None else done - t_ref)
    sample.notes.append(job.old_world(old, t_ref))
    if math.isfinite(sample.value):
        if job.wait_for(lambda: job.group_at("ready.txt", world, t_ref), READY_GRACE_S) is None:
            sample.notes.append(f"world-{world} workers: no all_reduce in {READY_GRACE_S:g} s")
    else:
        since = sorted({ln.world for ln in job.lines("starts.txt") if ln.time >= t_ref})
        running = ", ".join(job.running()) or "none"
        sample.notes.append(f"never; worlds started since: {since or 'none'}; agents up: {running}")
    if job.tool != THEIRS:
        sample.breakdown = job.breakdown(t_ref, world)
        last = f", first lines (all) +{sample.value:.2f} s" if math.isfinite(sample.value) else ""
        sample.notes.append(f"events: {_fmt_breakdown(sample.breakdown)}{last}")
    return sample


def node_loss(scratch: Path, tool: str) -> Sample:
    # Default rendezvous settings, as the target says: three agents of a 2:3 job close the
    # first round at MAX, so no last-call shortening is needed here.
    with Job(scratch, tool, "2:3", []) as job:
        job.setup(3)
        t_kill, tree = job.kill_agent(_addr(2))  # 127.0.0.4: not the store's host
        done = job.wait_for(lambda: job.group_at("starts.txt", 2, t_kill), NODE_LOSS_BUDGET_S)
        sample = _conclude(job, done, 3, 2, t_kill)
        orphans = [pid for pid in tree if _alive(pid)]
        if orphans:
            sample.notes.append(f"the killed agent's children still alive (orphans): {orphans}")
        return sample


def scale_up(scratch: Path, tool: str) -> Sample:
    with Job(scratch, tool, "2:3", FAULT_CONF) as job:
        job.setup(2)
        t_start = job.start_agent(_addr(2))
        done = job.wait_for(lambda: job.group_at("starts.txt", 3, t_start), SCALE_UP_BUDGET_S)
        return _conclude(job, done, 2, 3, t_start)


class Case(NamedTuple):
    name: str  # the --only group
    title: str
    measure: Callable[[Path, str], Sample]
    budget_s: float  # a sample of inf prints as "never (>budget)"
    target_ratio: float | None  # ours/torchrun of the medians must be <= this, or
    target_s: float | None  # our median must be < this


def cases(sizes: Sequence[int]) -> list[Case]:
    def start(nodes: int) -> Callable[[Path, str], Sample]:
        return lambda scratch, tool: start_time(scratch, tool, nodes)

    found = [
        Case("start", f"start, {n} agents (--nnodes {n})", start(n), SETUP_TIMEOUT_S,
             START_TARGET_RATIO, None)
        for n in sizes
    ]  # fmt: skip
    found.append(Case("node_loss", "node loss 3->2 (2:3, SIGKILL)", node_loss,
                      NODE_LOSS_BUDGET_S, None, 5.0))  # fmt: skip
    found.append(Case("scale_up", "scale-up 2->3 (2:3, new agent)", scale_up,
                      SCALE_UP_BUDGET_S, None, 3.0))  # fmt: skip
    return found


def _fmt(value: float, budget: float) -> str:
    return f"never (>{budget:g} s)" if math.isinf(value) else f"{value * 1000:.0f} ms"


def summarize(case: Case, samples: dict[str, list[Sample]]) -> dict[str, Any]:
    res: dict[str, Any] = {"group": case.name, "title": case.title, "budget_s": case.budget_s}
    for tool, runs in samples.items():
        values = [s.value for s in runs]
        res[tool] = {"median": statistics.median(values), "min": min(values)}
        res[tool].update(samples=values, notes=[s.notes for s in runs])
        res[tool]["breakdown"] = [s.breakdown for s in runs]
        peaks = [s.rss_mib for s in runs if s.rss_mib is not None]
        res[tool]["rss_mib"] = statistics.median(peaks) if peaks else None
    ours = res[OURS]["median"]
    theirs = res[THEIRS]["median"] if THEIRS in res else None
    ratio, shown = None, "-"
    if theirs is not None and math.isfinite(ours):
        if math.isfinite(theirs):
            ratio = ours / theirs
            shown = f"{ratio:.3f}"
        else:  # torchrun never got there: the ratio is below ours / budget
            shown = f"<{ours / case.budget_s:.2f}"
    if case.target_s is not None:
        passed, target = ours < case.target_s, f"<{case.target_s:g} s"
    else:  # None: no torchrun run to compare with
        passed = None if ratio is None else ratio <= (case.target_ratio or 0.0)
        target = f"<={case.target_ratio:.2f}"
    res.update(ratio=ratio, ratio_shown=shown, target=target, target_ratio=case.target_ratio)
    res.update({"target_s": case.target_s, "pass": passed})
    if SIGNED in res and math.isfinite(ours) and ours > 0:
        res["signed_ratio"] = res[SIGNED]["median"] / ours
    if case.name == "start":
        rss = res[OURS]["rss_mib"]
        res["rss_pass"] = None if rss is None else rss <= RSS_TARGET_MIB
    return res


def print_rss(results: dict[str, dict[str, Any]]) -> None:
    rows = [res for res in results.values() if "rss_pass" in res]
    if not rows:
        return
    print(f"\n{'agent peak RSS (largest VmHWM)':<34} {OURS:>12} {THEIRS:>12} {'target':>9}  result")
    for res in rows:
        cells = [
            "-" if res.get(tool, {}).get("rss_mib") is None else f"{res[tool]['rss_mib']:.1f} MiB"
            for tool in (OURS, THEIRS)
        ]
        verdict = {True: "PASS", False: "FAIL", None: "-"}[res["rss_pass"]]
        target = f"<={RSS_TARGET_MIB:g} MiB"
        print(f"{res['title']:<34} {cells[0]:>12} {cells[1]:>12} {target:>9}  {verdict}")


def print_signed(results: dict[str, dict[str, Any]]) -> None:
    rows = [res for res in results.values() if SIGNED in res]
    if not rows:
        return
    print(f"\n{'with a job secret (same run)':<34} {OURS:>12} {SIGNED:>16} {'ratio':>6}")
    for res in rows:
        ours, signed = res[OURS]["median"], res[SIGNED]["median"]
        ratio = res.get("signed_ratio")
        shown = "-" if ratio is None or not math.isfinite(ratio) else f"{ratio:.3f}"
        budget = res["budget_s"]
        print(f"{res['title']:<34} {_fmt(ours, budget):>12} {_fmt(signed, budget):>16} {shown:>6}")


def print_table(results: dict[str, dict[str, Any]]) -> None:
    head = f"{'metric':<34} {OURS + ' median (min)':>26} {THEIRS + ' median (min)':>26}"
    print(f"{head} {'ratio':>6} {'target':>7}  result")
    notes = []
    for res in results.values():
        cells = []
        for tool in (OURS, THEIRS):
            if tool not in res:
                cells.append("skipped")
                continue
            stats, budget = res[tool], res["budget_s"]
            cell = f"{_fmt(stats['median'], budget)} ({_fmt(stats['min'], budget)})"
            cells.append(_fmt(stats["min"], budget) if math.isinf(stats["min"]) else cell)
            for rep, lines in enumerate(stats["notes"], 1):
                notes += [f"  {res['title']}, {tool}, rep {rep}: {note}" for note in lines]
        verdict = {True: "PASS", False: "FAIL", None: "-"}[res["pass"]]
        print(
            f"{res['title']:<34} {cells[0]:>26} {cells[1]:>26} {res['ratio_shown']:>6} "
            f"{res['target']:>7}  {verdict}"
        )
    if notes:
        print("\nnotes:\n" + "\n".join(notes))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="start-time reps (default 3)")
    parser.add_argument("--fault-reps", type=int, default=1, help="node_loss/scale_up reps (1)")
    parser.add_argument("--sizes", default="2,4,8", help="agent counts for start (2,4,8)")
    parser.add_argument("--only", action="append", choices=["start", "node_loss", "scale_up"],
                        metavar="METRIC", help="only this metric (repeatable): start, "
                        "node_loss, scale_up")  # fmt: skip
    parser.add_argument("--skip-torchrun", action="store_true", help="run our launcher only")
    parser.add_argument("--secret", action="store_true",
                        help=f"also run ours with a job secret ({SIGNED})")  # fmt: skip
    parser.add_argument("--keep-scratch", action="store_true", help="keep the runs' logs")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    if args.reps < 1 or args.fault_reps < 1 or min(sizes) < 2 or max(sizes) > 254:
        parser.error("--reps and --fault-reps must be >= 1, --sizes within 2..254")
    chosen = [c for c in cases(sizes) if not args.only or c.name in args.only]
    tools = [OURS] if args.skip_torchrun else [OURS, THEIRS]
    if args.secret:
        tools.insert(1, SIGNED)
    samples: dict[str, dict[str, list[Sample]]] = {c.title: {t: [] for t in tools} for c in chosen}
    reps = {c.title: args.reps if c.name == "start" else args.fault_reps for c in chosen}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through every Job
    started = time.time()
    scratch = Path(tempfile.mkdtemp(prefix="bench_multi_node_"))
    try:
        if any(c.name == "start" for c in chosen):
            for tool in tools:  # warm-up: page cache, bytecode caches; not recorded
                start_time(scratch, tool, 2)
        for rep in range(max(reps.values())):
            order = tools if rep % 2 == 0 else tools[::-1]
            print(f"rep {rep + 1}: {', then '.join(order)}", file=sys.stderr, flush=True)
            for case in (c for c in chosen if rep < reps[c.title]):
                for tool in order:
                    samples[case.title][tool].append(case.measure(scratch, tool))
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    finally:
        if args.keep_scratch:
            print(f"scratch kept: {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    results = {c.title: summarize(c, samples[c.title]) for c in chosen}
    print_table(results)
    print_rss(results)
    print_signed(results)
    report = {
        "benchmark": "multi_node", "created_unix": started, "duration_s": time.time() - started,
        "reps": args.reps, "fault_reps": args.fault_reps, "interleaved": True, "warmup_runs": 1,
        "python": platform.python_version(), "torch": _version("torch"),
        "launcher": _version("elastic-launcher"), "platform": platform.platform(),
        "cpus": os.cpu_count(), "commands": TOOLS, "fault_flags": FAULT_CONF, "metrics": results,
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(json.dumps(report), parse_constant=lambda _: None)  # never: null
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON written to {args.json}")
    missed = [res for res in results.values() if False in (res["pass"], res.get("rss_pass"))]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
