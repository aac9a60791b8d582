"""A parsed scenario document as plain data with line numbers, and typed readers over it.

`loader.py` (the only module that imports yaml) turns YAML into `Node`s; `rules.py` reads them
through `Value` and `Fields`, which raise `Invalid(line, path, message)`; the loader turns that
into a ScenarioError naming the file. Keeping yaml out of here keeps the rules pure and lets
every message be built the same way: `<path>: expected <what>, got <what was there>`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Literal, NoReturn

Scalar = None | bool | int | float | str
_DIGITS = re.compile(r"[-+]?[0-9][0-9_]*")
CLIP = 60  # longest text of a found value quoted in a message (messages stay one line)


class Invalid(Exception):
    """A rule broken at `line` (1-based) by the value at field `path` (e.g. `faults[2].node`)."""

    def __init__(self, line: int, path: str, message: str) -> None:
        super().__init__(f"{line}: {path}: {message}")
        self.line = line
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Entry:
    key: str  # as written: `on:` is the key "on", not YAML 1.1's True
    line: int  # the key's line
    value: Node


@dataclass(frozen=True, slots=True)
class Node:
    line: int
    kind: Literal["scalar", "seq", "map"]
    value: Scalar = None  # scalars: the value as yaml.safe_load would give it
    raw: str = ""  # scalars: the text as written, without quotes
    plain: bool = False  # scalars: unquoted, so `1e3` may still be read as a number
    items: tuple[Node, ...] = ()
    entries: tuple[Entry, ...] = ()
    size: int = 1  # values in this subtree: bounds the work an aliased subtree causes


def clip(text: str) -> str:
    return text if len(text) <= CLIP else f"{text[:CLIP]}... ({len(text)} chars)"


def describe(node: Node) -> str:
    """What was found, for `got ...`: a short, single-line rendering."""
    if node.kind == "seq":
        return "a list"
    if node.kind == "map":
        return "a mapping"
    if node.value is None:
        return "null"
    if isinstance(node.value, bool):
        return "true" if node.value else "false"
    if isinstance(node.value, str) and node.plain and _DIGITS.fullmatch(node.value):
        return clip(node.value)  # an integer too long to convert: show it as the number it is
    return clip(repr(node.value))


def suggest(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def bounds(what: str, low: float | None, high: float | None, why: str = "") -> str:
    """`an integer >= 1`, `a node index between 0 and 3 (nodes + spares is 4)`."""

    def show(x: float) -> str:
        return f"{x:g}" if isinstance(x, float) else str(x)

    if low is not None and low == high:
        return f"{what} {show(low)}{why}"
    if low is not None and high is not None:
        return f"{what} between {show(low)} and {show(high)}{why}"
    if low is not None:
        return f"{what} >= {show(low)}{why}"
    if high is not None:
        return f"{what} <= {show(high)}{why}"
    return what + why


@dataclass(frozen=True, slots=True)
class Value:
    """A node at a field path: the path travels with the value, not the node, because an
    aliased node appears at several paths."""

    node: Node
    path: str

    @property
    def line(self) -> int:
        return self.node.line

    @property
    def is_null(self) -> bool:
        return self.node.kind == "scalar" and self.node.value is None

    def fail(self, expected: str) -> NoReturn:
        raise Invalid(self.line, self.path, f"expected {expected}, got {describe(self.node)}")

    def error(self, message: str) -> NoReturn:
        raise Invalid(self.line, self.path, message)

    def integer(
        self,
        *,
        low: int | None = None,
        high: int | None = None,
        what: str = "an integer",
        why: str = "",
    ) -> int:
        expected = bounds(what, low, high, why)
        value = self.node.value
        # bool is an int in Python; `nodes: true` is a mistake, not 1.
        if self.node.kind != "scalar" or isinstance(value, bool) or not isinstance(value, int):
            self.fail(expected)
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(expected)
        return value

    def number(
        self,
        *,
        low: float | None = 0.0,
        high: float | None = None,
        above: bool = False,
        what: str = "a number of seconds",
        why: str = "",
    ) -> float:
        """A finite float; `above` makes `low` exclusive (a duration must be > 0)."""
        if above and low is not None:
            upper = f" and <= {high:g}" if high is not None else ""
            expected = f"{what} > {low:g}{upper}{why}"
        else:
            expected = bounds(what, low, high, why)
        value = self.node.value
        if self.node.kind != "scalar" or isinstance(value, bool) or value is None:
            self.fail(expected)
        if isinstance(value, str):
            # YAML 1.1 reads `1e3` as a string; to a person it is a number, but only unquoted.
            if not self.node.plain:
                self.fail(expected)
            try:
                value = float(value)
            except ValueError:
                self.fail(expected)
        result = float(value)
        if not math.isfinite(result):
            self.fail(expected)
        if low is not None and (result < low or (above and result == low)):
            self.fail(expected)
        if high is not None and result > high:
            self.fail(expected)
        return result

    def boolean(self) -> bool:
        if not isinstance(self.node.value, bool):
            self.fail("true or false")
        return self.node.value

    def text(self, *, what: str = "a string", empty: bool = False) -> str:
        """A string as written: `exception: no` is "no" and `name: 010` is "010"."""
        node = self.node
        if node.kind != "scalar" or node.value is None:
            self.fail(what)
        text = node.value if isinstance(node.value, str) else node.raw
        if not empty and not text.strip():
            self.fail(f"{what} (not empty)")
        return text

    def choice(self, choices: Collection[str], *, what: str = "") -> str:
        options = ", ".join(choices)
        text = self.text(what=what or f"one of {options}")
        if text not in choices:
            self.error(
                f"expected {what or 'one of'} {options}, got {clip(repr(text))}"
                f"{suggest(text, choices)}"
            )
        return text

    def items(self, *, what: str = "a list") -> list[Value]:
        if self.node.kind != "seq":
            self.fail(what)
        return [Value(item, join(self.path, i)) for i, item in enumerate(self.node.items)]

    def fields(self, allowed: Collection[str], *, what: str = "a mapping") -> Fields:
        if self.node.kind != "map":
            self.fail(what)
        for entry in self.node.entries:
            if entry.key not in allowed:
                raise Invalid(
                    entry.line,
                    join(self.path, entry.key),
                    f"unknown field{suggest(entry.key, allowed)}; expected one of: "
                    + ", ".join(allowed),
                )
        return Fields(self)


class Fields:
    """A mapping whose keys were all checked against the allowed ones."""

    def __init__(self, value: Value) -> None:
        self.value = value
        self._entries = {entry.key: entry for entry in value.node.entries}

    @property
    def line(self) -> int:
        return self.value.line

    @property
    def path(self) -> str:
        return self.value.path

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def get(self, key: str) -> Value | None:
        """The value at `key`; None when absent or null (both mean "use the default")."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value = Value(entry.value, join(self.path, key))
        return None if value.is_null else value

    def need(self, key: str, expected: str) -> Value:
        value = self.get(key)
        if value is None:
            line = self._entries[key].line if key in self._entries else self.line
            raise Invalid(line, join(self.path, key), f"missing; expected {expected}")
        return value

    def key_line(self, key: str) -> int:
        entry = self._entries.get(key)
        return entry.line if entry is not None else self.line

    def error(self, key: str, message: str) -> NoReturn:
        raise Invalid(self.key_line(key), join(self.path, key), message)
