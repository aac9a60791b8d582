"""A hundred real agents on one machine: first round, node loss, a joiner (issue 11, part 3).

    python3 bench/many_agents.py [--agents 100] [--backend c10d --backend etcd]
                                 [--torchrun-agents 25] [--skip-torchrun]

Every agent is its own `python3 -m launcher` process with its own `--local-addr 127.0.0.N`
(N = 2, 3, ...) and one no-torch worker (workloads/until_file.py: stamps its start, idles
until the bench creates a stop file). For each backend it measures, in one job:

- first round: from just before the first agent's Popen to the last agent's
  `rendezvous.round.complete` at N nodes (the event log), and to the last worker's first line;
- node loss: SIGKILL one agent (not the store's host), until the first agent logs the loss
  (`rendezvous.membership.changed`, reason node_lost: detection), until every survivor logs a
  round of N-1, and until every one of those workers ran its first line;
- join: start one new agent, until all N log a round of N (and the workers' first lines);
- steady state (`--steady S` seconds after the first round): the store's CPU (the hosting
  agent's utime+stime for c10d, which includes its own agent work; the etcd member's for
  etcd), the store's requests per second (c10d: TCP data segments received on the store
  port, from `ss -tin`, about one per request; etcd: its gRPC unary calls, from /metrics),
  and the agents' total RSS (VmRSS of the agent processes, not their workers).

torchrun runs the same shape with c10d (`--torchrun-agents`, default 25: each of its agents
imports torch, ~200 MB and seconds of CPU each), measured from its workers' first lines; how
far it gets within each budget is reported. Everything started is SIGKILLed at the end of
each job, process trees and every process with the job's scratch dir in argv included.
Exit code: 0 targets met, 1 a target missed, 2 the bench itself failed.
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
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from multi_node import Reaper, _stat
from single_node import TOOLS, BenchError, _descendants, _tail, _version, tool_env

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORKLOAD = BENCH / "workloads" / "until_file.py"
DEFAULT_JSON = BENCH / "results" / "many_agents.json"
OURS, THEIRS = "launcher", "torchrun"
POLL_S = 0.1
FIRST_TARGET_S = 10.0  # issue 11: the first round at 100 agents
LOSS_TARGET_S = 5.0  # issue 11: node loss re-formed
HZ = os.sysconf("SC_CLK_TCK")


def _addr(index: int) -> str:
    return f"127.0.0.{index + 2}"


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _cpu_s(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None if it is gone."""
    stat = _stat(pid)
    return (int(stat[11]) + int(stat[12])) / HZ if stat else None


def _rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for row in Path(f"/proc/{pid}/status").read_text().splitlines():
            if row.startswith("VmRSS:"):
                return int(row.split()[1]) / 1024
    return 0.0


