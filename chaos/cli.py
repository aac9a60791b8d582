"""`chaos`: the fault-injection harness (not built yet: see issue "Chaos harness")."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print("usage: chaos run SCENARIO.yaml | chaos validate FILE | chaos check RUN_DIR")
        print("The chaos harness is not built yet; only the launcher is available.")
        return 0
    print("chaos: not built yet; the launcher is available as `launcher`", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
