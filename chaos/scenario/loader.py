"""Scenario files -> validated Scenarios. The only module in the project that imports yaml.

We read yaml's event stream instead of calling `yaml.safe_load`, and build our own small tree
(`document.Node`). That is what gives every value its line number, and it lets us:
- refuse duplicate keys (safe_load silently keeps the last one);
- bound nesting depth and alias expansion while parsing, so a "billion laughs" file of a few
  hundred bytes or `[[[[...` cannot exhaust memory or the stack;
- keep keys and strings as written (`on:` stays the key "on", `member: no` stays "no").
Values otherwise mean what `yaml.safe_load` says (`010` is octal 8, `yes` is true).

Every failure is a ScenarioError with a one-line message `FILE:LINE: FIELD: what was found and
what was expected`; rules.py holds the rules themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from chaos.scenario.document import Entry, Invalid, Node, Scalar, describe, join
from chaos.scenario.plain import scenario_to_data
from chaos.scenario.rules import build_scenario
from chaos.scenario.schema import Scenario

MAX_BYTES = 256 * 1024  # a scenario is a few KiB; the pure-Python parser takes ~0.5 s at this
MAX_DEPTH = 32  # the schema nests 5 deep
MAX_VALUES = 20_000  # values after expanding aliases

_TAG = "tag:yaml.org,2002:"
# Tags whose scalars we keep as text: a timestamp is a string to every field of the schema.
_TEXT_TAGS = {_TAG + name for name in ("str", "timestamp", "value", "merge")}
_TYPED_TAGS = {_TAG + name for name in ("null", "bool", "int", "float")}


class ScenarioError(Exception):
    """A scenario that cannot be loaded: `source:line: field: message`, always one line."""

    def __init__(
        self, message: str, *, source: str, line: int | None = None, field: str = ""
    ) -> None:
        self.source = source
        self.line = line
        self.field = field
        self.detail = message
        where = source if line is None else f"{source}:{line}"
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        super().__init__(_one_line(text))


def _one_line(text: str) -> str:
    # File names and YAML problems come from outside; escape anything that would break the line.
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def load_scenario(path: Path, *, backend: str | None = None) -> Scenario:
    """Load and validate one scenario file. `backend` overrides topology.backend before the
    rules run (`chaos run --backend netns` must be able to run a partition scenario)."""
    source = str(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(f"cannot read: {exc.strerror or exc}", source=source) from exc
    if len(data) > MAX_BYTES:
        raise ScenarioError(f"file too large (limit {MAX_BYTES} bytes)", source=source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ScenarioError(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}",
            source=source,
            line=line,
        ) from exc
    return load_scenario_text(text, source=source, backend=backend)


def load_scenario_text(text: str, *, source: str, backend: str | None = None) -> Scenario:
    """Validate a scenario given as text; `source` names it in errors and in Scenario.source."""
    if len(text) > MAX_BYTES:
        raise ScenarioError(f"document too large (limit {MAX_BYTES} characters)", source=source)
    try:
        root = _parse(text)
        if root is None:
            raise Invalid(1, "", "empty scenario; expected a mapping with at least `name`")
        return build_scenario(root, source=source, backend=backend)
    except Invalid as exc:
        raise ScenarioError(exc.message, source=source, line=exc.line, field=exc.path) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = "; ".join(str(p) for p in (exc.problem, exc.context) if p)
        raise ScenarioError(f"invalid YAML: {problem}", source=source, line=line) from exc
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        raise ScenarioError(
            f"invalid YAML: character #x{ord(char):04x} is not allowed ({exc.reason})",
            source=source,
            line=line,
        ) from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"invalid YAML: {exc}", source=source) from exc


def dump_scenario(scenario: Scenario) -> str:
    """YAML that loads back into an equal Scenario (all but `source`): the run directory's
    scenario.yaml, written by the only module allowed to write YAML."""
    return yaml.safe_dump(
        scenario_to_data(scenario), sort_keys=False, allow_unicode=True, default_flow_style=None
    )


class _MergeKey(Node):
    """A plain `<<`: as a key it merges a mapping in; anywhere else it reads as the text."""

    __slots__ = ()


@dataclass
class _Open:
    """A sequence or mapping whose end event has not come yet."""

    kind: str
    line: int
    path: str
    anchor: str | None
    children: list[Node] = field(default_factory=list)

    def child_path(self) -> str:
        if self.kind == "seq":
            return join(self.path, len(self.children))
        if len(self.children) % 2 == 0:  # the next child is a key
            return self.path
        key = self.children[-1]
        return join(self.path, key.raw if key.kind == "scalar" else "?")


class _Builder:
    def __init__(self) -> None:
        self.stack: list[_Open] = []
        self.anchors: dict[str, Node] = {}
        self.open_anchors: set[str] = set()
        self.values = 0
        self.root: Node | None = None
        self.documents = 0
        self.constructor = yaml.constructor.SafeConstructor()  # for its scalar converters

    def path(self) -> str:
        return self.stack[-1].child_path() if self.stack else ""

    def count(self, n: int, line: int) -> None:
        self.values += n
        if self.values > MAX_VALUES:
            raise Invalid(
                line,
                self.path(),
                f"document too complex: more than {MAX_VALUES} values (after expanding aliases)",
            )

    def add(self, node: Node, anchor: str | None) -> None:
        if anchor is not None:
            self.anchors[anchor] = node
        if self.stack:
            self.stack[-1].children.append(node)
        else:
            self.root = node

    def event(self, event: yaml.Event, resolver: yaml.resolver.Resolver) -> None:
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise Invalid(line, "", "expected one YAML document, found a second one")
        elif isinstance(event, yaml.ScalarEvent):
            self.count(1, line)
            node = self.scalar(event, line, resolver)
            self.add(node, event.anchor)
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            kind = "seq" if isinstance(event, yaml.SequenceStartEvent) else "map"
            if len(self.stack) >= MAX_DEPTH:
                raise Invalid(line, self.path(), f"nested deeper than {MAX_DEPTH} levels")
            expected = _TAG + ("seq" if kind == "seq" else "map")
            if event.tag not in (None, "!", expected):
                raise Invalid(line, self.path(), f"unsupported YAML tag {_short(event.tag)}")
            self.count(1, line)
            if event.anchor is not None:
                self.open_anchors.add(event.anchor)
            self.stack.append(_Open(kind, line, self.path(), event.anchor))
        elif isinstance(event, yaml.CollectionEndEvent):
            done = self.stack.pop()
            node = (
                self.mapping(done)
                if done.kind == "map"
                else Node(
                    line=done.line,
                    kind="seq",
                    items=tuple(done.children),
                    size=1 + sum(c.size for c in done.children),
                )
            )
            if done.anchor is not None:
                self.open_anchors.discard(done.anchor)
            self.add(node, done.anchor)
        elif isinstance(event, yaml.AliasEvent):
            name = str(event.anchor)
            if name in self.open_anchors:
                raise Invalid(line, self.path(), f"alias *{name} refers to a value containing it")
            target = self.anchors.get(name)
            if target is None:
                raise Invalid(line, self.path(), f"undefined alias *{name}")
            self.count(target.size, line)
            self.add(target, None)

    def scalar(self, event: yaml.ScalarEvent, line: int, resolver: yaml.resolver.Resolver) -> Node:
        raw = str(event.value)
        plain = event.style is None
        tag = event.tag
        if tag is None or tag == "!":
            # The stubs leave resolve() unannotated; it returns the tag string.
            tag = str(resolver.resolve(yaml.ScalarNode, raw, event.implicit))  # type: ignore[no-untyped-call]
        if tag == _TAG + "merge" and plain:
            return _MergeKey(line=line, kind="scalar", value=raw, raw=raw, plain=True)
        if tag in _TEXT_TAGS:
            value: Scalar = raw
        elif tag in _TYPED_TAGS:
            value = self.convert(tag, raw, line)
        else:
            raise Invalid(line, self.path(), f"unsupported YAML tag {_short(tag)}")
        return Node(line=line, kind="scalar", value=value, raw=raw, plain=plain)

    def convert(self, tag: str, raw: str, line: int) -> Scalar:
        if tag == _TAG + "null":
            return None
        if tag == _TAG + "int" and len(raw) > 64:
            return raw  # int() refuses 4300+ digits; left as text, the rules say "got '1111...'"
        node = yaml.ScalarNode(tag, raw)
        try:
            if tag == _TAG + "bool":
                return self.constructor.bool_values[raw.lower()]
            if tag == _TAG + "int":
                return self.constructor.construct_yaml_int(node)
            return self.constructor.construct_yaml_float(node)
        except (KeyError, ValueError) as exc:  # an explicit `!!int abc`
            kind = tag.removeprefix(_TAG)
            raise Invalid(line, self.path(), f"expected a valid !!{kind}, got {raw!r}") from exc

    def mapping(self, done: _Open) -> Node:
        pairs = list(zip(done.children[::2], done.children[1::2], strict=True))
        entries: list[Entry] = []
        seen: dict[str, int] = {}
        merges: list[Node] = []
        for key, value in pairs:
            if isinstance(key, _MergeKey):
                merges.append(value)
                continue
            if key.kind != "scalar":
                raise Invalid(key.line, done.path, f"expected a text key, got {describe(key)}")
            if key.raw in seen:
                raise Invalid(
                    key.line,
                    join(done.path, key.raw),
                    f"duplicate key (first at line {seen[key.raw]})",
                )
            seen[key.raw] = key.line
            entries.append(Entry(key=key.raw, line=key.line, value=value))
        # `<<: *base` (or a list of them): keys written here win, then earlier merges win.
        for merged in merges:
            sources = merged.items if merged.kind == "seq" else (merged,)
            for source in sources:
                if source.kind != "map":
                    raise Invalid(
                        merged.line,
                        join(done.path, "<<"),
                        f"expected a mapping to merge, got {describe(source)}",
                    )
                for entry in source.entries:
                    if entry.key not in seen:
                        seen[entry.key] = entry.line
                        entries.append(entry)
        size = 1 + sum(k.size + v.size for k, v in pairs)
        return Node(line=done.line, kind="map", entries=tuple(entries), size=size)


def _short(tag: str | None) -> str:
    return repr(str(tag).replace(_TAG, "!!", 1))


def _parse(text: str) -> Node | None:
    builder = _Builder()
    resolver = yaml.resolver.Resolver()  # the implicit tags of yaml.SafeLoader
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        builder.event(event, resolver)
    return builder.root
