"""torchrun's command line, flag for flag: dash and underscore forms, unique prefixes,
`PET_<DEST>` environment defaults (CLI > PET_* > built-in default).

Our own additions are grouped under "launcher extensions" in --help.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from launcher.config import CONTAINMENT_MODES, DUMP_METHODS

EXTENSION = "[launcher extension] "


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (exit 2, like argparse)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _EnvDefault(argparse.Action):
    """A valued flag whose default comes from PET_<DEST> when set."""

    def __init__(self, *, dest: str, default: Any = None, environ: Mapping[str, str], **kw: Any):
        env_name = f"PET_{dest.upper()}"
        if env_name in environ:
            default = environ[env_name]
        super().__init__(dest=dest, default=default, **kw)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)


class _EnvFlag(argparse.Action):
    """A boolean flag; PET_<DEST> is read as an integer (1 true, 0 false), like torchrun."""

    def __init__(self, *, dest: str, environ: Mapping[str, str], **kw: Any):
        env_name = f"PET_{dest.upper()}"
        default = False
        if env_name in environ:
            try:
                default = bool(int(environ[env_name]))
            except ValueError:
                raise argparse.ArgumentError(
                    None, f"{env_name}={environ[env_name]!r} must be 0 or 1"
                ) from None
        super().__init__(dest=dest, default=default, const=True, nargs=0, **kw)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, True)


def _flag_names(dash: str, *, underscore: bool = True, short: str | None = None) -> list[str]:
    names = [short] if short else []
    names.append(dash)
    if underscore and "-" in dash[2:]:
        names.append("--" + dash[2:].replace("-", "_"))
    return names


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    parser = _Parser(
        prog="launcher",
        description="Elastic launcher for distributed PyTorch training, compatible with torchrun.",
    )

    def valued(dash: str, *, default: Any, help: str, underscore: bool = True, **kw: Any) -> None:
        dest = dash[2:].replace("-", "_")
        parser.add_argument(
            *_flag_names(dash, underscore=underscore, short=kw.pop("short", None)),
            action=_EnvDefault,
            dest=dest,
            default=default,
            environ=env,
            help=help,
            **kw,
        )

    def boolean(dash: str, *, help: str, underscore: bool = True, short: str | None = None) -> None:
        dest = dash[2:].replace("-", "_")
        parser.add_argument(
            *_flag_names(dash, underscore=underscore, short=short),
            action=_EnvFlag,
            dest=dest,
            environ=env,
            help=help,
        )

    valued("--nnodes", default="1:1", underscore=False, help="Number of nodes: N or MIN:MAX.")
    valued("--nproc-per-node", default="1", help="Workers per node: int, cpu, gpu, xpu or auto.")
    valued(
        "--rdzv-backend", default="static", help="Rendezvous backend: static, c10d, etcd, etcd-v2."
    )
    valued("--rdzv-endpoint", default="", help="Rendezvous endpoint host[:port].")
    valued("--rdzv-id", default="none", help="Job id shared by all nodes.")
    valued(
        "--rdzv-conf",
        default="",
        help="Rendezvous options key1=value1,key2=value2, e.g. join_timeout, "
        "last_call_timeout, keep_alive_interval, read_timeout, store_outage_timeout "
        "(seconds to keep retrying an unreachable store, default 30; 0: give up at once); "
        "etcd: protocol=https, cacert, cert, key, username, password_file, etcd_prefix "
        "(docs/etcd.md); see docs/rendezvous.md.",
    )
    boolean("--standalone", underscore=False, help="Single-node job on a free local port.")
    valued("--max-restarts", default=0, type=int, help="Worker group restarts allowed on failure.")
    valued(
        "--monitor-interval",
        default=0.1,
        type=float,
        help="Seconds between membership checks (worker exits are noticed at once).",
    )
    valued(
        "--start-method",
        default="spawn",
        choices=["spawn", "fork", "forkserver"],
        help="Multiprocessing start method (only used with --run-path).",
    )
    valued(
        "--event-log-handler",
        default="null",
        help="Agent event destination: null, console or dynamic_rendezvous.",
    )
    valued("--role", default="default", underscore=False, help="Worker role name.")
    boolean("--module", underscore=False, short="-m", help="Run the script as python -m <module>.")
    boolean("--no-python", help="Execute the script directly, not through python.")
    boolean("--run-path", help="Run the script with runpy.run_path, wrapped by record.")
    valued("--log-dir", default=None, help="Base directory for worker logs and error files.")
    valued(
        "--redirects",
        short="-r",
        default="0",
        underscore=False,
        help="Redirect worker streams to files: 0-3 or local_rank:value,...",
    )
    valued(
        "--tee",
        short="-t",
        default="0",
        underscore=False,
        help="Redirect to files and echo with a [role<local_rank>]: prefix.",
    )
    valued("--local-ranks-filter", default="", help="Comma list of local ranks shown on console.")
    valued(
        "--duplicate-stdout-filters",
        default="",
        help="Tee'd stdout lines containing any of these also go to filtered_stdout.log.",
    )
    valued(
        "--duplicate-stderr-filters",
        default="",
        help="Tee'd stderr lines containing any of these also go to filtered_stderr.log.",
    )
    valued("--node-rank", default=0, type=int, help="Node rank (static backend).")
    valued("--master-addr", default="127.0.0.1", help="Master address (static backend).")
    valued("--master-port", default=None, type=int, help="Master port (static backend).")
    valued("--local-addr", default=None, help="This node's address (default: its FQDN).")
    parser.add_argument(
        *_flag_names("--logs-specs"),
        dest="logs_specs",
        default=None,
        help="torchrun.logs_specs entry point name (accepted; layout is ours).",
    )
    parser.add_argument(
        *_flag_names("--numa-binding"),
        dest="numa_binding",
        default=None,
        choices=["node", "socket", "exclusive", "core-complex"],
        help="NUMA binding of GPU workers.",
    )
    valued(
        "--signals-to-handle",
        default="SIGTERM,SIGINT,SIGHUP,SIGQUIT",
        help="Signals that stop the workers gracefully and end the launcher.",
    )
    valued(
        "--shutdown-timeout",
        default=None,
        type=int,
        help="Seconds between the stop signal and SIGKILL (default 30).",
    )
    boolean("--virtual-local-rank", help="Every worker sees LOCAL_RANK=0 and one device.")

    ext = parser.add_argument_group("launcher extensions (not in torchrun)")
    ext.add_argument(
        *_flag_names("--event-log"),
        dest="event_log",
        default=env.get("PET_EVENT_LOG"),
        help=EXTENSION + "Also append the JSONL event log to this file.",
    )
    ext.add_argument(
        *_flag_names("--restart-grace"),
        dest="restart_grace",
        type=float,
        default=float(env.get("PET_RESTART_GRACE", "30")),
        help=EXTENSION + "Seconds between SIGTERM and SIGKILL when stopping workers "
        "for a restart (torchrun: 30, fixed).",
    )

    ext.add_argument(
        *_flag_names("--containment"),
        dest="containment",
        choices=list(CONTAINMENT_MODES),
        default=env.get("PET_CONTAINMENT", "auto"),
        help=EXTENSION + "How every process the workers start is kept within reach, even one "
        "that detaches (setsid, double fork): a cgroup v2 per worker group (needs root or a "
        "delegated cgroup), or the agent as child subreaper; auto takes the first available.",
    )

    ext.add_argument(
        *_flag_names("--hang-timeout"),
        dest="hang_timeout",
        default=env.get("PET_HANG_TIMEOUT", "300"),
        help=EXTENSION + "Seconds a rank may go without progress (launcher.progress.beat, "
        "once armed by its first beat) before the job is declared hung: stacks of every "
        "rank are dumped, then a charged restart. The timeout grows to 5x the longest step "
        "seen. 0 turns it off. Default 300: below NCCL's 10-minute collective timeout, so "
        "every rank is still alive to be dumped.",
    )
    ext.add_argument(
        *_flag_names("--hang-dump"),
        dest="hang_dump",
        choices=list(DUMP_METHODS),
        default=env.get("PET_HANG_DUMP", "auto"),
        help=EXTENSION + "How stacks are taken on a hang: py-spy (pip install "
        "launcher[debug]; the process keeps running) or faulthandler (SIGABRT: the worker "
        "prints its threads' stacks and dies); auto tries py-spy first.",
    )

    ext.add_argument(
        *_flag_names("--straggler-window"),
        dest="straggler_window",
        default=env.get("PET_STRAGGLER_WINDOW", "60"),
        help=EXTENSION + "Seconds per straggler window: a rank whose progress.section() "
        "median stays below 0.75 of the fastest rank's for 3 windows is reported "
        "(straggler.rank.detected; nothing is acted on).",
    )

    parser.add_argument("training_script", help="Script, module (-m) or binary (--no-python).")
    parser.add_argument("training_script_args", nargs=argparse.REMAINDER)
    return parser


def parse_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    return build_parser(environ).parse_args(list(argv))
