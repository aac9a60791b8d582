"""A tiny SVG writer (no dependency): escaped text and attributes, a few shape helpers."""

from __future__ import annotations

import math
import re
from typing import Any
from xml.sax.saxutils import escape, quoteattr

_INVALID_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(value: object) -> str:
    """The text with characters XML 1.0 cannot hold (even escaped) replaced by U+FFFD."""
    return _INVALID_XML.sub("\ufffd", str(value))


def xml_text(value: object) -> str:
    return escape(xml_safe(value))


def xml_attr(value: object) -> str:
    """A quoted, escaped attribute value."""
    return quoteattr(xml_safe(value))


def nice_step(span: float, max_ticks: int = 12) -> float:
    """A round tick interval giving at most `max_ticks` ticks over `span`."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if span / step <= max_ticks:
            return float(step)
    return float(10 ** math.ceil(math.log10(span / max_ticks)))


class Svg:
    """Collects elements; attribute names use `_` for `-` (and a trailing `_` for keywords)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    @staticmethod
    def _attrs(attrs: dict[str, Any]) -> str:
        out = []
        for key, value in attrs.items():
            if value is None:
                continue
            shown = f"{value:.1f}" if isinstance(value, float) else value
            out.append(f" {key.rstrip('_').replace('_', '-')}={xml_attr(shown)}")
        return "".join(out)

    def add(self, tag: str, text: str | None = None, tip: str | None = None, **attrs: Any) -> None:
        """One element; `tip` becomes a <title> child (a tooltip in viewers)."""
        inner = f"<title>{xml_text(tip)}</title>" if tip else ""
        inner += xml_text(text) if text is not None else ""
        attr = self._attrs(attrs)
        self.parts.append(f"<{tag}{attr}>{inner}</{tag}>" if inner else f"<{tag}{attr}/>")

    def open(self, tag: str, **attrs: Any) -> None:
        self.parts.append(f"<{tag}{self._attrs(attrs)}>")

    def close(self, tag: str) -> None:
        self.parts.append(f"</{tag}>")

    # -- shapes -----------------------------------------------------------------------------
    def line(
        self, x1: float, y1: float, x2: float, y2: float, color: str, *, width: float = 1, **kw: Any
    ) -> None:
        self.add("line", x1=x1, y1=y1, x2=x2, y2=y2, stroke=color, stroke_width=width, **kw)

    def rect(self, x: float, y: float, w: float, h: float, fill: str, **kw: Any) -> None:
        self.add("rect", x=x, y=y, width=w, height=h, fill=fill, **kw)

    def text(self, x: float, y: float, text: str, color: str, **kw: Any) -> None:
        self.add("text", text, x=x, y=y, fill=color, **kw)

    def path(self, d: str, fill: str, **kw: Any) -> None:
        self.add("path", d=d, fill=fill, **kw)

    def render(self) -> str:
        return "\n".join(self.parts) + "\n"
