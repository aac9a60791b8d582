"""Hostile scenario input: whatever the bytes, the loader gives a Scenario or a clean,
one-line ScenarioError naming the file; never another exception, a hang or a memory blow-up."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from faker import Faker
from hypothesis import given, settings
from hypothesis import strategies as st

from chaos.scenario import loader
from chaos.scenario.loader import ScenarioError, load_scenario, load_scenario_text
from chaos.scenario.plain import scenario_to_data
from chaos.scenario.schema import Scenario

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenarios.md"
N = "name: t\n"


def load(text: str) -> Scenario:
    return load_scenario_text(text, source="s.yaml")


def error(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load(text)
    assert "\n" not in str(info.value)
    return info.value


def file_error(path: Path) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert "\n" not in str(info.value)
    return info.value


TAIL = "(name, topology, workload, faults, expect), got "


def _hostile_error(text: str) -> ScenarioError:
    err = error(text)
    assert str(err).startswith("s.yaml")
    return err


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "s.yaml:1: empty scenario"),
        ("  \n# only a comment\n", "s.yaml:1: empty scenario"),
        ("---\n", "s.yaml:2: expected a mapping of scenario fields " + TAIL + "null"),
        ("- name: t\n", "s.yaml:1: expected a mapping of scenario fields " + TAIL + "a list"),
        ("just text", "got 'just text'"),
        ("name: t\n---\nname: u\n", "s.yaml:2: expected one YAML document"),
        ("name: [unclosed\n", "s.yaml:2: invalid YAML"),
        ("name: t\n\tnodes: 1\n", "invalid YAML"),
        ("name: t\x00\n", "s.yaml:1: invalid YAML: character #x0000 is not allowed"),
        ("name: \ud800\n", "character #xd800 is not allowed"),
        ("[" * 100_000, "nested deeper than 32 levels"),
        ("a: " + "{a: " * 40 + "1" + "}" * 40, "nested deeper than 32 levels"),
        ("a: &a [*a]\n", "alias *a refers to a value containing it"),
        (N + "topology: {nodes: " + "9" * 5000 + "}", "got 99999"),
        (N + "topology: {nodes: " + "9" * 30 + "}", "between 1 and 1024, got 9999"),
        (N + "timeout_s: 1e999", "> 0 and <= 604800, got '1e999'"),
        (N + "timeout_s: .nan", "got nan"),
        (N + "seed: " + str(2**64), "a seed between 0 and 18446744073709551615"),
        (N + "description: " + "x" * 10_000 + "\nbad: 1", "s.yaml:3: bad: unknown field"),
        ("? [a, b]\n: 1\n", "a text key"),
        ("x" * (loader.MAX_BYTES + 1), "document too large"),
    ],
    ids=lambda value: repr(value) if len(repr(value)) < 50 else f"{repr(value)[:40]}...",
)
def test_hostile_documents(text: str, fragment: str) -> None:
    err = _hostile_error(text)
    assert fragment in str(err)
    assert len(str(err)) < 1000


def test_alias_bomb_is_bounded() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    assert "more than 20000 values" in str(_hostile_error("\n".join(lines)))


def test_files_that_are_not_text(tmp_path: Path) -> None:
    fake = Faker()
    fake.seed_instance(20240611)
    for i in range(20):
        path = tmp_path / f"garbage{i}.yaml"
        path.write_bytes(fake.binary(length=fake.pyint(min_value=1, max_value=4096)))
        with pytest.raises(ScenarioError) as info:
            load_scenario(path)
        assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"name: t\ndescription: caf\xe9\n")
    assert f"{latin1}:2: not UTF-8 text: byte 0xe9" in str(file_error(latin1))
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (loader.MAX_BYTES + 1))
    assert "file too large" in str(file_error(big))
    missing = tmp_path / "missing.yaml"
    assert f"{missing}: cannot read" in str(file_error(missing))
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfname: t\r\nseed: 3\r\n")
    assert load_scenario(bom).seed == 3


def _random_tree(fake: Faker, depth: int) -> Any:
    choice = fake.pyint(max_value=9 if depth < 4 else 5)
    if choice == 0:
        return fake.pyint(min_value=-(10**30), max_value=10**30)
    if choice == 1:
        return fake.pyfloat()
    if choice == 2:
        return fake.pybool()
    if choice == 3:
        return None
    if choice in (4, 5):
        return fake.pystr() if choice == 4 else fake.word()
    if choice in (6, 7):
        return [_random_tree(fake, depth + 1) for _ in range(fake.pyint(max_value=4))]
    keys = [fake.word(), fake.pystr(max_chars=8), "name", "faults", "topology", "trigger", "kind"]
    return {fake.random_element(keys): _random_tree(fake, depth + 1) for _ in range(4)}


def test_faker_random_documents_never_crash() -> None:
    fake = Faker(["en_US", "ja_JP", "ar_AA"])
    fake.seed_instance(7)
    for _ in range(300):
        text = json.dumps(_random_tree(fake, 0), ensure_ascii=fake.pybool())  # JSON is YAML
        try:
            load(text)
        except ScenarioError as err:
            assert str(err).startswith("s.yaml") and "\n" not in str(err)


def _leaves(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _leaves(v, (*path, k))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _leaves(v, (*path, i))] or [path]
    return [path]


def test_faker_values_in_every_field_give_errors_naming_it() -> None:
    fake = Faker()
    fake.seed_instance(99)
    last_example = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)[-1]
    base = scenario_to_data(load(last_example))
    for path in _leaves(base):
        field = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")
        for value in (fake.pystr(), {"x": fake.word()}, [fake.pyint(), fake.pystr()]):
            data = json.loads(json.dumps(base))
            target = data
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
            try:
                load(json.dumps(data))
            except ScenarioError as err:
                assert err.line is not None and "\n" not in str(err)
                assert err.field.startswith(field.split("[")[0].split(".")[0]), (field, str(err))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_loads_or_fails_cleanly(text: str) -> None:
    try:
        load(text)
    except ScenarioError as err:
        assert str(err).startswith("s.yaml") and "\n" not in str(err)
