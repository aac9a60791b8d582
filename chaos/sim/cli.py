"""`chaos sim`: run the rendezvous simulator from the command line.

    chaos sim --nodes 10000 --min 8000 --seed 7 [--faults SPEC,...] [--sweep]

Prints the virtual time each round took, store ops and bytes per node per round and the
wall time; writes the same numbers as JSON; with --sweep, runs the scenario at
N = 10 .. --nodes and draws how the numbers grow (SVG). Exit code: 0 safe and live,
1 a safety or liveness failure (the replay command is printed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from chaos.sim.config import SimConfig
from chaos.sim.faults import FaultSpecError, draw, parse_faults
from chaos.sim.result import SimResult, simulate
from chaos.sim.sweep import SIZES, Point, scaling_svg, sweep
from launcher.rendezvous.state import DEFAULT_WINDOW_S

EPILOG = """\
faults (comma separated, times in virtual seconds):
  crash:3@10  pause:3@10+8  leave:3@10  fail:3@10  late:3@10  partition:0-4@10+5
  spike:10@10+2  drop:0.05@10+2  delay:0.5@10+2  restart@10+2  restart:wipe@10+2
  node sets: 3, 0-4, 1/5/9, ~3 (3 drawn from the seed), ~1% (1% of the nodes)
safety codes for --allow: duplicate_rank two_ranks disagreement bad_ranks world_size
  round_regressed dead_member bad_exclusion; liveness gaps: orphaned_round stranded_joiner
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="chaos sim",
        description="Deterministic rendezvous simulator: the launcher's own protocol core, "
        "N virtual agents, a simulated store, injected faults, one seed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--nodes", type=int, required=True, help="virtual agents")
    ap.add_argument("--min", type=int, dest="min_nodes", help="min nodes (default: --nodes)")
    ap.add_argument("--max", type=int, dest="max_nodes", help="max nodes (default: --nodes)")
    ap.add_argument("--seed", type=int, default=0, help="every random choice comes from it")
    ap.add_argument("--faults", default="", help="fault schedule, e.g. crash:3@5,pause:1@8+6")
    ap.add_argument(
        "--random-faults",
        type=int,
        default=0,
        metavar="K",
        help="add K faults drawn from the seed (after the start spread)",
    )
    ap.add_argument("--nproc", type=int, default=1, help="workers per node (world size)")
    ap.add_argument("--latency-ms", type=float, default=1.0, help="median store round trip")
    ap.add_argument("--latency-sigma", type=float, default=0.5, help="lognormal sigma")
    ap.add_argument(
        "--store-ops-per-s",
        type=float,
        default=0.0,
        help="store throughput (a FIFO server); 0: unlimited",
    )
    ap.add_argument("--start-spread", type=float, default=1.0, help="agents start within (s)")
    ap.add_argument("--read-timeout", type=float, default=60.0, help="store op timeout (s)")
    ap.add_argument(
        "--store-outage",
        type=float,
        default=DEFAULT_WINDOW_S,
        help="store_outage_timeout: how long an agent retries an unreachable store (s)",
    )
    ap.add_argument("--last-call", type=float, default=30.0, help="last_call_timeout (s)")
    ap.add_argument("--keep-alive", type=float, default=1.0, help="keep_alive_interval (s)")
    ap.add_argument("--until", type=float, help="stop at this virtual time (s)")
    ap.add_argument("--settle", type=float, help="settled time before an early stop (s)")
    ap.add_argument("--allow", default="", help="comma list of violation codes to tolerate")
    ap.add_argument(
        "--secret", action="store_true", help="a job secret: every value sealed (forge needs it)"
    )
    ap.add_argument(
        "--store-wakes",
        action="store_true",
        help="the store wakes a joiner when its assignment is written (etcd's watches)",
    )
    ap.add_argument("--json", type=Path, help="where the JSON goes (default runs/sim/...)")
    ap.add_argument(
        "--sweep",
        action="store_true",
        help=f"also run at N in {', '.join(map(str, SIZES))} up to --nodes",
    )
    ap.add_argument("--svg", type=Path, help="where the sweep's picture goes")
    return ap


