"""The command line as a user meets it: entrypoint kinds, help, and bad input."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, WORKLOADS, Procs, clean_env

pytestmark = pytest.mark.integration


def test_console_script_and_module_forms_agree(procs: Procs) -> None:
    a = procs.run_launcher("--help")
    b = procs._finish(procs.popen(["launcher", "--help"]), 30)
    assert a.code == b.code == 0
    assert "--nproc-per-node" in a.out and "launcher extension" in a.out
    assert a.out.replace("__main__.py", "launcher") == b.out or "usage: launcher" in b.out


def test_example_training_script(procs: Procs) -> None:
    result = procs.run_launcher(
        "--nproc-per-node", "4", "examples/train.py", "--steps", "5", cwd=str(ROOT), timeout=180
    )
    assert result.code == 0, result
    assert "done: world_size=4 restarts=0 weights in sync" in result.out


def test_module_no_python_and_run_path(procs: Procs, tmp_path: Path) -> None:
    pkg = tmp_path / "mymod.py"
    pkg.write_text(
        "import os, sys\n"
        "open(os.path.join(sys.argv[1], 'mod-' + os.environ['RANK']), 'w').close()\n"
    )
    env = clean_env(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    result = procs.run_launcher(
        "--nproc-per-node", "2", "-m", "mymod", str(tmp_path), env=env, cwd=str(tmp_path)
    )
    assert result.code == 0, result
    assert (tmp_path / "mod-0").exists() and (tmp_path / "mod-1").exists()

    shell = tmp_path / "touch.sh"
    shell.write_text('#!/bin/sh\ntouch "$1/sh-$RANK"\n')
    shell.chmod(0o755)
    result = procs.run_launcher("--nproc-per-node", "2", "--no-python", str(shell), str(tmp_path))
    assert result.code == 0, result
    assert (tmp_path / "sh-1").exists()

    result = procs.run_launcher(
        "--nproc-per-node", "2", "--run-path", str(WORKLOADS / "crash.py"), "raise-plain"
    )
    assert result.code == 1
    # run-path wraps the script in record, so the traceback reaches the summary
    assert "run_script_path FAILED" in result.err and "ValueError: boom from rank 1" in result.err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["does_not_exist.py"], "does_not_exist.py"),
        (["--nnodes", "3:2", "{probe}"], "--nnodes"),
        (["--nproc-per-node", "0", "{probe}"], "--nproc-per-node"),
        (["--rdzv-conf", "join_timeout=abc", "{probe}"], "join_timeout"),
        (["--log-dir", "{blocker}/sub", "{probe}"], "--log-dir"),
        # access() says yes, only the mkdir itself fails
        (["--log-dir", "/proc/launcher-log-dir", "{probe}"], "--log-dir: cannot create"),
        (["--containment", "jail", "{probe}"], "--containment"),
        (["--no-python", "./not-a-binary", "{probe}"], "not-a-binary"),
        (["--rdzv-backend", "c10d", "--rdzv-endpoint", "a:1,b:2", "{probe}"], "one endpoint"),
        (["--rdzv-endpoint", "bad host!", "--nnodes", "2", "{probe}"], "--rdzv-endpoint"),
        (["--max-restarts", "x", "{probe}"], "max-restarts"),
        (["--rdzv-conf", "secret_file=/nonexistent/job.secret", "{probe}"], "secret_file"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    procs: Procs,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    args: list[str],
    needle: str,
) -> None:
    blocker = tmp_path_factory.mktemp("blocker") / "a-file"
    blocker.write_text("")
    argv = [
        a.replace("{probe}", str(WORKLOADS / "probe.py")).replace("{blocker}", str(blocker))
        for a in args
    ]
    result = procs.run_launcher(*argv, str(tmp_path), cwd=str(tmp_path), timeout=30)
    assert result.code == 2, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) <= 2 and needle in lines[-1], result.err  # argparse adds a usage line
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_port_in_use_is_a_clear_error(procs: Procs, tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        result = procs.run_launcher(
            "--master-port", str(port), str(WORKLOADS / "probe.py"), str(tmp_path), timeout=30
        )
    finally:
        blocker.close()
    assert result.code == 2, result
    assert f"port {port}" in result.err and "already in use" in result.err


def test_static_master_port_runs_a_real_job(procs: Procs, tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    result = procs.run_launcher(
        "--nproc-per-node",
        "2",
        "--master-port",
        str(port),
        str(WORKLOADS / "probe.py"),
        str(tmp_path),
        "--dist",
    )
    assert result.code == 0, result
    import json

    env = json.loads((tmp_path / "1.json").read_text())["env"]
    assert env["MASTER_PORT"] == str(port) and env["MASTER_ADDR"] == "127.0.0.1"
    assert env["TORCHELASTIC_RUN_ID"] == "none"


def test_import_of_cli_does_not_import_torch() -> None:
    code = "import sys, launcher.cli, launcher.agent; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), check=True
    )
    assert out.stdout.strip() == "False"
