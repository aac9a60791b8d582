"""Read error files written by `record` (ours or torch's); write the agent-side copy.

Two shapes exist in the wild and both are accepted:

    nested (what `record` writes):
        {"message": {"message": "ValueError: boom",
                     "extraInfo": {"py_callstack": "Traceback ...", "timestamp": "1700000000"}}}
    flat (older/custom writers):
        {"message": "something failed", "timestamp": 1700000000}

torch's agent crashes on a corrupt file (a worker killed mid-write leaves one). Here reading
never raises: a bad file becomes an `ErrorRecord` whose message says what is wrong with it.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.failures.record import write_json_atomically

__all__ = ["ErrorRecord", "read_error_file", "write_parent_error_file"]

# What torch shows when a nested message object has neither traceback nor message.
_NOT_AVAILABLE = "<N/A>"


@dataclass(frozen=True, kw_only=True)
class ErrorRecord:
    """One worker's error file, parsed.

    `message` is the one-line message ("ValueError: boom"), `traceback` the recorded Python
    stack (None when the file has none), `timestamp` epoch seconds (0 when unknown) and `raw`
    the parsed JSON object ({} when the file could not be parsed).
    """

    message: str
    traceback: str | None = None
    timestamp: int = 0
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def is_flat(self) -> bool:
        """True for the flat shape, whose message torch prints without re-indenting it."""
        return isinstance(self.raw.get("message"), str)


def read_error_file(path: Path) -> ErrorRecord | None:
    """Parse the error file at `path`; None when there is no such file. Never raises."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        return _unreadable(path, f"{type(e).__name__}: {e.strerror or e}")
    if not data.strip():
        return _unreadable(path, "the file is empty")
    try:
        # json.loads on bytes detects UTF-8/16/32; decode errors are ValueErrors too.
        parsed = json.loads(data)
    except (ValueError, RecursionError) as e:
        return _unreadable(path, f"invalid JSON ({e})")
    if not isinstance(parsed, dict):
        return _unreadable(path, f"expected a JSON object, found {type(parsed).__name__}")
    return _from_json(path, parsed)


def write_parent_error_file(record: ErrorRecord, dst: Path, exitcode: int) -> None:
    """Write the agent's copy of a root-cause error file to `dst`, replacing any file there.

    Like torch, the child's JSON is copied with `"errorCode": exitcode` added inside the
    `message` object, because a worker killed by a signal cannot record its own exit code.
    No code is added for exitcode 0 or for the flat shape. A record read from a corrupt file
    is written in the nested shape so schedulers still get a message. Raises OSError.
    """
    if isinstance(record.raw.get("message"), dict | str):
        data = copy.deepcopy(record.raw)
    else:
        data = _nested_shape(record)
    message = data["message"]
    if exitcode != 0 and isinstance(message, dict):
        message["errorCode"] = exitcode
    write_json_atomically(dst, data)


def _from_json(path: Path, raw: dict[str, Any]) -> ErrorRecord:
    message = raw.get("message")
    top_timestamp = _as_timestamp(raw.get("timestamp"))
    if isinstance(message, str):
        return ErrorRecord(message=message, timestamp=top_timestamp, raw=raw)
    if not isinstance(message, dict):
        problem = "no 'message' field" if message is None else "'message' is not text or object"
        return _unreadable(path, problem, raw=raw)
    extra = message.get("extraInfo")
    extra = extra if isinstance(extra, dict) else {}
    text = message.get("message")
    callstack = extra.get("py_callstack")
    return ErrorRecord(
        message=text if isinstance(text, str) else _NOT_AVAILABLE,
        traceback=callstack if isinstance(callstack, str) else None,
        timestamp=_as_timestamp(extra.get("timestamp")) or top_timestamp,
        raw=raw,
    )


def _as_timestamp(value: object) -> int:
    """Epoch seconds from an int, a float or a numeric string; 0 for anything else."""
    if isinstance(value, bool):  # bool is an int subclass, but never a timestamp
        return 0
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return 0
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return int(value)
    return 0


def _unreadable(path: Path, reason: str, *, raw: dict[str, Any] | None = None) -> ErrorRecord:
    return ErrorRecord(message=f"error file {path} is unreadable: {reason}", raw=raw or {})


def _nested_shape(record: ErrorRecord) -> dict[str, Any]:
    extra: dict[str, Any] = {"timestamp": str(record.timestamp)}
    if record.traceback is not None:
        extra = {"py_callstack": record.traceback, **extra}
    return {"message": {"message": record.message, "extraInfo": extra}}