def config_from(args: argparse.Namespace) -> SimConfig:
    nodes = args.nodes
    max_nodes = args.max_nodes if args.max_nodes is not None else nodes
    min_nodes = args.min_nodes if args.min_nodes is not None else min(nodes, max_nodes)
    faults = parse_faults(args.faults)
    if args.random_faults:
        rng = random.Random(f"faults-{args.seed}")  # its own stream: the run's stays put
        faults += draw(
            rng,
            count=args.random_faults,
            nodes=nodes,
            start_s=args.start_spread + 1.0,
            window_s=20.0,
        )
    cfg = SimConfig(
        nodes=nodes,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        seed=args.seed,
        nproc_per_node=args.nproc,
        faults=faults,
        latency_median_s=args.latency_ms / 1000.0,
        latency_sigma=args.latency_sigma,
        store_ops_per_s=args.store_ops_per_s,
        start_spread_s=args.start_spread,
        read_timeout_s=args.read_timeout,
        store_outage_timeout_s=args.store_outage,
        last_call_timeout_s=args.last_call,
        keep_alive_interval_s=args.keep_alive,
        until_s=args.until,
        settle_s=args.settle,
        allow=frozenset(filter(None, args.allow.split(","))),
        secret=args.secret,
        store_wakes=args.store_wakes,
    )
    cfg.validate()
    return cfg


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    try:
        cfg = config_from(args)
    except (FaultSpecError, ValueError) as err:
        parser.error(str(err))
    result = simulate(cfg)
    print(format_result(result))
    out = args.json or Path("runs/sim") / f"sim-n{cfg.nodes}-seed{cfg.seed}.json"
    payload: dict[str, object] = {"run": result.to_json(), "replay": replay(args, result)}
    if args.sweep:
        sizes = [n for n in SIZES if n < cfg.nodes] + [cfg.nodes]
        points = sweep(cfg, sizes, progress=lambda p: print(format_point(p), flush=True))
        payload["sweep"] = [p.row() for p in points]
        svg = args.svg or out.with_suffix(".svg")
        svg.parent.mkdir(parents=True, exist_ok=True)
        title = (
            f"chaos sim, seed {cfg.seed}, min/max {cfg.min_nodes}/{cfg.max_nodes} of {cfg.nodes}"
        )
        svg.write_text(scaling_svg(points, title))
        print(f"picture: {svg}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    print(f"json: {out}")
    if not result.ok:
        print(f"replay: {replay(args, result)}", file=sys.stderr)
        return 1
    return 0


def replay(args: argparse.Namespace, result: SimResult) -> str:
    cmd = f"chaos sim --nodes {result.nodes} --min {result.min_nodes} --max {result.max_nodes}"
    cmd += f" --seed {result.seed}" + (" --secret" if result.secret else "")
    cmd += " --store-wakes" if result.store_wakes else ""
    if result.faults:
        cmd += f" --faults '{result.faults}'"
    defaults = build_parser().parse_args(["--nodes", "1"])
    for flag in (
        "nproc",
        "latency_ms",
        "latency_sigma",
        "store_ops_per_s",
        "start_spread",
        "read_timeout",
        "store_outage",
        "last_call",
        "keep_alive",
        "until",
        "settle",
        "allow",
    ):
        value = getattr(args, flag)
        if value != getattr(defaults, flag):
            cmd += f" --{flag.replace('_', '-')} {value}"
    return cmd


def format_result(r: SimResult) -> str:
    lines = [
        f"chaos sim: {r.nodes} nodes (min {r.min_nodes}, max {r.max_nodes}), seed {r.seed}"
        + (f", faults {r.faults}" if r.faults else ""),
        f"{'round':>5} {'reason':<15} {'size':>6} {'start s':>9} {'took s':>8} "
        f"{'ops/node':>9} {'bytes/node':>11} {'max bytes':>10} {'wall s':>7}",
    ]
    for x in r.rounds:
        took = f"{x.duration_s:8.3f}" if x.duration_s is not None else f"{'-':>8}"
        size = f"{x.size}" if x.completed_s is not None else f"{x.received}/{x.size}"
        lines.append(
            f"{x.round:>5} {x.reason:<15} {size:>6} {x.started_s:9.3f} {took} "
            f"{x.ops_per_node:9.1f} {x.bytes_per_node:11.0f} {x.max_node_bytes:10d} "
            f"{x.wall_s:7.2f}"
        )
    live = r.liveness
    verdict = "held" if live.held else ("not required" if not live.required else "FAILED")
    lines += [
        f"wall {r.wall_s:.2f} s for {r.virtual_s:.2f} virtual s; {r.events} events, "
        f"{r.ops} store ops, {r.bytes} bytes; steady state {r.steady_ops_per_node_s:.1f} "
        "ops/node/s",
        f"safety: {r.safety}" + (f" (tolerated: {r.tolerated})" if r.tolerated else ""),
        f"liveness: {verdict}: settled in round {live.settled_round} at "
        + (f"{live.settled_s:.3f} s" if live.settled_s is not None else "-")
        + f"; faults over at {live.quiet_s:.3f} s, bound {live.bound_s:.1f} s"
        + (f"; known gap: {live.gap}" if live.gap else ""),
    ]
    if r.exits:
        lines.append(f"agents gone: {r.exits}; declared dead and rejoined: {r.declared_dead}")
    if r.secret:
        lines.append(f"signed: {r.forged} forged value(s) written, {r.rejected} read(s) refused")
    return "\n".join(lines)


def format_point(p: Point) -> str:
    rows = p.result.rounds
    first = rows[0] if rows else None
    reform = f"{p.reform_s:.3f}" if p.reform_s is not None else "-"
    return (
        f"N={p.nodes:>6}: wall {p.result.wall_s:7.2f} s, round 0 "
        + (
            f"{first.duration_s:.3f} s, {first.ops_per_node:.1f} ops/node, "
            f"{first.bytes_per_node:.0f} B/node"
            if first and first.duration_s
            else "-"
        )
        + f"; re-form {reform} s (bound {p.result.reform_bound_s:.1f} s)"
        + ("" if p.result.ok else "  NOT OK")
    )
