"""Request bodies read the way Go's `encoding/json.Decoder` reads them into a struct.

Clients were written against the Go server, so they rely on its leniency: keys match
case-insensitively, unknown keys are ignored, only the first JSON value counts (trailing bytes
are ignored), and `null` leaves a field at its default. What Go refuses, a type mismatch or a
float for an integer, is refused here with Go's wording (400 `bad request body: ...`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from chaos.proxy.errors import bad_body

_DECODER = json.JSONDecoder()
_INT64 = (-(2**63), 2**63 - 1)


def first_value(body: bytes) -> Any:
    """The first JSON value of the body; an empty body is Go's `EOF`."""
    text = body.decode("utf-8", errors="replace").lstrip()
    if not text:
        raise bad_body("EOF")
    try:
        value, _ = _DECODER.raw_decode(text)
    except json.JSONDecodeError as exc:
        raise bad_body(exc.msg.lower()) from exc
    return value


def json_kind(value: Any) -> str:
    """Go's name for a JSON value's kind, as its unmarshal errors print it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"


def struct(value: Any, go_type: str) -> dict[str, Any]:
    """An object's fields keyed by lower-cased name (Go matches names case-insensitively);
    `null` decodes to no fields at all."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        kind = json_kind(value).split()[0]
        raise bad_body(f"json: cannot unmarshal {kind} into Go value of type {go_type}")
    return {str(key).lower(): item for key, item in value.items()}


def _mismatch(value: Any, where: str, go_type: str) -> Exception:
    kind = json_kind(value)
    return bad_body(f"json: cannot unmarshal {kind} into Go struct field {where} of type {go_type}")


def string(fields: Mapping[str, Any], key: str, where: str, default: str) -> str:
    value = fields.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _mismatch(value, f"{where}.{key}", "string")
    return value


def boolean(fields: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = fields.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _mismatch(value, f"{where}.{key}", "bool")
    return value


def number(fields: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = fields.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _mismatch(value, f"{where}.{key}", "float32")
    return float(value)


def integer(fields: Mapping[str, Any], key: str, where: str, default: int) -> int:
    """An int64 field: Go refuses `1.5` and even `1.0` (the literal must be an integer)."""
    value = fields.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not _INT64[0] <= value <= _INT64[1]:
        raise _mismatch(value, f"{where}.{key}", "int64")
    return value
