"""`chaos proxy serve`: the Toxiproxy-compatible server in the foreground.

    chaos proxy serve [--host 127.0.0.1] [--port 8474] [--unix PATH] [--config FILE] [--seed N]

Runs until SIGINT or SIGTERM, then closes every proxy. Exit code: 0 after a signal,
2 bad usage (the API port in use, an unreadable or invalid --config).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chaos.proxy.api import VERSION
from chaos.proxy.errors import ApiError
from chaos.proxy.server import ProxyServer, ProxyServerError


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="chaos proxy",
        description="A TCP proxy with Toxiproxy's HTTP API and toxics (drive it with "
        "toxiproxy-python or any Toxiproxy client).",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server until SIGINT or SIGTERM")
    serve.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8474, help="API port (default 8474)")
    serve.add_argument(
        "--config", type=Path, help="JSON list of proxies to create at start (as /populate)"
    )
    serve.add_argument("--seed", type=int, help="seed for toxicity draws and jitter")
    serve.add_argument(
        "--unix", type=Path, help="serve the API on this unix socket instead of --host/--port"
    )
    return ap


def _config(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProxyServerError(str(path), f"bad --config: {exc}") from exc


async def _serve(server: ProxyServer, config: Any) -> None:
    await server.start()
    try:
        if config is not None:
            try:
                await server.populate(config)
            except ApiError as exc:
                raise ProxyServerError(server.url, f"--config refused: {exc.message}") from exc
        print(f"chaos proxy: Toxiproxy {VERSION} API on {server.url}", file=sys.stderr, flush=True)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        await stopped.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    server = ProxyServer(host=args.host, port=args.port, seed=args.seed, unix=args.unix)
    try:
        asyncio.run(_serve(server, _config(args.config)))
    except ProxyServerError as exc:
        fix = "pick another --port or stop the server holding it"
        if "--config" in exc.reason:
            fix = "fix the file: a JSON list of {name, listen, upstream, enabled}"
        print(f"chaos proxy: error: {exc} ({fix})", file=sys.stderr)
        return 2
    return 0
