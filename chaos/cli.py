"""`chaos`: the fault-injection harness.

    chaos run SCENARIO.yaml [--backend local|netns|docker] [--seed N] [--launcher torchrun]
    chaos validate FILE...          check scenarios without running them
    chaos check RUN_DIR             re-judge a saved run from its files
    chaos sim --nodes N ...         the rendezvous simulator (chaos sim -h)
    chaos proxy serve [--port 8474] a TCP proxy with Toxiproxy's HTTP API (docs/proxy.md)

Each subcommand lives in its own module and is imported only when used.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

USAGE = __doc__.split("\n\n")[1] if __doc__ else ""


def _entry(name: str) -> Callable[[list[str]], int]:
    if name == "run":
        from chaos.run_cli import run_main

        return run_main
    if name == "validate":
        from chaos.scenario.cli_validate import validate_main

        return validate_main
    if name == "check":
        from chaos.checkers.cli_check import check_main

        return check_main
    if name == "proxy":
        from chaos.proxy.cli import main as proxy_main

        return proxy_main
    from chaos.sim.cli import main as sim_main

    return sim_main


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage:\n" + USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in ("run", "validate", "check", "sim", "proxy"):
        print(
            f"chaos: error: unknown command {command!r} (use run, validate, check, sim or proxy)",
            file=sys.stderr,
        )
        return 2
    return _entry(command)(rest)


if __name__ == "__main__":
    raise SystemExit(main())
