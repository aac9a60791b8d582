"""The scenario's launcher_args as torchrun must get them.

The launcher's own flags (`--hang-timeout`, `--restart-grace`, ...: "launcher extensions" in
its --help) make torchrun exit 2 at once with "unrecognized arguments", so a scenario written
for the launcher could never judge torchrun. For `--launcher torchrun` they are dropped with
their values: torchrun then runs the same job without those features, which is the
comparison the catalog wants. Spelled out here, not read from launcher.flags: the harness
imports only launcher.events.
"""

from __future__ import annotations

from collections.abc import Sequence

# Every launcher extension takes a value (`--event-log` is the harness's own flag).
EXTENSION_FLAGS = (
    "--restart-grace", "--containment", "--hang-timeout", "--hang-dump", "--straggler-window",
)  # fmt: skip


def without_extensions(args: Sequence[str]) -> list[str]:
    """`args` less every launcher extension flag and its value (`--f V` or `--f=V`; dashes or
    underscores, as both launchers accept)."""
    out: list[str] = []
    items = iter(args)
    for arg in items:
        flag, eq, _ = arg.partition("=")
        if flag.replace("_", "-") not in EXTENSION_FLAGS or not flag.startswith("--"):
            out.append(arg)
        elif not eq:
            next(items, None)  # its value is the next word
    return out
