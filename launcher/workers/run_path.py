"""`--run-path` entrypoint: run the script with runpy, wrapped by `record`, like torchrun's
`run_script_path` function entrypoint (but as a plain process, so it is stopped, logged
and reaped exactly like any other worker)."""

from __future__ import annotations

import runpy
import sys

from launcher.failures.record import record


@record
def run_script_path(script: str, *args: str) -> None:
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    run_script_path(*sys.argv[1:])
