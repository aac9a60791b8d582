"""The scenario's launcher_args as torchrun must get them.

The launcher's own flags (`--hang-timeout`, `--restart-grace`, ...: "launcher extensions" in
its --help) make torchrun exit 2 at once with "unrecognized arguments", so a scenario written
for the launcher could never judge torchrun. For `--launcher torchrun` they are dropped with
their values: torchrun then runs the same job without those features, which is the
comparison the catalog wants. Spelled out here, not read from launcher.flags: the harness
imports only launcher.events.

`--rdzv-conf` is pulled out of the args and merged into one flag with the keys the harness
adds (is_host, etcd's TLS files), spelled as torchrun's etcd-v2 backend wants them there.
"""

from __future__ import annotations

from collections.abc import Sequence

_RDZV_CONF_FLAGS = ("--rdzv-conf", "--rdzv_conf")
# torchrun's etcd-v2 backend (the one that speaks to etcd 3.4+) spells the TLS keys its way.
_ETCD_V2_KEYS = {"cacert": "ca_cert", "cert": "ssl_cert", "key": "ssl_cert_key"}
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


def split_rdzv_conf(args: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Pulls every --rdzv-conf out of `args` (so the harness can add keys to one merged flag)."""
    rest: list[str] = []
    conf: dict[str, str] = {}
    items = iter(args)
    for arg in items:
        value: str | None = None
        if arg in _RDZV_CONF_FLAGS:
            value = next(items, "")
        elif arg.startswith(tuple(f"{flag}=" for flag in _RDZV_CONF_FLAGS)):
            value = arg.split("=", 1)[1]
        if value is None:
            rest.append(arg)
            continue
        for pair in filter(None, value.split(",")):
            key, _, val = pair.partition("=")
            conf[key.strip()] = val.strip()
    return rest, conf


def torch_etcd_v2_conf(conf: dict[str, str]) -> dict[str, str]:
    """`--rdzv-conf` keys as torchrun's etcd-v2 backend names them."""
    return {_ETCD_V2_KEYS.get(key, key): value for key, value in conf.items()}
