"""The `record` decorator for training scripts: uncaught exceptions go to an error file.

Drop-in for torch's `torch.distributed.elastic.multiprocessing.errors.record`: same behaviour,
same file. This module uses the standard library only, because user scripts import it and it
must not pull in torch or the rest of the launcher.

The file named by `TORCHELASTIC_ERROR_FILE` gets exactly what torch's handler writes (compact
`json.dumps` separators, ASCII-escaped, no trailing newline):

    {"message": {"message": "<ExcType>: <str(exc)>",
                 "extraInfo": {"py_callstack": "<traceback.format_exception text>",
                               "timestamp": "<int epoch seconds, as a string>"}}}
"""

from __future__ import annotations

import faulthandler
import functools
import json
import os
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

__all__ = ["ERROR_FILE_ENV", "error_payload", "record", "write_json_atomically"]

ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"

_P = ParamSpec("_P")
_R = TypeVar("_R")


def record(f: Callable[_P, _R]) -> Callable[_P, _R | None]:
    """Wrap a script's main function so an uncaught exception is written to the error file.

    - `faulthandler` is enabled for all threads, so a segfault still leaves Python stacks.
    - `SystemExit(0)` returns None: a `runpy`-style entrypoint must not die on a clean exit.
    - any other `SystemExit` (including `sys.exit()` with no code, exactly like torch) is
      re-raised and no file is written: the exit code is the message.
    - any other `Exception` is written to `$TORCHELASTIC_ERROR_FILE` (when set and not empty)
      and re-raised. `KeyboardInterrupt` and other `BaseException`s pass through unrecorded.
    """

    @functools.wraps(f)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R | None:
        _enable_faulthandler()
        try:
            # Spelled like torch's wrapper so both decorators leave the same frame text in the
            # recorded traceback (only the file name and line number differ).
            return f(*args, **kwargs)
        except SystemExit as se:
            if se.code == 0:
                return None
            raise
        except Exception as e:
            _record_exception(e)
            raise

    return wrapper


def error_payload(exc: BaseException, *, now_s: float) -> dict[str, object]:
    """The JSON object torch writes for `exc` (the traceback is taken from `exc` itself)."""
    return {
        "message": {
            "message": f"{type(exc).__name__}: {exc}",
            "extraInfo": {
                "py_callstack": "".join(traceback.format_exception(exc)),
                "timestamp": str(int(now_s)),
            },
        }
    }


def write_json_atomically(path: Path, data: object) -> None:
    """Replace `path` with `json.dumps(data)` so a reader never sees a half-written file.

    The temporary file sits next to `path` so the rename stays on one filesystem. No fsync: the
    reader is the agent on the same machine, which sees the page cache; a power cut loses the
    job anyway. Raises OSError when the directory is missing or not writable.
    """
    text = json.dumps(data)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        # "x": create exclusively, with the same 0o666 & ~umask mode torch's open("w") gives.
        with open(tmp, "x", encoding="utf-8") as fp:
            fp.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _enable_faulthandler() -> None:
    try:
        faulthandler.enable(all_threads=True)
    except Exception as e:
        # No usable stderr (sys.stderr None, or without a file descriptor under some runners):
        # run on without it rather than break the user's script, like torch.
        warnings.warn(f"Unable to enable fault handler. {type(e).__name__}: {e}", stacklevel=3)


def _record_exception(exc: Exception) -> None:
    path = os.environ.get(ERROR_FILE_ENV, "")
    if not path:
        return
    try:
        write_json_atomically(Path(path), error_payload(exc, now_s=time.time()))
    except OSError as write_error:
        # torch lets this OSError replace the user's exception; we keep the user's exception
        # (the one worth reading) and say why the file is missing.
        warnings.warn(
            f"Unable to write error to file {path}. {type(write_error).__name__}: {write_error}",
            stacklevel=3,
        )
