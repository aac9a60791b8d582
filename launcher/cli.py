"""`launcher`: parse torchrun's flags -> LaunchConfig -> Agent -> exit code.

The only place that installs signal handlers and configures logging. Handlers go in
before anything is started, so a signal at any moment stops the workers cleanly.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from launcher.errors import LauncherError


def _configure_logging() -> None:
    level = os.environ.get("LOGLEVEL", "WARNING").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING),
        format="[launcher] %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    _configure_logging()
    # Imported here so `--help` and argument errors cost as little as possible.
    from launcher.agent import Agent
    from launcher.flags import parse_args
    from launcher.inbox import SignalInbox
    from launcher.resolve import resolve

    inbox = SignalInbox()
    try:
        args = parse_args(args_list)
    except argparse.ArgumentError as err:
        print(f"launcher: error: {err}", file=sys.stderr)
        return 2
    try:
        config = resolve(args)
    except LauncherError as err:
        print(f"launcher: error: {err}", file=sys.stderr)
        return err.exit_code
    for flag, value in (("--numa-binding", args.numa_binding), ("--logs-specs", args.logs_specs)):
        if value:
            logging.getLogger("launcher").warning(
                "%s %s is accepted for compatibility but not applied by this launcher", flag, value
            )
    for sig in config.signals_to_handle:
        signal.signal(sig, lambda signum, _frame: os.write(inbox.write_fd, bytes([signum])))
    if "OMP_NUM_THREADS" not in os.environ and config.nproc_per_node > 1:
        logging.getLogger("launcher").warning(
            "setting OMP_NUM_THREADS=1 for each worker to avoid overloading the machine; "
            "set it yourself to tune it"
        )
    try:
        result = Agent(config, inbox=inbox).run()
    except LauncherError as err:
        print(f"launcher: error: {err}", file=sys.stderr)
        return err.exit_code
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
