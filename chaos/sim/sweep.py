"""The same scenario at N = 10 .. 10,000: how round time, store ops and bytes per node and
wall time grow with N, as JSON rows and a hand-written SVG (no plotting dependency)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any
from xml.sax.saxutils import escape

from chaos.sim.config import SimConfig
from chaos.sim.result import SimResult, simulate

SIZES = (10, 30, 100, 300, 1000, 3000, 10000)


@dataclass(frozen=True, kw_only=True)
class Point:
    nodes: int
    result: SimResult
    reform_s: float | None  # first crash -> the next round complete (None: no crash)

    def row(self) -> dict[str, Any]:
        r = self.result
        rounds = [
            {
                "round": x.round,
                "reason": x.reason,
                "size": x.size,
                "duration_s": x.duration_s,
                "ops_per_node": x.ops_per_node,
                "bytes_per_node": x.bytes_per_node,
                "max_node_bytes": x.max_node_bytes,
            }
            for x in r.rounds
        ]
        return {
            "nodes": self.nodes,
            "min_nodes": r.min_nodes,
            "max_nodes": r.max_nodes,
            "faults": r.faults,
            "wall_s": r.wall_s,
            "events": r.events,
            "ok": r.ok,
            "safety": r.safety,
            "liveness_held": r.liveness.held,
            "reform_s": self.reform_s,
            "reform_bound_s": r.reform_bound_s,
            "steady_ops_per_node_s": r.steady_ops_per_node_s,
            "rounds": rounds,
        }


def scaled(cfg: SimConfig, nodes: int) -> SimConfig:
    """`cfg` at `nodes` nodes: min and max keep their share, fault targets map over."""
    share = nodes / cfg.nodes
    faults = tuple(
        replace(f, nodes=tuple(sorted({min(nodes - 1, int(i * share)) for i in f.nodes})))
        for f in cfg.faults
    )
    return replace(
        cfg,
        nodes=nodes,
        min_nodes=max(1, round(cfg.min_nodes * share)),
        max_nodes=max(1, round(cfg.max_nodes * share)),
        addrs=(),
        faults=faults,
    )


def sweep(
    cfg: SimConfig,
    sizes: Sequence[int] = SIZES,
    progress: Callable[[Point], None] | None = None,
) -> list[Point]:
    points = []
    for n in sizes:
        result = simulate(scaled(cfg, n))
        point = Point(nodes=n, result=result, reform_s=reform_time(result, cfg))
        if progress is not None:
            progress(point)
        points.append(point)
    return points


def reform_time(result: SimResult, cfg: SimConfig) -> float | None:
    """From the first crash to the completion of the first round formed after it."""
    crashes = [f.at_s for f in cfg.faults if f.kind == "crash"]
    if not crashes:
        return None
    crash = min(crashes)
    after = [x for x in result.rounds if x.started_s > crash and x.completed_s is not None]
    return after[0].completed_s - crash if after and after[0].completed_s else None


# -- the picture ------------------------------------------------------------------------------
_W, _H, _PAD = 360, 230, 52


def scaling_svg(points: Sequence[Point], title: str) -> str:
    ns = [p.nodes for p in points]

    def per_round(field: str, which: int) -> list[float | None]:
        out: list[float | None] = []
        for p in points:
            rows = p.result.rounds
            out.append(float(getattr(rows[which], field) or 0) if len(rows) > which else None)
        return out

    bound = points[0].result.reform_bound_s if points else 0.0
    panels: list[tuple[str, list[tuple[str, list[float | None]]]]] = [
        ("wall time of the run (s)", [("wall", [p.result.wall_s for p in points])]),
        (
            "virtual time per round (s); dashed: re-form bound",
            [
                ("round 0", per_round("duration_s", 0)),
                ("re-form", [p.reform_s for p in points]),
                ("bound", [bound for _ in points]),
            ],
        ),
        (
            "store ops per node per round",
            [("round 0", per_round("ops_per_node", 0)), ("round 1", per_round("ops_per_node", 1))],
        ),
        (
            "store bytes per node per round",
            [
                ("round 0", per_round("bytes_per_node", 0)),
                ("round 1", per_round("bytes_per_node", 1)),
            ],
        ),
    ]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * _W}" height="{2 * _H + 30}" '
        'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{_W}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for index, (label, series) in enumerate(panels):
        x0, y0 = (index % 2) * _W, 30 + (index // 2) * _H
        parts.append(_panel(x0, y0, label, ns, series))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


_COLORS = ("#1f77b4", "#d62728", "#555555")


def _panel(
    x0: float, y0: float, label: str, ns: Sequence[int], series: list[tuple[str, list[Any]]]
) -> str:
    left, right, top, bottom = x0 + _PAD, x0 + _W - 24, y0 + 24, y0 + _H - 34
    values = [v for _, vs in series for v in vs if v is not None]
    top_value = _nice(max(values, default=1.0))
    lo, hi = (
        math.log10(min(ns)),
        math.log10(max(ns)) if max(ns) > min(ns) else math.log10(min(ns)) + 1,
    )

    def sx(n: float) -> float:
        return left + (math.log10(n) - lo) / (hi - lo) * (right - left)

    def sy(v: float) -> float:
        return bottom - v / top_value * (bottom - top)

    out = [
        f'<text x="{(left + right) / 2}" y="{y0 + 14}" text-anchor="middle">{escape(label)}</text>',
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>',
    ]
    for n in ns:
        out.append(f'<text x="{sx(n):.1f}" y="{bottom + 14}" text-anchor="middle">{n}</text>')
    out.append(f'<text x="{(left + right) / 2}" y="{bottom + 28}" text-anchor="middle">N</text>')
    for step in range(5):
        v = top_value * step / 4
        y = sy(v)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
    for (name, vs), color in zip(series, _COLORS, strict=False):
        pts = [(sx(n), sy(v)) for n, v in zip(ns, vs, strict=True) if v is not None]
        if not pts:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        if name == "bound":  # a limit, not a measurement: dashed, no markers
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-dasharray="6,4"/>'
            )
            continue
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in pts)
        legend_y = top + 12 * (1 + series.index((name, vs)))
        out.append(
            f'<text x="{right - 4}" y="{legend_y}" text-anchor="end" fill="{color}">'
            f"{escape(name)}</text>"
        )
    return "\n".join(out)


def _nice(value: float) -> float:
    """The smallest 1/2/5 x 10^k at or above `value` (axis top)."""
    if value <= 0:
        return 1.0
    exp = 10.0 ** math.floor(math.log10(value))
    return next(float(m * exp) for m in (1, 2, 5, 10) if m * exp >= value)
