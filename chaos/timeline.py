"""The timeline picture of a run: a hand-written SVG, one lane per node, time on x.

Each lane shows the agent's life (grey bar), its rendezvous rounds as bands labelled
`r<round> W=<world size> g<group rank>`, worker starts (green ticks above the band) and
exits (below: grey = exit 0, orange = stopped by the agent, red = failed, labelled),
membership changes (amber triangles) and restarts (purple diamonds; hollow = not charged).
Faults are red dashed lines across every lane, labelled on top, with a red marker on the
node they hit (and a shaded span until their heal). Under the lanes, the workload's step
(rank 0) against time, one line per incarnation, so redone work shows as a drop.
Pure: returns SVG text. Every element carries a <title> tooltip with the exact values.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from chaos.checkers import facts
from chaos.checkers.timing import FaultTiming, measure
from chaos.checkers.verdict import Verdict, overall
from chaos.history import History
from chaos.scenario.schema import Scenario
from chaos.svg import Svg, nice_step
from launcher import events as ev

WIDTH, LEFT, RIGHT = 1200, 150, 40
LANE_H, LANE_GAP, STEPS_H = 70, 10, 110
CHAR_W = 6.3  # the width of one 11px character, near enough
ROUND_FILLS = ("#dbe9f6", "#d9f0dc", "#f3e6d6", "#e7def3", "#f6dde3", "#dff1f1")
INK, MUTED, GRID = "#222222", "#666666", "#e6e6e6"
START, EXIT_OK, STOPPED, FAILED = "#2e8b57", "#8a8a8a", "#e08a00", "#d62728"
RESTART, CHANGED, STEPS = "#7b3fb5", "#c9a100", "#1f5fbf"
STATUS_COLORS = {"pass": "#2e8b57", "fail": "#d62728", "unknown": "#b07800"}
BOLD = {"font_weight": "bold"}


class Timeline:
    def __init__(self, history: History, scenario: Scenario, verdicts: Sequence[Verdict]) -> None:
        self.h, self.s, self.verdicts = history, scenario, verdicts
        self.origin = facts.time_origin(history)
        self.starts = {
            n: r
            for r in facts.records(history, "node.start")
            if (n := facts.as_int(r.get("node"))) is not None
        }
        nodes = set(history.events) | set(history.exit_codes) | set(self.starts)
        self.nodes = sorted(nodes) or list(range(scenario.topology.nodes))
        self.stopped = facts.stopped_nodes(history, scenario)
        self.fires = facts.fault_fires(history, scenario)
        times = [float(r.get("t") or 0.0) for r in history.records]
        times += [e.wall_time - self.origin for evs in history.events.values() for e in evs]
        times += [float(s.get("t") or 0.0) - self.origin for s in history.steps]
        self.end = max([1.0, *times]) * 1.03
        self.timings = {(t.fire.index, t.fire.t): t for t in measure(history, scenario)}
        self.layout = self._fault_layout()
        rows = max([1, *(row + 1 for row, _ in self.layout)])
        self.top = 112 + 18 * rows
        self.steps_top = self.top + len(self.nodes) * (LANE_H + LANE_GAP)
        self.height = self.steps_top + STEPS_H + 50

    def x(self, t: float) -> float:
        return LEFT + max(0.0, min(t, self.end)) / self.end * (WIDTH - LEFT - RIGHT)

    def t(self, wall: float) -> float:
        return wall - self.origin

    def lane_y(self, node: int) -> float:
        return self.top + self.nodes.index(node) * (LANE_H + LANE_GAP)

    @staticmethod
    def fault_label(fire: facts.FaultFire) -> str:
        shown = ("rank", "node", "signal", "exit_code", "duration_s")
        target = ", ".join(f"{k} {v}" for k, v in fire.did.items() if k in shown and v is not None)
        label = f"#{fire.index} {fire.kind}" + (f" ({target})" if target else "")
        return label + (" skipped" if fire.skipped else "")

    def label_box(self, fire: facts.FaultFire) -> tuple[float, float, str]:
        """(left, right, text-anchor) of a fault's label: right of its line, or left of it
        when it would run off the picture."""
        x, width = self.x(fire.t), CHAR_W * len(self.label(fire)) + 8
        if x + 4 + width <= WIDTH - 4:
            return x + 4, x + 4 + width, "start"
        return x - 4 - width, x - 4, "end"

    def label(self, fire: facts.FaultFire) -> str:
        timing = self.timings.get((fire.index, fire.t))
        if timing is None or fire.skipped:
            return self.fault_label(fire)
        seen = "no reaction" if timing.detect_s is None else f"detected +{timing.detect_s:.2f}s"
        back = "" if timing.recover_s is None else f", running again +{timing.recover_s:.2f}s"
        return f"{self.fault_label(fire)}: {seen}{back}"

    def _fault_layout(self) -> list[tuple[int, facts.FaultFire]]:
        """Label rows: each label goes in the first row where it overlaps nothing."""
        rows: list[list[tuple[float, float]]] = []
        out = []
        for fire in self.fires:
            left, right, _ = self.label_box(fire)
            free = (i for i, row in enumerate(rows) if all(b < left or a > right for a, b in row))
            index = next(free, len(rows))
            if index == len(rows):
                rows.append([])
            rows[index].append((left, right))
            out.append((index, fire))
        return out

    # -- drawing ------------------------------------------------------------------------------
    def render(self) -> str:
        svg = Svg()
        svg.open(
            "svg",
            xmlns="http://www.w3.org/2000/svg",
            width=WIDTH,
            height=self.height,
            viewBox=f"0 0 {WIDTH} {self.height}",
            font_family="DejaVu Sans, Helvetica, Arial, sans-serif",
            font_size=11,
        )
        svg.rect(0, 0, WIDTH, self.height, "#ffffff")
        status = overall(self.verdicts) if self.verdicts else None
        head = f"{self.s.name}  \u00b7  seed {self.s.seed}  \u00b7  launcher: {self.s.launcher}"
        svg.text(16, 28, head, INK, font_size=16, **BOLD)
        if status:
            color = STATUS_COLORS[status]
            svg.text(
                WIDTH - RIGHT, 28, status.upper(), color, font_size=16, text_anchor="end", **BOLD
            )
        self._legend(svg)
        self._axis(svg)
        for node in self.nodes:
            self._lane(svg, node)
        self._steps(svg)
        self._faults(svg)
        svg.close("svg")
        return svg.render()

    def _legend(self, svg: Svg) -> None:
        y, x = 56.0, 16.0
        items = [
            ("band", ROUND_FILLS[0], "round r#: world size W, group rank g"),
            ("tick", START, "worker started"),
            ("tick", EXIT_OK, "worker exited 0"),
            ("tick", STOPPED, "stopped by agent"),
            ("tick", FAILED, "worker failed"),
            ("diamond", RESTART, "restart (hollow: not charged)"),
            ("triangle", CHANGED, "membership changed"),
            ("agent", "#9aa4ae", "agent running, then its exit (red: non-zero)"),
            ("dash", FAILED, "fault (label: reaction and recovery times)"),
            ("outage", FAILED, "fault until workers run again"),
            ("line", STEPS, "training step"),
        ]
        for kind, color, label in items:
            if x + 28 + CHAR_W * len(label) > WIDTH - RIGHT:
                x, y = 16.0, y + 22
            if kind == "band":
                svg.rect(x, y - 10, 22, 14, color, stroke="#9fb3c8")
            elif kind == "tick":
                svg.line(x + 11, y - 11, x + 11, y + 5, color, width=2.5)
            elif kind == "diamond":
                svg.path(f"M{x + 11} {y - 11} l6 8 l-6 8 l-6 -8 z", color)
            elif kind == "triangle":
                svg.path(f"M{x + 5} {y - 9} h12 l-6 11 z", color)
            elif kind == "agent":
                svg.line(x, y - 3, x + 18, y - 3, color, width=3)
                svg.add("circle", cx=x + 20, cy=y - 3, r=4, fill=START)
            elif kind == "outage":
                svg.rect(x, y - 8, 22, 8, color, fill_opacity=0.25)
            elif kind == "dash":
                svg.line(x + 11, y - 12, x + 11, y + 6, color, width=2, stroke_dasharray="4 3")
            else:
                svg.line(x, y - 3, x + 22, y - 3, color, width=1.5)
            svg.text(x + 28, y + 1, label, INK)
            x += 28 + CHAR_W * len(label) + 20

    def _axis(self, svg: Svg) -> None:
        bottom = self.steps_top + STEPS_H
        step = nice_step(self.end)
        svg.open("g", class_="axis")
        for i in range(int(self.end / step + 1e-9) + 1):
            tick = i * step
            x = self.x(tick)
            svg.line(x, self.top - 4, x, bottom, GRID)
            svg.line(x, bottom, x, bottom + 5, MUTED)
            svg.text(x, bottom + 18, f"{tick:g}", MUTED, text_anchor="middle")
        svg.line(LEFT, bottom, WIDTH - RIGHT, bottom, MUTED)
        middle = (LEFT + WIDTH - RIGHT) / 2
        svg.text(middle, bottom + 36, "seconds since the run started", INK, text_anchor="middle")
        svg.close("g")

    def _lane(self, svg: Svg, node: int) -> None:
        y = self.lane_y(node)
        events = self.h.events.get(node, ())
        exits = [r for r in facts.records(self.h, "node.exit") if r.get("node") == node]
        walls = [self.t(e.wall_time) for e in events]
        started = [float(self.starts[node].get("t") or 0.0)] if node in self.starts else []
        born = min(started + walls, default=0.0)
        died = float(exits[-1].get("t") or 0.0) if exits else max(walls, default=self.end)
        addr = str(self.starts.get(node, {}).get("addr") or (events[0].node_id if events else ""))
        svg.open("g", class_="lane", data_node=node)
        svg.rect(LEFT, y, WIDTH - LEFT - RIGHT, LANE_H, "#f7f8fa", stroke="#e1e4e8")
        svg.text(12, y + 20, f"node {node}", INK, font_size=13, **BOLD)
        svg.text(12, y + 36, addr, MUTED)
        code = self.h.exit_codes.get(node)
        status = f"exit {code}" if exits else "no exit recorded"
        status += " (fault)" if node in self.stopped else ""
        svg.text(12, y + 52, status, START if code == 0 else FAILED)
        life = f"agent from t={born:.2f}s to t={died:.2f}s"
        svg.add(
            "line",
            tip=life,
            x1=self.x(born),
            y1=y + LANE_H - 5,
            x2=self.x(died),
            y2=y + LANE_H - 5,
            stroke="#9aa4ae",
            stroke_width=3,
            stroke_linecap="round",
        )
        end = START if code == 0 else MUTED if not exits else FAILED
        svg.add("circle", tip=status, cx=self.x(died), cy=y + LANE_H - 5, r=4, fill=end)
        self._rounds(svg, events, y, died)
        for e in events:
            self._event(svg, e, y)
        svg.close("g")

    def _rounds(self, svg: Svg, events: Sequence[ev.Event], y: float, died: float) -> None:
        marks = [
            (self.t(e.wall_time), e.fields) for e in events if e.name == ev.RDZV_ROUND_COMPLETE
        ]
        stops = (ev.AGENT_EXIT, ev.RDZV_CHANGED, ev.GROUP_FAILED, ev.GROUP_STOPPED)
        ends = [self.t(e.wall_time) for e in events if e.name in stops]
        for i, (t0, f) in enumerate(marks):
            nxt = marks[i + 1][0] if i + 1 < len(marks) else died
            t1 = min([nxt, *(t for t in ends if t > t0)])
            x0, x1 = self.x(t0), max(self.x(t1), self.x(t0) + 2)
            number = facts.as_int(f.get("round")) or 0
            spent = bool(f.get("budget_spent"))
            svg.add(
                "rect",
                tip=self._round_tip(number, f) + (" - restart budget spent" if spent else ""),
                x=x0,
                y=y + 16,
                width=x1 - x0,
                height=30,
                fill="#eeeeee" if spent else ROUND_FILLS[number % len(ROUND_FILLS)],
                stroke=FAILED if spent else "#9fb3c8",
                stroke_dasharray="4 2" if spent else None,
            )
            full = f"r{number} W={f.get('world_size')} g{f.get('group_rank')}"
            full = f"r{number} budget spent" if spent else full
            fits = [t for t in (full, f"r{number}") if CHAR_W * len(t) + 14 < x1 - x0]
            wide = CHAR_W * len(full)
            if spent and fits[:1] != [full] and x1 + 4 + wide < WIDTH - RIGHT:
                svg.text(x1 + 4, y + 35, full, FAILED)  # too narrow: say it beside the band
            elif spent and fits[:1] != [full] and x0 - 4 - wide > LEFT:
                svg.text(x0 - 4, y + 35, full, FAILED, text_anchor="end")
            elif fits:
                svg.text(x0 + 10, y + 35, fits[0], FAILED if spent else INK)

    @staticmethod
    def _round_tip(number: int, f: Mapping[str, Any]) -> str:
        return (
            f"round {number} ({f.get('reason')}): world {f.get('world_size')}, group rank "
            f"{f.get('group_rank')}/{f.get('group_world_size')}, base rank "
            f"{f.get('base_rank')}, restart_count {f.get('restart_count')}"
        )

    def _event(self, svg: Svg, e: ev.Event, y: float) -> None:
        x, f = self.x(self.t(e.wall_time)), e.fields
        if e.name == ev.WORKER_STARTED:
            tip = (
                f"rank {f.get('rank')} started at t={self.t(e.wall_time):.2f}s (pid {f.get('pid')})"
            )
            svg.add("line", tip=tip, x1=x, y1=y + 5, x2=x, y2=y + 16, stroke=START, stroke_width=2)
        elif e.name == ev.WORKER_EXITED:
            code = facts.as_int(f.get("exit_code"))
            color = EXIT_OK if code == 0 else STOPPED if f.get("stopped_by_agent") else FAILED
            what = f"rank {f.get('rank')} {f.get('signal') or f'exit {code}'}"
            tip = f"{what} at t={self.t(e.wall_time):.2f}s"
            width = 3 if color == FAILED else 2
            svg.add(
                "line", tip=tip, x1=x, y1=y + 46, x2=x, y2=y + 58, stroke=color, stroke_width=width
            )
            if color == FAILED:
                svg.text(x + 4, y + 58, what, FAILED, font_size=10, **BOLD)
        elif e.name == ev.GROUP_RESTART:
            charged = bool(f.get("charged"))
            tip = f"restart: {f.get('reason')}, restart_count {f.get('restart_count')}"
            tip += "" if charged else " (not charged)"
            svg.add(
                "path",
                tip=tip,
                d=f"M{x:.1f} {y + 22} l7 9 l-7 9 l-7 -9 z",
                fill=RESTART if charged else "#ffffff",
                stroke=RESTART,
                stroke_width=1.5,
            )
        elif e.name == ev.RDZV_CHANGED:
            tip = f"membership changed: {f.get('reason')}"
            svg.add("path", tip=tip, d=f"M{x - 6:.1f} {y + 3} h12 l-6 11 z", fill=CHANGED)

    def _steps(self, svg: Svg) -> None:
        top, bottom = self.steps_top + 14, self.steps_top + STEPS_H - 8
        svg.open("g", class_="steps")
        svg.rect(LEFT, self.steps_top, WIDTH - LEFT - RIGHT, STEPS_H, "#fbfcfe", stroke="#e1e4e8")
        svg.text(12, self.steps_top + 20, "workload", INK, font_size=13, **BOLD)
        svg.text(12, self.steps_top + 36, "step of rank 0", MUTED)
        attempts = facts.attempts(self.h)
        highest = max([facts.final_step(self.h, self.s), *(a.last_step for a in attempts)])

        def y_of(step: int) -> float:
            return bottom - (bottom - top) * step / max(1, highest)

        for step in (0, highest):
            svg.line(LEFT, y_of(step), WIDTH - RIGHT, y_of(step), "#eef0f3")
            svg.text(LEFT - 6, y_of(step) + 4, str(step), MUTED, text_anchor="end")
        runs: list[list[tuple[float, float]]] = []
        resumed: list[int | None] = []
        for attempt in attempts:
            points = [
                (self.x(float(r.get("t") or 0.0) - self.origin), y_of(facts.as_int(r["step"]) or 0))
                for r in attempt.reports
                if r.get("rank") == 0
            ]
            if points:
                runs.append(points)
                resumed.append(attempt.resumed_from)
        for (before, after), since in zip(itertools.pairwise(runs), resumed[1:], strict=True):
            a, b = before[-1], after[0]
            svg.line(a[0], a[1], b[0], b[1], STEPS, width=1, stroke_dasharray="3 3")
            note = "restarted from scratch" if since is None else f"resumed from step {since}"
            svg.text(
                b[0] + 4, b[1] + 13 if b[1] + 13 < bottom else b[1] - 6, note, STEPS, font_size=10
            )
        for run in runs:
            line = " ".join(f"{px:.1f},{py:.1f}" for px, py in run)
            svg.add("polyline", points=line, fill="none", stroke=STEPS, stroke_width=1.5)
        if not runs:
            svg.text(LEFT + 8, (top + bottom) / 2, "no step reported", MUTED)
        svg.close("g")

    def _faults(self, svg: Svg) -> None:
        heals = {
            facts.as_int(r.get("fault")): float(r.get("t") or 0.0)
            for r in facts.records(self.h, "fault.heal")
        }
        bottom = self.steps_top + STEPS_H
        svg.open("g", class_="faults")
        for row, fire in self.layout:
            x, label_y = self.x(fire.t), 104 + 18 * row
            color = MUTED if fire.skipped else FAILED
            svg.line(x, label_y + 4, x, bottom, color, width=1.5, stroke_dasharray="5 3")
            tip = f"fault {fire.index} at t={fire.t:.3f}s did {dict(fire.did)}"
            left, right, anchor = self.label_box(fire)
            at = left if anchor == "start" else right
            svg.add("text", self.label(fire), tip=tip, x=at, y=label_y, fill=color,
                    text_anchor=anchor, **BOLD)  # fmt: skip
            timing = self.timings.get((fire.index, fire.t))
            if timing is not None:
                self._outage(svg, timing)
            healed = heals.get(fire.index)
            if fire.node in self.nodes:
                ly = self.lane_y(fire.node)
                if healed is not None:
                    width = max(2.0, self.x(healed) - x)
                    svg.rect(x, ly, width, LANE_H, FAILED, fill_opacity=0.12)
                svg.path(f"M{x - 7:.1f} {ly} h14 l-7 11 z", FAILED)
            if healed is not None:
                hx = self.x(healed)
                svg.line(hx, self.top, hx, bottom, FAILED, width=1, stroke_dasharray="1 3")
                svg.text(hx + 4, self.top - 4, f"heal #{fire.index}", FAILED, font_size=10)
        svg.close("g")

    def _outage(self, svg: Svg, timing: FaultTiming) -> None:
        """A red band on the workload panel from the fault to workers running again, with a
        tick where the launcher first reacted."""
        x, y = self.x(timing.fire.t), self.steps_top
        if timing.recover_s is not None:
            width = max(2.0, self.x(timing.fire.t + timing.recover_s) - x)
            tip = f"fault {timing.fire.index}: workers running again after {timing.recover_s:.3f}s"
            svg.add("rect", tip=tip, x=x, y=y + 1, width=width, height=8, fill=FAILED,
                    fill_opacity=0.25)  # fmt: skip
        if timing.detect_s is not None:
            dx = self.x(timing.fire.t + timing.detect_s)
            svg.line(dx, y, dx, y + 12, FAILED, width=2)


def render_timeline(history: History, scenario: Scenario, verdicts: Sequence[Verdict] = ()) -> str:
    """The run's timeline as SVG text."""
    return Timeline(history, scenario, verdicts).render()
