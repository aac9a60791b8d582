"""Hang detection, launcher vs torchrun, on the same hung gloo job in one run.

    python3 bench/hangs.py                  # 8 ranks, --hang-timeout 3, 3 reps
    python3 bench/hangs.py --nproc 4 --timeout 5 --reps 1

Rows:
- detection latency: from the hung rank's last beat to `hang.incident.detected`, minus the
  configured timeout (how late past the deadline the agent noticed), median of the reps;
- dumps: from detection to the last `hang.stack.dumped` of all N ranks (target <= 2 s);
- agent CPU while N ranks beat every 10 ms, with detection on and off (the agent process's
  utime+stime from /proc, per second of run);
- torchrun on the same hung job: never detected (killed by the bench after --give-up
  seconds), and with TORCHELASTIC_ENABLE_FILE_TIMER=1 and an `expires()` scope (and
  --max-restarts 1, as ours gets): its agent kills itself (exit 137) and the job is over.
Exit 1 when the dump target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HANGER = ROOT / "tests" / "workloads" / "hanger.py"
DUMP_TARGET_S = 2.0


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "TORCHELASTIC_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hung_run(nproc: int, timeout_s: float, scratch: Path) -> tuple[float, float]:
    """One hung job under the launcher: (latency past the timeout, detection-to-last-dump)."""
    out = scratch / f"hung-{time.monotonic_ns()}"
    out.mkdir()
    log = out / "events.jsonl"
    argv = [
        sys.executable,
        "-m",
        "launcher",
        "--nproc-per-node",
        str(nproc),
        "--hang-timeout",
        str(timeout_s),
        "--event-log",
        str(log),
        "--log-dir",
        str(out),
        str(HANGER),
        str(out),
        "--hang-rank",
        str(nproc // 2),
        "--hang-step",
        "5",
    ]
    subprocess.run(argv, env=clean_env(), capture_output=True, timeout=120, check=False)
    found = events(log)
    detected = next(e for e in found if e["event"] == "hang.incident.detected")
    fields = detected["fields"]
    assert isinstance(fields, dict)
    late = float(fields["seconds_since_progress"]) - timeout_s
    dumps = [e["fields"] for e in found if e["event"] == "hang.stack.dumped"]
    if len(dumps) != nproc or not all(isinstance(d, dict) and d["ok"] for d in dumps):
        raise SystemExit(f"bench: expected {nproc} good dumps, got {dumps}")
    last = max(float(d["seconds_after_detection"]) for d in dumps if isinstance(d, dict))
    return late, last


def agent_cpu(nproc: int, hang_timeout: str, scratch: Path) -> float:
    """Agent CPU seconds per wall second while `nproc` ranks beat every 10 ms."""
    out = scratch / f"cpu-{hang_timeout}-{time.monotonic_ns()}"
    out.mkdir()
    argv = [
        sys.executable,
        "-m",
        "launcher",
        "--nproc-per-node",
        str(nproc),
        "--hang-timeout",
        hang_timeout,
        "--log-dir",
        str(out),
        str(HANGER),
        str(out),
        "--steps",
        "400",
        "--step-s",
        "0.01",
    ]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = 0.0
    while proc.poll() is None:
        value = cpu_s(proc.pid)
        last = value if value is not None else last
        time.sleep(0.05)  # sampling /proc: the last reading before exit is the figure
    return last / (time.monotonic() - started)


def tree(root: int) -> list[int]:
    """`root` and its live descendants (/proc/<pid>/task/*/children), parents first."""
    found, queue = [], [root]
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                queue.extend(int(c) for c in (task / "children").read_text().split())
    return found


def torchrun_rows(nproc: int, give_up_s: float, scratch: Path) -> dict[str, str]:
    def argv(out: Path, *extra: str) -> list[str]:
        out.mkdir()
        tool = [sys.executable, "-m", "torch.distributed.run", "--max-restarts", "1"]
        job = [str(HANGER), str(out), "--hang-rank", "1", "--hang-step", "5", *extra]
        return [*tool, "--nproc-per-node", str(nproc), *job]

    rows = {}
    proc = subprocess.Popen(
        argv(scratch / "torchrun-plain"),
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        proc.wait(give_up_s)
        rows["plain"] = f"exited {proc.returncode} (unexpected)"
    except subprocess.TimeoutExpired:
        rows["plain"] = f"never detected: still hung after {give_up_s:g} s (killed by the bench)"
    finally:
        # torchrun puts every worker in a session of its own: kill the tree, not the group.
        for pid in tree(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    started = time.monotonic()
    done = subprocess.run(
        argv(scratch / "torchrun-timer", "--how", "timer"),
        env=clean_env(TORCHELASTIC_ENABLE_FILE_TIMER="1"),
        capture_output=True,
        timeout=120,
        check=False,
    )
    code = done.returncode if done.returncode >= 0 else 128 - done.returncode
    rows["file_timer"] = (
        f"agent killed itself: exit {code} after {time.monotonic() - started:.1f} s,"
        " no restart, job over"
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=3.0, help="--hang-timeout for the runs")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--give-up", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_hangs_") as tmp:
        scratch = Path(tmp)
        runs = [hung_run(args.nproc, args.timeout, scratch) for _ in range(args.reps)]
        late = statistics.median(r[0] for r in runs)
        dumps = statistics.median(r[1] for r in runs)
        cpu_on = agent_cpu(args.nproc, str(args.timeout), scratch)
        cpu_off = agent_cpu(args.nproc, "0", scratch)
        theirs = torchrun_rows(args.nproc, args.give_up, scratch)
    ok = dumps <= DUMP_TARGET_S
    print(
        f"hang detection, {args.nproc} ranks, --hang-timeout {args.timeout:g}, "
        f"{args.reps} reps (median)"
    )
    print(
        f"  detected after the deadline by  {late:.3f} s  (poll interval "
        f"{min(1.0, args.timeout / 10):.2f} s)"
    )
    print(
        f"  all {args.nproc} ranks dumped within {dumps:.3f} s of detection "
        f"(target <= {DUMP_TARGET_S:g} s) {'PASS' if ok else 'FAIL'}"
    )
    print(
        f"  agent CPU, ranks beating every 10 ms: {cpu_on * 100:.2f} % with detection, "
        f"{cpu_off * 100:.2f} % without"
    )
    print(f"torchrun 2.13 on the same job: {theirs['plain']}")
    print(f"torchrun 2.13 with its file timer: {theirs['file_timer']}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
