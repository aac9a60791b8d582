"""The one validated, frozen description of a launch.

Everything the CLI accepts ends up here; every check that can fail on user input lives
here and raises ConfigError with a one-line message naming the flag and the fix.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntFlag
from pathlib import Path

from launcher.errors import ConfigError

DEFAULT_C10D_PORT = 29400
DEFAULT_ETCD_PORT = 2379
DEFAULT_MASTER_PORT = 29500
KNOWN_BACKENDS = ("static", "c10d", "etcd", "etcd-v2", "memory")


class Std(IntFlag):
    NONE = 0
    OUT = 1
    ERR = 2
    ALL = 3


# --containment (launcher.workers.containment) and --hang-dump (launcher.progress.dumps).
CONTAINMENT_MODES = ("auto", "cgroup", "subreaper")
DUMP_METHODS = ("auto", "py-spy", "faulthandler")


@dataclass(frozen=True, kw_only=True)
class StdSpec:
    """Which streams of which local rank go to files: `-r 3` or `-r 0:1,1:2`."""

    default: Std = Std.NONE
    per_rank: Mapping[int, Std] = field(default_factory=dict)

    def for_rank(self, local_rank: int) -> Std:
        return self.per_rank.get(local_rank, self.default)


def parse_std_spec(value: str, *, flag: str) -> StdSpec:
    value = value.strip()
    if re.fullmatch(r"[0-3]", value):
        return StdSpec(default=Std(int(value)))
    # torchrun accepts single-digit local ranks only; multi-digit ones are allowed here
    if re.fullmatch(r"(\d+:[0-3],)*\d+:[0-3]", value):
        per_rank = {int(k): Std(int(v)) for k, v in (item.split(":") for item in value.split(","))}
        return StdSpec(per_rank=per_rank)
    raise ConfigError(
        f"bad value {value!r}",
        flag=flag,
        fix="use 0-3 (0 none, 1 stdout, 2 stderr, 3 both) or a map like 0:1,1:3",
    )


# Names the password file when `--rdzv-conf username=...` comes without `password_file`: a
# password on the command line would show in `ps` to every user of the machine.
ETCD_PASSWORD_FILE_ENV = "LAUNCHER_ETCD_PASSWORD_FILE"


@dataclass(frozen=True, kw_only=True)
class EtcdOptions:
    """The etcd backend's `--rdzv-conf` keys (docs/etcd.md). Paths only: the files are read
    when the store opens, so the password never sits in the config."""

    protocol: str = "http"
    cacert: Path | None = None  # the CA bundle that verifies the members (default: system's)
    cert: Path | None = None  # client certificate and its key: mutual TLS
    key: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    prefix: str = "/launcher/"


@dataclass(frozen=True, kw_only=True)
class RendezvousOptions:
    """`--rdzv-conf` as typed fields; durations are float seconds."""

    join_timeout_s: float = 600.0
    last_call_timeout_s: float = 30.0
    close_timeout_s: float = 30.0
    heartbeat_timeout_s: float = 5.0
    # torchrun: 5 s x 3 = 15 s before a silent node is declared dead. Heartbeats here are
    # O(1) counter bumps, so they can afford 1 s x 3: node loss is handled within seconds.
    keep_alive_interval_s: float = 1.0
    keep_alive_max_attempt: int = 3
    read_timeout_s: float = 60.0
    # How long an agent retries a store it cannot reach (0: gives up at the first failure,
    # as torchrun). outage.py's DEFAULT_WINDOW_S says why 30 s; that package imports this
    # module, so the value is repeated here and a unit test keeps the two equal.
    store_outage_timeout_s: float = 30.0
    timeout_s: float = 900.0
    is_host: bool | None = None
    # A file holding the job secret that signs every rendezvous value (never the secret
    # itself: a command line is visible to every user of the machine through `ps`).
    secret_file: str | None = None
    store_type: str = "tcp"
    # Ours: where the store servers listen. "auto": the address the job reaches them by
    # (rendezvous/addresses.py); "all": every interface, as torch's servers.
    store_bind: str = "auto"
    rank: int | None = None
    etcd: EtcdOptions = field(default_factory=EtcdOptions)


_DURATION_KEYS = {
    "join_timeout": "join_timeout_s",
    "last_call_timeout": "last_call_timeout_s",
    "close_timeout": "close_timeout_s",
    "heartbeat_timeout": "heartbeat_timeout_s",
    "heartbeat": "heartbeat_timeout_s",
    "keep_alive_interval": "keep_alive_interval_s",
    "read_timeout": "read_timeout_s",
    "store_outage_timeout": "store_outage_timeout_s",
    "timeout": "timeout_s",
}
# A duration key for which 0 means something: give up at the first store failure.
_ZERO_ALLOWED = frozenset({"store_outage_timeout"})
# The etcd backend's keys -> EtcdOptions fields. torchrun's `etcd` backend spells them
# cacert/cert/key and its `etcd-v2` backend ca_cert/ssl_cert/ssl_cert_key: both work.
ETCD_KEYS = {
    "protocol": "protocol",
    "cacert": "cacert",
    "ca_cert": "cacert",
    "cert": "cert",
    "ssl_cert": "cert",
    "key": "key",
    "ssl_cert_key": "key",
    "username": "username",
    "password_file": "password_file",
    "etcd_prefix": "prefix",
}
_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n"}


def _as_bool(key: str, value: str) -> bool:
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(
        f"option {key!r} must be a boolean, got {value!r}",
        flag="--rdzv-conf",
        fix="use one of 1,true,yes / 0,false,no",
    )


def _as_number(key: str, value: str, *, integer: bool) -> float:
    try:
        number = float(int(value)) if integer else float(value)
    except ValueError:
        kind = "an integer" if integer else "a number of seconds"
        raise ConfigError(
            f"option {key!r} must be {kind}, got {value!r}", flag="--rdzv-conf"
        ) from None
    if key == "rank":
        return number
    if number < 0 or (number == 0 and key not in _ZERO_ALLOWED):
        which = "non-negative" if key in _ZERO_ALLOWED else "positive"
        raise ConfigError(f"option {key!r} must be {which}, got {value!r}", flag="--rdzv-conf")
    return number


def _as_store_bind(value: str) -> str:
    low = value.lower()
    if low in ("all", "0.0.0.0", "::", "[::]"):  # the spellings of "every interface"
        return "all"
    if low == "auto":
        return "auto"
    raise ConfigError(
        f"store_bind must be auto or all, got {value!r}",
        flag="--rdzv-conf",
        fix="auto: the address the job uses (default); all: every interface (0.0.0.0 and ::)",
    )


def _etcd_options(given: Mapping[str, tuple[str, str]]) -> EtcdOptions:
    """EtcdOptions from {field: (key as written, value)}, with the checks that need no file."""
    values = {name: value for name, (_, value) in given.items()}
    protocol = values.get("protocol", "http").lower()  # torch lower-cases it too
    if protocol not in ("http", "https"):
        raise ConfigError(f"protocol must be http or https, got {protocol!r}", flag="--rdzv-conf")
    tls = [key for name, (key, _) in given.items() if name in ("cacert", "cert", "key")]
    if tls and protocol != "https":
        raise ConfigError(
            f"{', '.join(tls)} need TLS, but protocol is {protocol}",
            flag="--rdzv-conf",
            fix="add protocol=https",
        )
    if ("cert" in given) != ("key" in given):
        present, missing = ("cert", "key") if "cert" in given else ("key", "cert")
        raise ConfigError(
            f"{given[present][0]} without {missing}: a client certificate needs its private key",
            flag="--rdzv-conf",
            fix="give both cert=PATH and key=PATH",
        )
    if "password_file" in given and "username" not in given:
        raise ConfigError(
            "password_file without username", flag="--rdzv-conf", fix="add username=NAME"
        )

    def path(name: str) -> Path | None:
        return Path(values[name]) if name in values else None

    return EtcdOptions(
        protocol=protocol,
        cacert=path("cacert"),
        cert=path("cert"),
        key=path("key"),
        username=values.get("username"),
        password_file=path("password_file"),
        prefix=values.get("prefix", "/launcher/"),
    )


def parse_rdzv_conf(text: str) -> RendezvousOptions:
    fields: dict[str, object] = {}
    etcd: dict[str, tuple[str, str]] = {}  # EtcdOptions field -> (key as written, value)
    for item in (part for part in text.split(",") if part.strip()):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not key or not sep:
            raise ConfigError(
                f"bad item {item.strip()!r}", flag="--rdzv-conf", fix="use key1=value1,key2=value2"
            )
        if not value:
            raise ConfigError(f"option {key!r} must have a value specified", flag="--rdzv-conf")
        if key in _DURATION_KEYS:
            fields[_DURATION_KEYS[key]] = _as_number(key, value, integer=False)
        elif key == "keep_alive_max_attempt":
            fields["keep_alive_max_attempt"] = int(_as_number(key, value, integer=True))
        elif key == "is_host":
            fields["is_host"] = _as_bool(key, value)
        elif key == "rank":
            fields["rank"] = int(_as_number(key, value, integer=True))
        elif key == "secret_file":
            fields["secret_file"] = value
        elif key == "store_type":
            if value not in ("tcp", "file"):
                raise ConfigError(
                    f"store_type must be tcp or file, got {value!r}", flag="--rdzv-conf"
                )
            fields["store_type"] = value
        elif key == "store_bind":
            fields["store_bind"] = _as_store_bind(value)
        elif key in ETCD_KEYS:
            name = ETCD_KEYS[key]
            if name in etcd and etcd[name][0] != key:
                raise ConfigError(
                    f"{etcd[name][0]} and {key} are two names for one option: give one",
                    flag="--rdzv-conf",
                )
            etcd[name] = (key, value)
        elif key == "password":
            raise ConfigError(
                "a password on the command line is visible to every user (ps)",
                flag="--rdzv-conf",
                fix=f"put it in a file: password_file=PATH (or ${ETCD_PASSWORD_FILE_ENV})",
            )
        else:
            known = sorted(
                [
                    *_DURATION_KEYS,
                    "keep_alive_max_attempt",
                    "is_host",
                    "rank",
                    "secret_file",
                    "store_type",
                    "store_bind",
                    *ETCD_KEYS,
                ]
            )
            raise ConfigError(
                f"unknown key {key!r}", flag="--rdzv-conf", fix=f"known keys: {', '.join(known)}"
            )
    return RendezvousOptions(etcd=_etcd_options(etcd), **fields)  # type: ignore[arg-type]


def parse_nnodes(text: str) -> tuple[int, int]:
    parts = text.split(":")
    if len(parts) > 2:
        raise ConfigError(
            f"{text!r} is not in MIN:MAX format", flag="--nnodes", fix="e.g. 2 or 1:4"
        )
    try:
        low, high = int(parts[0]), int(parts[-1])
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a number of nodes", flag="--nnodes", fix="e.g. 2 or 1:4"
        ) from None
    if low <= 0 or high < low:
        raise ConfigError(
            f"{text!r} needs 0 < MIN <= MAX",
            flag="--nnodes",
            fix=f"e.g. {max(low, 1)}:{max(high, low, 1)}",
        )
    return low, high


def parse_endpoint(text: str, *, default_port: int | None) -> tuple[str, int | None]:
    """`host[:port]`, `[v6]:port`; an empty text means localhost."""
    text = text.strip()
    if not text:
        return "localhost", default_port
    match = re.fullmatch(
        r"\[(?P<v6>[0-9a-fA-F:.%\w]+)\](?::(?P<p6>\d{1,5}))?", text
    ) or re.fullmatch(r"(?P<host>[\w.-]+)(?::(?P<port>\d{1,5}))?", text)
    if match is None:
        raise ConfigError(
            f"endpoint {text!r} is not host[:port]", flag="--rdzv-endpoint", fix="e.g. node1:29400"
        )
    host = match.groupdict().get("v6") or match.group("host")
    port_text = match.groupdict().get("p6") or match.groupdict().get("port")
    port = int(port_text) if port_text else default_port
    if port is not None and not 0 <= port < 65536:
        raise ConfigError(f"port {port} out of range in {text!r}", flag="--rdzv-endpoint")
    return host, port


def parse_signals(text: str) -> tuple[signal.Signals, ...]:
    found: list[signal.Signals] = []
    for name in (part.strip() for part in text.split(",") if part.strip()):
        try:
            found.append(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
        except KeyError:
            raise ConfigError(
                f"unknown signal {name!r}", flag="--signals-to-handle", fix="e.g. SIGTERM,SIGINT"
            ) from None
    uncatchable = [s.name for s in found if s in (signal.SIGKILL, signal.SIGSTOP)]
    if uncatchable:
        raise ConfigError(f"{', '.join(uncatchable)} cannot be handled", flag="--signals-to-handle")
    return tuple(found)


@dataclass(frozen=True, kw_only=True)
class Entrypoint:
    """What each worker runs. `argv` may contain the `${local_rank}` macro."""

    argv: tuple[str, ...]
    name: str  # as torchrun names it in "<name> FAILED"
    kind: str  # "python" | "module" | "binary" | "run_path"


@dataclass(frozen=True, kw_only=True)
class LaunchConfig:
    """Every flag, resolved: what the agent runs with."""

    min_nodes: int
    max_nodes: int
    nproc_per_node: int
    rdzv_backend: str
    rdzv_host: str
    rdzv_port: int | None
    rdzv_endpoint_text: str = ""  # as given; etcd accepts several, comma separated
    run_id: str
    rdzv: RendezvousOptions
    standalone: bool
    max_restarts: int
    monitor_interval_s: float
    start_method: str
    role: str
    entrypoint: Entrypoint
    log_dir: Path | None  # None: a fresh temp dir; /dev/null: no files at all
    redirects: StdSpec
    tee: StdSpec
    local_ranks_filter: frozenset[int] | None
    duplicate_stdout_filters: tuple[str, ...] = ()
    duplicate_stderr_filters: tuple[str, ...] = ()
    node_rank: int
    master_addr: str
    master_port: int
    local_addr: str | None
    signals_to_handle: tuple[signal.Signals, ...]
    signals_to_handle_text: str
    shutdown_timeout_s: float
    restart_grace_s: float
    virtual_local_rank: bool
    event_log: Path | None
    event_log_console: bool = False
    containment: str = "auto"  # auto, cgroup or subreaper (launcher.workers.containment)
    hang_timeout_s: float = 300.0  # 0: hang detection off (launcher.progress.detector)
    hang_dump: str = "auto"  # auto, py-spy or faulthandler (launcher.progress.dumps)
    straggler_window_s: float = 60.0  # launcher.progress.stragglers

    @property
    def rdzv_endpoint(self) -> str:
        host = f"[{self.rdzv_host}]" if ":" in self.rdzv_host else self.rdzv_host
        return host if self.rdzv_port is None else f"{host}:{self.rdzv_port}"

    @property
    def logs_disabled(self) -> bool:
        return self.log_dir is not None and str(self.log_dir) == os.devnull
