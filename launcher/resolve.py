"""Parsed flags -> LaunchConfig, applying torchrun's derived rules (implicit standalone,
endpoint default ports, nproc keywords) and rejecting bad input before anything starts."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.machinery
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from launcher.config import (
    CONTAINMENT_MODES,
    DEFAULT_C10D_PORT,
    DEFAULT_ETCD_PORT,
    DEFAULT_MASTER_PORT,
    DUMP_METHODS,
    ETCD_PASSWORD_FILE_ENV,
    KNOWN_BACKENDS,
    Entrypoint,
    EtcdOptions,
    LaunchConfig,
    RendezvousOptions,
    parse_endpoint,
    parse_nnodes,
    parse_rdzv_conf,
    parse_signals,
    parse_std_spec,
)
from launcher.errors import ConfigError
from launcher.secret import read_secret, secret_file


def _etcd_access(
    rdzv: RendezvousOptions, backend: str, env: Mapping[str, str]
) -> RendezvousOptions:
    """The etcd keys only where etcd is the backend; the password file named by the
    environment when the command line gives a username without one."""
    etcd = rdzv.etcd
    if not backend.startswith("etcd"):
        if etcd != EtcdOptions():
            raise ConfigError(
                f"the etcd options (protocol, cacert, cert, key, username, password_file, "
                f"etcd_prefix) do not apply to the {backend} backend",
                flag="--rdzv-conf",
                fix="use --rdzv-backend etcd, or drop them",
            )
        return rdzv
    if etcd.username is None or etcd.password_file is not None:
        return rdzv
    named = env.get(ETCD_PASSWORD_FILE_ENV, "")
    if not named:
        raise ConfigError(
            f"username={etcd.username} needs a password",
            flag="--rdzv-conf",
            fix=f"add password_file=PATH, or set {ETCD_PASSWORD_FILE_ENV}=PATH",
        )
    etcd = dataclasses.replace(etcd, password_file=Path(named))
    return dataclasses.replace(rdzv, etcd=etcd)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cuda_present() -> bool:
    # Checked before importing torch so that `auto` on a CPU machine stays fast.
    return os.path.exists("/proc/driver/nvidia/gpus") or os.path.exists("/dev/nvidia0")


def _device_count(kind: str) -> int:
    import torch  # only for gpu/xpu/auto on accelerator machines

    module = getattr(torch, kind, None)
    if module is None or not module.is_available():
        return 0
    return int(module.device_count())


def resolve_nproc(value: str) -> int:
    value = value.strip()
    try:
        count = int(value)
    except ValueError:
        if value == "cpu":
            count = _cpu_count()
        elif value in ("gpu", "xpu"):
            count = (
                _device_count("cuda" if value == "gpu" else "xpu")
                if (value == "xpu" or _cuda_present())
                else 0
            )
            if count == 0:
                raise ConfigError(
                    f"{value} requested but no {value.upper()} device is available",
                    flag="--nproc-per-node",
                    fix="use an integer or cpu",
                ) from None
        elif value == "auto":
            count = (_device_count("cuda") if _cuda_present() else 0) or _cpu_count()
        else:
            raise ConfigError(
                f"unsupported value {value!r}",
                flag="--nproc-per-node",
                fix="use an integer, cpu, gpu, xpu or auto",
            ) from None
    if count <= 0:
        raise ConfigError(f"must be at least 1, got {value!r}", flag="--nproc-per-node")
    return count


def _entrypoint(args: argparse.Namespace, environ: Mapping[str, str]) -> Entrypoint:
    script: str = args.training_script
    rest = tuple(args.training_script_args)
    if args.module and args.no_python:
        raise ConfigError("--no-python and -m/--module cannot be used together", flag="-m")
    if args.run_path:
        _require_file(script)
        python = environ.get("PYTHON_EXEC", sys.executable)
        return Entrypoint(
            argv=(python, "-u", "-m", "launcher.workers.run_path", script, *rest),
            name="run_script_path",
            kind="run_path",
        )
    if args.no_python:
        if shutil.which(script) is None:
            raise ConfigError(
                f"{script!r} is not an executable file or a command on PATH",
                flag="--no-python",
                fix="check the path and its execute permission",
            )
        return Entrypoint(argv=(script, *rest), name=script, kind="binary")
    python = environ.get("PYTHON_EXEC", sys.executable)
    if args.module:
        top = script.split(".", maxsplit=1)[0]
        # Only the top-level package is located: importing it could be slow (torch).
        if importlib.machinery.PathFinder.find_spec(top, [os.getcwd(), *sys.path]) is None and (
            top not in sys.builtin_module_names
        ):
            raise ConfigError(
                f"module {script!r} not found", flag="-m", fix="check the name and PYTHONPATH"
            )
        return Entrypoint(argv=(python, "-u", "-m", script, *rest), name=script, kind="module")
    _require_file(script)
    return Entrypoint(argv=(python, "-u", script, *rest), name=script, kind="python")


def _require_file(script: str) -> None:
    path = Path(script)
    if not path.exists():
        raise ConfigError(
            f"training script {script!r} does not exist",
            fix="check the path (relative to the current directory), or pass -m for a module",
        )
    if not path.is_file() and not (path / "__main__.py").is_file():
        raise ConfigError(f"training script {script!r} is not a file")


def _log_dir(value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if str(path) == os.devnull:
        return path
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{value!r} exists and is not a directory", flag="--log-dir")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"{value!r} cannot be created: {str(probe)!r} is not a directory", flag="--log-dir"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{value!r} is not writable (nearest existing directory {str(probe)!r})",
            flag="--log-dir",
            fix="choose a directory you can write to",
        )
    return path


def _ranks_filter(text: str) -> frozenset[int] | None:
    if not text.strip():
        return None
    try:
        return frozenset(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a comma list of local ranks", flag="--local-ranks-filter"
        ) from None


def _dup_filters(text: str) -> tuple[str, ...]:
    # torchrun: comma separated, a doubled comma stands for a literal comma
    marker = "\0"
    return tuple(p.replace(marker, ",") for p in text.replace(",,", marker).split(",") if p)


def _seconds(text: str, flag: str, also: str, *, low: float = 0.0) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= low or value == float("inf"):
        raise ConfigError(
            f"{text!r} is not a number of seconds >= {low:g}",
            flag=flag,
            fix=f"e.g. {flag} 600" + (f", {also}" if also else ""),
        )
    return value


def _choice(text: str, allowed: tuple[str, ...], flag: str) -> str:
    if text not in allowed:
        raise ConfigError(f"unknown value {text!r}", fix=f"use {', '.join(allowed)}", flag=flag)
    return text


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> LaunchConfig:
    env = os.environ if environ is None else environ
    min_nodes, max_nodes = parse_nnodes(str(args.nnodes))
    nproc = resolve_nproc(str(args.nproc_per_node))
    if args.max_restarts < 0:
        raise ConfigError(f"must be >= 0, got {args.max_restarts}", flag="--max-restarts")
    if args.monitor_interval <= 0:
        raise ConfigError(f"must be > 0, got {args.monitor_interval}", flag="--monitor-interval")
    backend = str(args.rdzv_backend)
    if backend not in KNOWN_BACKENDS:
        raise ConfigError(
            f"unknown backend {backend!r}",
            flag="--rdzv-backend",
            fix=f"use one of {KNOWN_BACKENDS}",
        )
    rdzv = parse_rdzv_conf(str(args.rdzv_conf))
    secret_path = secret_file(rdzv.secret_file, env)
    if secret_path is not None:
        read_secret(secret_path)  # at start: a missing or bad file starts nothing
        rdzv = dataclasses.replace(rdzv, secret_file=secret_path)
    run_id = str(args.rdzv_id)
    endpoint_text = str(args.rdzv_endpoint)
    master_port = args.master_port
    standalone = bool(args.standalone)
    implicit = (
        backend == "static" and not endpoint_text.strip() and master_port is None and max_nodes == 1
    )
    if standalone or implicit:
        standalone = True
        import uuid  # only here: its import (platform included) costs every agent's start

        backend, endpoint_text, run_id = "c10d", "localhost:0", str(uuid.uuid4())
        if max_nodes != 1:
            raise ConfigError("--standalone runs one node", flag="--nnodes", fix="use --nnodes 1")
    if master_port is None:
        master_port = DEFAULT_MASTER_PORT
    if not 0 < master_port < 65536:
        raise ConfigError(f"port {master_port} out of range", flag="--master-port")
    if backend == "static":
        if not endpoint_text.strip():
            endpoint_text = f"{args.master_addr}:{master_port}"
        host, port = parse_endpoint(endpoint_text, default_port=None)
        if port is None:
            raise ConfigError(
                f"port is missing in endpoint {endpoint_text!r}",
                flag="--rdzv-endpoint",
                fix="add :PORT or use --master-port",
            )
        if not 0 <= args.node_rank < max_nodes:
            raise ConfigError(f"{args.node_rank} is not in 0..{max_nodes - 1}", flag="--node-rank")
    else:
        default = DEFAULT_ETCD_PORT if backend.startswith("etcd") else DEFAULT_C10D_PORT
        first = endpoint_text.split(",")[0] if backend.startswith("etcd") else endpoint_text
        if "," in endpoint_text and not backend.startswith("etcd"):
            raise ConfigError(
                f"{backend} takes one endpoint, got {endpoint_text!r}",
                flag="--rdzv-endpoint",
                fix="several endpoints are for an etcd cluster (--rdzv-backend etcd)",
            )
        host, port = parse_endpoint(first, default_port=default)
        for extra in endpoint_text.split(",")[1:]:
            parse_endpoint(extra, default_port=default)
    rdzv = _etcd_access(rdzv, backend, env)
    if backend == "memory" and max_nodes > 1:
        raise ConfigError(
            "the memory backend runs one node", flag="--rdzv-backend", fix="use c10d or etcd"
        )
    shutdown = args.shutdown_timeout
    if shutdown is None:
        shutdown = env.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "30")
    try:
        shutdown_s = float(shutdown)
    except ValueError:
        raise ConfigError(f"{shutdown!r} is not a number", flag="--shutdown-timeout") from None
    if shutdown_s < 0:
        raise ConfigError("shutdown_timeout must be non-negative", flag="--shutdown-timeout")
    if args.restart_grace < 0:
        raise ConfigError("must be non-negative", flag="--restart-grace")
    if args.event_log_handler not in ("null", "console", "dynamic_rendezvous"):
        raise ConfigError(
            f"unknown handler {args.event_log_handler!r}",
            flag="--event-log-handler",
            fix="use null, console or dynamic_rendezvous",
        )
    signals_text = str(args.signals_to_handle)
    event_log = Path(args.event_log) if args.event_log else None
    if event_log is not None and event_log.is_dir():
        raise ConfigError(f"{str(event_log)!r} is a directory", flag="--event-log")
    return LaunchConfig(
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        nproc_per_node=nproc,
        rdzv_backend=backend,
        rdzv_host=host,
        rdzv_port=port,
        rdzv_endpoint_text=endpoint_text.strip(),
        run_id=run_id,
        rdzv=rdzv,
        standalone=standalone,
        max_restarts=int(args.max_restarts),
        monitor_interval_s=float(args.monitor_interval),
        start_method=str(args.start_method),
        role=str(args.role),
        entrypoint=_entrypoint(args, env),
        log_dir=_log_dir(args.log_dir),
        redirects=parse_std_spec(str(args.redirects), flag="--redirects"),
        tee=parse_std_spec(str(args.tee), flag="--tee"),
        local_ranks_filter=_ranks_filter(str(args.local_ranks_filter)),
        duplicate_stdout_filters=_dup_filters(str(args.duplicate_stdout_filters)),
        duplicate_stderr_filters=_dup_filters(str(args.duplicate_stderr_filters)),
        node_rank=int(args.node_rank),
        master_addr=str(args.master_addr),
        master_port=int(master_port),
        local_addr=args.local_addr,
        signals_to_handle=parse_signals(signals_text),
        signals_to_handle_text=signals_text,
        shutdown_timeout_s=shutdown_s,
        restart_grace_s=float(args.restart_grace),
        virtual_local_rank=bool(args.virtual_local_rank),
        event_log=event_log,
        event_log_console=args.event_log_handler == "console",
        containment=_choice(str(args.containment), CONTAINMENT_MODES, "--containment"),
        hang_timeout_s=_seconds(str(args.hang_timeout), "--hang-timeout", "or 0 to turn it off"),
        straggler_window_s=_seconds(str(args.straggler_window), "--straggler-window", "", low=1),
        hang_dump=_choice(str(args.hang_dump), DUMP_METHODS, "--hang-dump"),
    )
