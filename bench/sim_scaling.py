"""How the rendezvous scales, in the simulator: N = 10 .. 10,000 virtual agents running the
launcher's own protocol core, one of them crashing after the first round.

    python3 bench/sim_scaling.py [--seed 7] [--sizes 10,30,...] [--json PATH] [--svg PATH]

For each N (min = 80% of N, max = N): wall time, virtual time of round 0 and of the
re-formation after the crash, store ops and bytes per node per round. Targets:

    wall       10,000 nodes complete a round in under 60 s of wall time (one core)
    flat ops   store ops per node per round do not grow from N = 10 to 10,000: the biggest N
               costs at most 1.5x the smallest (fewer is fine: joiners of a big round poll
               less often each, so the store's load from a forming round stays flat). The
               sizes between are shown, not judged: up to N = 200 a running member's round
               check slows from every 0.1 s to every 1 s (check_interval_s), and a node
               loss's re-formation then costs a few more polls per node at every N above
    re-form    crash -> new round complete within the documented bound, at every N
    correct    every run safe and live
    signing    the biggest N again with a job secret (every value sealed and checked):
               round 0 within 10 % of the unsigned run's (virtual time; wall time shown)

Writes JSON (default bench/results/sim_scaling.json) and an SVG picture of the curves.
Exit code: 0 every target met, 1 a target missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from chaos.sim import SimConfig, parse_faults, simulate  # noqa: E402
from chaos.sim.cli import format_point  # noqa: E402
from chaos.sim.sweep import SIZES, scaling_svg, sweep  # noqa: E402

WALL_TARGET_S = 60.0
FLAT_RATIO = 1.5
SIGNED_RATIO = 1.1  # a job secret may cost round 0 at most 10 % (virtual time)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--crash-at", type=float, default=3.0, help="virtual s of the crash")
    ap.add_argument("--json", type=Path, default=BENCH / "results" / "sim_scaling.json")
    ap.add_argument("--svg", type=Path, default=BENCH / "results" / "sim_scaling.svg")
    args = ap.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    top = max(sizes)
    base = SimConfig(
        nodes=top,
        min_nodes=top * 8 // 10,
        max_nodes=top,
        seed=args.seed,
        faults=parse_faults(f"crash:~1@{args.crash_at:g}"),  # the node: drawn from the seed
    )
    print(f"sim scaling: seed {args.seed}, min 80% of N, one crash at {args.crash_at:g} s")
    points = sweep(base, sizes, progress=lambda p: print(format_point(p), flush=True))

    checks: list[tuple[str, bool, str]] = []
    biggest = points[-1]
    first = biggest.result.rounds[0] if biggest.result.rounds else None
    wall = first.wall_s if first and first.completed_s is not None else float("inf")
    checks.append(
        (
            "wall",
            wall < WALL_TARGET_S,
            f"N={biggest.nodes}: round 0 complete after {wall:.2f} s wall "
            f"(whole run {biggest.result.wall_s:.2f} s; target < {WALL_TARGET_S:g} s)",
        )
    )
    for which in (0, 1):
        per_node = [
            p.result.rounds[which].ops_per_node for p in points if len(p.result.rounds) > which
        ]
        ratio = per_node[-1] / per_node[0] if per_node else float("inf")
        checks.append(
            (
                f"flat ops r{which}",
                ratio <= FLAT_RATIO,
                f"round {which}: {per_node[0]:.1f} ops/node at N={points[0].nodes}, "
                f"{per_node[-1]:.1f} at N={points[len(per_node) - 1].nodes}, "
                f"{min(per_node):.1f} .. {max(per_node):.1f} over all N "
                f"(biggest/smallest N {ratio:.2f}; target <= {FLAT_RATIO})",
            )
        )
    late = [p for p in points if p.reform_s is None or p.reform_s > p.result.reform_bound_s]
    checks.append(
        (
            "re-form",
            not late,
            "crash -> round complete: "
            + ", ".join(
                f"{p.nodes}: {p.reform_s:.2f} s" if p.reform_s else f"{p.nodes}: -" for p in points
            )
            + f" (bound {points[0].result.reform_bound_s:.1f} s at N={points[0].nodes}, "
            f"{points[-1].result.reform_bound_s:.1f} s at N={points[-1].nodes}: a big job's "
            "members check the round less often)",
        )
    )
    bad = [p.nodes for p in points if not p.result.ok]
    checks.append(("correct", not bad, f"unsafe or not live at N = {bad}" if bad else "all ok"))
    # The same biggest run with a job secret: every value sealed and checked (HMAC-SHA256).
    signed = simulate(dataclasses.replace(base, nodes=top, secret=True))
    plain = biggest.result
    r0_plain, r0_signed = plain.rounds[0], signed.rounds[0]
    ratio = r0_signed.duration_s / r0_plain.duration_s
    checks.append(
        (
            "signing",
            signed.ok and ratio <= SIGNED_RATIO,
            f"N={top}: round 0 {r0_plain.duration_s:.3f} s -> {r0_signed.duration_s:.3f} s "
            f"with a secret (x{ratio:.3f}; target <= {SIGNED_RATIO}), "
            f"{r0_plain.bytes_per_node:.0f} -> {r0_signed.bytes_per_node:.0f} B/node, "
            f"wall {plain.wall_s:.2f} -> {signed.wall_s:.2f} s",
        )
    )
    for name, ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'} {name:<12} {text}")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "seed": args.seed,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "points": [p.row() for p in points],
                "checks": [{"name": n, "ok": ok, "detail": t} for n, ok, t in checks],
            },
            indent=1,
        )
        + "\n"
    )
    args.svg.write_text(
        scaling_svg(points, f"rendezvous simulator, seed {args.seed}, min 80% of N, one crash")
    )
    print(f"json: {args.json}\npicture: {args.svg}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