def _segs_in(port: int) -> int | None:
    """TCP data segments received so far on the established sockets of a listening port.
    A store client waits for each reply before its next request, and both clients send a
    request in one write with TCP_NODELAY, so this counts about one per request."""
    try:
        out = subprocess.run(
            ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(int(w.split(":")[1]) for w in out.split() if w.startswith("data_segs_in:"))


def _etcd_calls(url: str) -> int | None:
    """etcd's gRPC unary calls handled so far (Range, Put, Txn, LeaseKeepAlive is a stream)."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    rows = [r for r in text.splitlines() if r.startswith("grpc_server_handled_total{")]
    return sum(int(float(r.rsplit(" ", 1)[1])) for r in rows if 'grpc_type="unary"' in r)


@dataclass
class Round:
    when: float
    world: int


@dataclass
class Fleet(Reaper):
    """One job of N agents. Every process it started (agents, their trees, anything with the
    job's scratch dir in argv) is SIGKILLed when the `with` block ends."""

    scratch: Path
    tool: str
    nnodes: str
    backend: str
    endpoint: str
    run_id: str = field(default_factory=lambda: f"many-{uuid.uuid4().hex[:12]}")
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    seen: set[tuple[int, str]] = field(default_factory=set)
    rounds: dict[str, list[Round]] = field(default_factory=dict)  # node -> rounds it logged
    started: dict[str, float] = field(default_factory=dict)  # node -> its agent.started
    changed: list[float] = field(default_factory=list)  # every membership.changed(node_lost)
    _offset: int = 0

    def __post_init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(dir=self.scratch, prefix=f"{self.tool}-"))
        (self.work / "tmp").mkdir()
        self.events = self.work / "events.jsonl"
        self.stamps = self.work / "stamps.txt"
        self.stop = self.work / "stop"
        env = tool_env(self.work / "tmp", self.scratch / "pycache")
        # The worktree's launcher, whatever is installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.env = env
        # Compiled once, before any agent starts, as an installed package is.
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(ROOT / "launcher")],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def __enter__(self) -> Fleet:
        return self

    def start_agent(self, index: int, host: bool | None = None) -> float:
        addr = _addr(index)
        cmd = [*TOOLS[self.tool], "--nnodes", self.nnodes, "--nproc-per-node", "1"]
        cmd += ["--rdzv-backend", self.backend, "--rdzv-endpoint", self.endpoint]
        cmd += ["--rdzv-id", self.run_id, "--local-addr", addr]
        if host is not None:  # c10d: the store's host is chosen, not raced for
            cmd += ["--rdzv-conf", f"is_host={int(host)}"]
        if self.tool == OURS:
            cmd += ["--event-log", str(self.events)]
        cmd += [str(WORKLOAD), str(self.stamps), str(self.stop)]
        with open(self.work / f"agent_{addr}.log", "wb") as log:
            t_start = time.time()
            self.agents[addr] = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, cwd=ROOT, start_new_session=True,
            )  # fmt: skip
        return t_start

    def kill_agent(self, addr: str) -> float:
        proc = self.agents[addr]
        self.remember([proc.pid, *_descendants(proc.pid)])
        t_kill = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        return t_kill

    def running(self) -> list[str]:
        return [addr for addr, proc in self.agents.items() if proc.poll() is None]

    def read_rounds(self) -> None:
        """New `rendezvous.round.complete` lines of the shared event log since the last read."""
        with contextlib.suppress(FileNotFoundError), open(self.events, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
            end = data.rfind(b"\n") + 1  # a line still being written waits for next time
            self._offset += end
            for raw in data[:end].splitlines():
                with contextlib.suppress(ValueError, KeyError):
                    ev = json.loads(raw)
                    if ev["event"] == "agent.started":
                        self.started[ev["node"]] = ev["time"]
                    if ev["event"] == "rendezvous.membership.changed" and (
                        ev["fields"]["reason"] == "node_lost"
                    ):
                        self.changed.append(ev["time"])
                    if ev["event"] == "rendezvous.round.complete":
                        world = int(ev["fields"]["group_world_size"])
                        self.rounds.setdefault(ev["node"], []).append(Round(ev["time"], world))

    def all_logged(self, world: int, after: float) -> float | None:
        """When every running agent had logged a round of `world` nodes after `after`."""
        self.read_rounds()
        last = []
        for addr in self.running():
            times = [r.when for r in self.rounds.get(addr, []) if r.world == world]
            times = [t for t in times if t >= after]
            if not times:
                return None
            last.append(min(times))
        return max(last) if len(last) == world else None

    def workers_started(self, world: int, after: float) -> float | None:
        """When `world` workers of a world-`world` group had run their first line."""
        try:
            rows = [r.split() for r in self.stamps.read_text().split("\n")[:-1]]
        except FileNotFoundError:
            return None
        first: dict[str, float] = {}
        for row in rows:
            if row[1] == str(world) and float(row[0]) >= after:
                first.setdefault(row[2], float(row[0]))  # by group rank
        return max(first.values()) if len(first) == world else None

    def wait_for(self, probe: Callable[[], float | None], timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = probe()
            if value is not None:
                return value
            if not self.running():
                return None
            time.sleep(POLL_S)
        return None

    def error(self, what: str) -> BenchError:
        dead = [a for a, p in self.agents.items() if p.poll() is not None]
        shown = dead[:3] or list(self.agents)[:2]
        logs = "".join(
            f"\n--- {addr} (exit {self.agents[addr].poll()}) log tail ---\n"
            + _tail((self.work / f"agent_{addr}.log").read_text(errors="replace"), 8)
            for addr in shown
        )
        return BenchError(f"{self.tool}/{self.backend}: {what} ({len(dead)} agents exited){logs}")

    def finish(self, timeout: float) -> int:
        """Let the workers exit 0; how many agents exited 0 within `timeout`."""
        self.stop.touch()
        deadline = time.monotonic() + timeout
        for proc in self.agents.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        return sum(1 for p in self.agents.values() if p.returncode == 0)


@dataclass
class Result:
    tool: str
    backend: str
    agents: int
    last_up_s: float | None = None  # the last agent's `agent.started` (interpreters up)
    first_round_s: float | None = None  # event log (ours)
    first_workers_s: float | None = None  # workers' first lines (both tools)
    loss_detected_s: float | None = None  # the first agent to learn of the loss (ours)
    loss_round_s: float | None = None
    loss_workers_s: float | None = None
    join_round_s: float | None = None
    join_workers_s: float | None = None
    store_cpu_pct: float | None = None
    store_ops_per_s: float | None = None
    agents_rss_mib: float | None = None
    agents_cpu_pct: float | None = None
    exited_ok: int | None = None
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _store(
    backend: str, nice: int
) -> Iterator[tuple[str, Callable[[], int | None], Callable[[], int]]]:
    """The rendezvous endpoint, a request counter and a way to find the store's pid."""
    if backend == "etcd":
        if str(ROOT) not in sys.path:  # run as a script: the repository's chaos package
            sys.path.insert(0, str(ROOT))
        from chaos.topology.etcd import EtcdCluster

        with EtcdCluster(1) as etcd:
            url = etcd.client_url(0)
            prioritise(etcd.member_pid(0) or 0, nice)
            yield etcd.endpoint, (lambda: _etcd_calls(url)), (lambda: etcd.member_pid(0) or 0)
    else:
        port = _free_port("127.0.0.2")
        yield f"127.0.0.2:{port}", (lambda: _segs_in(port)), (lambda: 0)


def prioritise(pid: int, nice: int) -> None:
    """Sets the nice value of every thread of `pid` (threads started later inherit it from
    the thread that starts them). A store on a real cluster has its host's CPUs to itself;
    here it shares two cores with a hundred agents and, after each round, a hundred worker
    interpreters starting at once, and its replies then took up to 1.6 s."""
    if not pid or nice == 0:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, int(task.name), nice)


def _phase(fleet: Fleet, world: int, t_ref: float, budget: float) -> tuple[float | None, float]:
    """Seconds from t_ref until every running agent logged a round of `world` nodes (ours
    only, else None) and until `world` workers of that world ran; inf: not within budget,
    one deadline for both."""
    deadline = time.monotonic() + budget
    logged: float | None = None
    if fleet.tool == OURS:
        done = fleet.wait_for(lambda: fleet.all_logged(world, t_ref), budget)
        logged = math.inf if done is None else done - t_ref
    left = max(0.0, deadline - time.monotonic())
    done = fleet.wait_for(lambda: fleet.workers_started(world, t_ref), left)
    return logged, math.inf if done is None else done - t_ref


def run_job(
    scratch: Path, tool: str, backend: str, agents: int, args: argparse.Namespace
) -> Result:
    res = Result(tool, backend, agents)
    budget = args.budget if tool == OURS else args.torchrun_budget
    fault = args.fault_budget
    nnodes = f"{max(1, agents // 2)}:{agents}"  # MAX forms at once; the loss leaves >= MIN
    with (
        _store(backend, args.store_nice) as (endpoint, ops, store_pid),
        Fleet(scratch, tool, nnodes, backend, endpoint) as fleet,
    ):
        host = (lambda i: i == 0) if backend == "c10d" else (lambda i: None)
        t0 = time.time()
        for index in range(agents):  # back to back: agent 0 hosts the c10d store
            fleet.start_agent(index, host(index))
            if backend == "c10d" and index == 0:  # before it starts any thread
                prioritise(fleet.agents[_addr(0)].pid, args.store_nice)
        res.first_round_s, res.first_workers_s = _phase(fleet, agents, t0, budget)
        if tool == OURS:
            res.last_up_s = max(fleet.started.values(), default=t0) - t0
        if math.isinf(res.first_workers_s):
            up = len(fleet.running())
            res.notes.append(f"first round: never within {budget:g} s ({up} agents running)")
            return res
        # Steady state: nothing changes, every agent heartbeats and monitors.
        time.sleep(1.0)
        pids = {a: p.pid for a, p in fleet.agents.items()}
        spid = store_pid() or pids[_addr(0)]
        cpu0, ops0, t_a = _cpu_s(spid), ops(), time.monotonic()
        agents_cpu0 = sum(_cpu_s(p) or 0.0 for p in pids.values())
        time.sleep(args.steady)
        cpu1, ops1, t_b = _cpu_s(spid), ops(), time.monotonic()
        agents_cpu1 = sum(_cpu_s(p) or 0.0 for p in pids.values())
        span = t_b - t_a
        if cpu0 is not None and cpu1 is not None:
            res.store_cpu_pct = 100 * (cpu1 - cpu0) / span
        if ops0 is not None and ops1 is not None:
            res.store_ops_per_s = (ops1 - ops0) / span
        res.agents_cpu_pct = 100 * (agents_cpu1 - agents_cpu0) / span
        res.agents_rss_mib = sum(_rss_mib(p) for p in pids.values())
        # Node loss: an agent in the middle (never the c10d store's host at index 0).
        victim = _addr(agents // 2)
        t_kill = fleet.kill_agent(victim)
        res.loss_round_s, res.loss_workers_s = _phase(fleet, agents - 1, t_kill, fault)
        if tool == OURS:  # the rest of the loss figure is the re-formation
            first = min((t for t in fleet.changed if t >= t_kill), default=None)
            res.loss_detected_s = None if first is None else first - t_kill
        if math.isinf(res.loss_workers_s):
            res.notes.append(f"node loss: no world of {agents - 1} within {fault:g} s")
            return res
        # A newcomer at a fresh address; the job is back to MAX.
        t_join = fleet.start_agent(agents, host(agents))
        res.join_round_s, res.join_workers_s = _phase(fleet, agents, t_join, fault)
        if math.isinf(res.join_workers_s):
            res.notes.append(f"join: no world of {agents} within {fault:g} s")
            return res
        res.exited_ok = fleet.finish(fault)
        if res.exited_ok != agents:
            res.notes.append(f"only {res.exited_ok} of {agents} agents exited 0 at the end")
    return res


def _s(value: float | None) -> str:
    """None: not measured (torchrun has no event log); inf: not within the budget."""
    return "-" if value is None else "never" if math.isinf(value) else f"{value:.2f} s"


def _n(value: float | None, fmt: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, fmt)


def print_table(results: Sequence[Result]) -> bool:
    cols = [f"{r.tool} {r.backend} x{r.agents}" for r in results]
    rows: list[tuple[str, list[str]]] = [
        ("all agents up (last agent.started)", [_s(r.last_up_s) for r in results]),
        ("first round, event log (last agent)", [_s(r.first_round_s) for r in results]),
        ("first round, workers' first lines", [_s(r.first_workers_s) for r in results]),
        ("node loss detected (first agent)", [_s(r.loss_detected_s) for r in results]),
        ("node loss -> N-1, event log", [_s(r.loss_round_s) for r in results]),
        ("node loss -> N-1, workers", [_s(r.loss_workers_s) for r in results]),
        ("join -> N, event log", [_s(r.join_round_s) for r in results]),
        ("join -> N, workers", [_s(r.join_workers_s) for r in results]),
        ("store CPU, steady state", [_n(r.store_cpu_pct, ".1f") + " %" for r in results]),
        ("store requests/s", [_n(r.store_ops_per_s, ".0f") for r in results]),
        ("store requests/node/s", [
            _n(None if r.store_ops_per_s is None else r.store_ops_per_s / r.agents, ".1f")
            for r in results
        ]),
        ("agents' CPU, all together", [_n(r.agents_cpu_pct, ".1f") + " %" for r in results]),
        ("agents' RSS, total", [_n(r.agents_rss_mib, ".0f") + " MiB" for r in results]),
        ("agents' RSS, per agent", [
            _n(None if r.agents_rss_mib is None else r.agents_rss_mib / r.agents, ".1f") + " MiB"
            for r in results
        ]),
    ]  # fmt: skip
    width = max(22, *(len(c) for c in cols))
    print(f"{'':<36}" + "".join(f"{c:>{width}}" for c in cols))
    for label, cells in rows:
        print(f"{label:<36}" + "".join(f"{c:>{width}}" for c in cells))
    ok = True
    print("\ntargets (ours, event log):")
    for r in (r for r in results if r.tool == OURS):
        first = (r.first_round_s or math.inf) < FIRST_TARGET_S
        loss = (r.loss_round_s or math.inf) < LOSS_TARGET_S
        ok = ok and first and loss
        print(f"  {r.backend} x{r.agents}: first round < {FIRST_TARGET_S:g} s "
              f"{'PASS' if first else 'FAIL'}, node loss < {LOSS_TARGET_S:g} s "
              f"{'PASS' if loss else 'FAIL'}")  # fmt: skip
    ours = {r.backend: r for r in results if r.tool == OURS}
    for r in (r for r in results if r.tool == THEIRS):
        mine = ours.get(r.backend)
        theirs = r.first_workers_s
        if mine and mine.first_workers_s and theirs is not None and math.isfinite(theirs):
            print(f"  first round, workers: ours x{mine.agents} / torchrun x{r.agents} = "
                  f"{mine.first_workers_s / theirs:.3f}")  # fmt: skip
    notes = [f"  {r.tool} {r.backend} x{r.agents}: {n}" for r in results for n in r.notes]
    if notes:
        print("\nnotes:\n" + "\n".join(notes))
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100, help="agents per job (100)")
    parser.add_argument("--backend", action="append", choices=["c10d", "etcd"],
                        help="rendezvous backend for ours (repeatable; default both)")  # fmt: skip
    parser.add_argument("--torchrun-agents", type=int, default=25,
                        help="agents for torchrun's c10d job (25; each imports torch)")  # fmt: skip
    parser.add_argument("--skip-torchrun", action="store_true", help="run our launcher only")
    parser.add_argument("--steady", type=float, default=5.0, help="steady-state window, s (5)")
    parser.add_argument("--budget", type=float, default=60.0, help="first round budget, s (60)")
    parser.add_argument("--torchrun-budget", type=float, default=180.0,
                        help="torchrun's first round budget, s (180)")  # fmt: skip
    parser.add_argument("--fault-budget", type=float, default=30.0,
                        help="node loss and join budgets, s (30)")  # fmt: skip
    parser.add_argument(
        "--store-nice",
        type=int,
        default=0,
        help="nice value of the store's process: the etcd member, or the "
        "agent hosting the c10d store (0: as the agents; -10 stands in for "
        "a store host with CPUs of its own)",
    )
    parser.add_argument("--keep-scratch", action="store_true", help="keep the runs' logs")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    args = parser.parse_args(argv)
    if not 4 <= args.agents <= 250 or not 4 <= args.torchrun_agents <= 250:
        parser.error("--agents and --torchrun-agents must be within 4..250")
    backends = args.backend or ["c10d", "etcd"]
    jobs = [(OURS, b, args.agents) for b in backends]
    if not args.skip_torchrun:
        jobs.append((THEIRS, "c10d", args.torchrun_agents))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through every Fleet
    started = time.time()
    scratch = Path(tempfile.mkdtemp(prefix="bench_many_agents_"))
    results: list[Result] = []
    try:
        for tool, backend, count in jobs:
            print(f"{tool} {backend} x{count} ...", file=sys.stderr, flush=True)
            results.append(run_job(scratch, tool, backend, count, args))
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    finally:
        if args.keep_scratch:
            print(f"scratch kept: {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    ok = print_table(results)
    print(f"(the store's process ran at nice {args.store_nice})")
    report = {
        "benchmark": "many_agents", "created_unix": started, "duration_s": time.time() - started,
        "python": platform.python_version(), "torch": _version("torch"),
        "platform": platform.platform(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "commands": TOOLS, "store_nice": args.store_nice,
        "results": [vars(r) for r in results],
    }  # fmt: skip
    report = json.loads(json.dumps(report), parse_constant=lambda _: None)  # never: null
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON written to {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
