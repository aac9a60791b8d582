"""Our `record` against torch's, in real worker processes, and torchrun reading both."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from launcher.failures.error_file import read_error_file
from launcher.failures.report import WorkerFailure, format_summary

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120
DECORATORS = {
    "ours": "from launcher.failures.record import record",
    "torch": "from torch.distributed.elastic.multiprocessing.errors import record",
}

# Runs every case in one process per decorator (importing torch is the slow part) and prints,
# per case, what the decorated call did and what landed in its error file.
DRIVER = """
import faulthandler, json, os, sys
{import_line}

def value_error():
    raise ValueError("boom \\u00fc \\"quoted\\"\\nsecond line")

def chained():
    try:
        {{}}["key"]
    except KeyError as e:
        raise RuntimeError("wrapped") from e

def exit_zero():
    sys.exit(0)

def exit_none():
    sys.exit()

def exit_three():
    sys.exit(3)

def exit_text():
    sys.exit("bye")

def interrupted():
    raise KeyboardInterrupt

def returns():
    return 7

CASES = [value_error, chained, exit_zero, exit_none, exit_three, exit_text, interrupted, returns]
out_dir = sys.argv[1]
results = {{}}
for case in CASES:
    path = os.path.join(out_dir, case.__name__ + ".json")
    if case is chained:
        with open(path, "w") as fp:
            fp.write("x" * 10000)  # an older file, longer than the new one, must be replaced
    os.environ["TORCHELASTIC_ERROR_FILE"] = path
    faulthandler.disable()
    try:
        outcome = ["returned", repr(record(case)())]
    except BaseException as e:
        outcome = ["raised", type(e).__name__, repr(getattr(e, "code", None))]
    content = open(path).read() if os.path.exists(path) else None
    results[case.__name__] = {{
        "outcome": outcome, "file": content, "faulthandler": faulthandler.is_enabled(),
    }}
for value in ["", None]:
    if value is None:
        os.environ.pop("TORCHELASTIC_ERROR_FILE", None)
    else:
        os.environ["TORCHELASTIC_ERROR_FILE"] = value
    try:
        record(value_error)()
    except ValueError:
        pass
results["no_error_file_written"] = sorted(os.listdir(out_dir))
print(json.dumps(results))
"""


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TORCHELASTIC_ERROR_FILE"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def run_python(
    script: Path, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def shape(value: Any) -> Any:
    """Keys, nesting and value types, without the values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    return type(value).__name__


def normalise(error_file_text: str) -> str:
    """Blank out what legitimately differs: file paths, line numbers and the time."""
    text = re.sub(r'File \\"[^"\\]*\\", line \d+', 'File \\"<PATH>\\", line <N>', error_file_text)
    return re.sub(r'"timestamp": "\d+"', '"timestamp": "<T>"', text)


@pytest.fixture(scope="module")
def driver_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    pytest.importorskip("torch")
    results: dict[str, dict[str, Any]] = {}
    for name, import_line in DECORATORS.items():
        work = tmp_path_factory.mktemp(name)
        script = work / "driver.py"
        script.write_text(DRIVER.format(import_line=import_line))
        out_dir = work / "files"
        out_dir.mkdir()
        started = int(time.time())
        proc = run_python(script, str(out_dir), cwd=work, env=child_env())
        assert proc.returncode == 0, proc.stderr
        results[name] = json.loads(proc.stdout)
        results[name]["window"] = [started, int(time.time())]
        results[name]["out_dir"] = str(out_dir)
    return results


@pytest.mark.parametrize(
    "case",
    ["value_error", "chained", "exit_zero", "exit_none", "exit_three", "exit_text", "interrupted"],
)
def test_same_outcome_as_torch(driver_results: dict[str, dict[str, Any]], case: str) -> None:
    ours, theirs = driver_results["ours"][case], driver_results["torch"][case]

    assert ours["outcome"] == theirs["outcome"]
    assert (ours["file"] is None) == (theirs["file"] is None)
    assert ours["faulthandler"] is theirs["faulthandler"] is True


@pytest.mark.parametrize(
    ("case", "outcome"),
    [
        ("exit_zero", ["returned", "None"]),
        ("exit_none", ["raised", "SystemExit", "None"]),
        ("exit_three", ["raised", "SystemExit", "3"]),
        ("exit_text", ["raised", "SystemExit", "'bye'"]),
        ("interrupted", ["raised", "KeyboardInterrupt", "None"]),
        ("returns", ["returned", "7"]),
    ],
)
def test_exits_and_interrupts_write_no_file(
    driver_results: dict[str, dict[str, Any]], case: str, outcome: list[str]
) -> None:
    ours = driver_results["ours"][case]

    assert ours["outcome"] == outcome
    assert ours["file"] is None


@pytest.mark.parametrize("case", ["value_error", "chained"])
def test_error_file_identical_to_torchs_but_for_paths_and_time(
    driver_results: dict[str, dict[str, Any]], case: str
) -> None:
    ours_text: str = driver_results["ours"][case]["file"]
    torch_text: str = driver_results["torch"][case]["file"]

    assert shape(json.loads(ours_text)) == shape(json.loads(torch_text))
    assert shape(json.loads(ours_text)) == {
        "message": {"message": "str", "extraInfo": {"py_callstack": "str", "timestamp": "str"}}
    }
    # Same serialisation too: separators, ASCII escapes, no trailing newline.
    assert normalise(ours_text) == normalise(torch_text)
    assert ours_text.endswith("}}}")


def test_error_file_content(driver_results: dict[str, dict[str, Any]]) -> None:
    ours = driver_results["ours"]
    data = json.loads(ours["value_error"]["file"])["message"]
    chained = json.loads(ours["chained"]["file"])["message"]

    assert data["message"] == 'ValueError: boom \u00fc "quoted"\nsecond line'
    assert "\\u00fc" in ours["value_error"]["file"]
    callstack = data["extraInfo"]["py_callstack"]
    assert callstack.startswith("Traceback (most recent call last):\n")
    assert ", in wrapper\n    return f(*args, **kwargs)\n" in callstack
    assert ", in value_error\n" in callstack
    assert callstack.endswith('ValueError: boom \u00fc "quoted"\nsecond line\n')
    start, end = ours["window"]
    assert start <= int(data["extraInfo"]["timestamp"]) <= end
    assert chained["message"] == "RuntimeError: wrapped"
    assert (
        "KeyError: 'key'\n\nThe above exception was the direct cause"
        in (chained["extraInfo"]["py_callstack"])
    )


@pytest.mark.parametrize("name", ["ours", "torch"])
def test_read_error_file_reads_both(driver_results: dict[str, dict[str, Any]], name: str) -> None:
    path = Path(driver_results[name]["out_dir"]) / "value_error.json"

    record = read_error_file(path)

    assert record is not None
    raw = json.loads(driver_results[name]["value_error"]["file"])
    assert record.raw == raw
    assert record.message == 'ValueError: boom \u00fc "quoted"\nsecond line'
    assert record.traceback == raw["message"]["extraInfo"]["py_callstack"]
    start, end = driver_results[name]["window"]
    assert start <= record.timestamp <= end


@pytest.mark.parametrize("name", ["ours", "torch"])
def test_empty_or_unset_variable_writes_nothing(
    driver_results: dict[str, dict[str, Any]], name: str
) -> None:
    # Only the files of the cases that raised an Exception, nothing for "" or an unset variable.
    assert driver_results[name]["no_error_file_written"] == ["chained.json", "value_error.json"]


SCRIPT = """
import sys
from launcher.failures.record import record

@record
def main():
    if sys.argv[1] == "raise":
        raise ValueError("boom")
    sys.exit(int(sys.argv[1]))

main()
print("after main")
"""


@pytest.mark.parametrize(
    ("arg", "returncode", "stdout", "wrote_file"),
    [("raise", 1, "", True), ("3", 3, "", False), ("0", 0, "after main\n", False)],
)
def test_process_exit_codes(
    tmp_path: Path, arg: str, returncode: int, stdout: str, wrote_file: bool
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    error_file = tmp_path / "error.json"

    proc = run_python(
        script, arg, cwd=tmp_path, env=child_env(TORCHELASTIC_ERROR_FILE=str(error_file))
    )

    assert (proc.returncode, proc.stdout) == (returncode, stdout)
    assert error_file.exists() is wrote_file
    if wrote_file:
        assert "ValueError: boom" in proc.stderr


def test_unwritable_error_file_keeps_the_users_exception(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    error_file = tmp_path / "missing_dir" / "error.json"

    proc = run_python(
        script, "raise", cwd=tmp_path, env=child_env(TORCHELASTIC_ERROR_FILE=str(error_file))
    )

    assert proc.returncode == 1
    assert "Unable to write error to file" in proc.stderr
    assert proc.stderr.rstrip().endswith("ValueError: boom")


SEGFAULT = """
import faulthandler, threading
{import_line}

@record
def main():
    threading.Thread(target=threading.Event().wait, daemon=True).start()
    faulthandler._sigsegv()

main()
"""


@pytest.mark.parametrize("name", ["ours", "torch"])
def test_faulthandler_dumps_all_threads(tmp_path: Path, name: str) -> None:
    if name == "torch":
        pytest.importorskip("torch")
    script = tmp_path / "worker.py"
    script.write_text(SEGFAULT.format(import_line=DECORATORS[name]))
    error_file = tmp_path / "error.json"

    proc = run_python(script, cwd=tmp_path, env=child_env(TORCHELASTIC_ERROR_FILE=str(error_file)))

    assert proc.returncode == -11
    assert "Fatal Python error: Segmentation fault" in proc.stderr
    # all_threads=True: the other thread's stack is dumped too, the crashing one is "Current".
    assert re.search(r"^Thread 0x[0-9a-f]+ ", proc.stderr, re.MULTILINE)
    assert "Current thread 0x" in proc.stderr
    assert not error_file.exists()


TORCHRUN_WORKER = """
import os, signal
{import_line}

@record
def main():
    if os.environ["RANK"] == "1":
        raise ValueError("boom from rank 1")
    signal.pause()  # until torchrun terminates this rank after rank 1 fails

if __name__ == "__main__":
    main()
"""


def blank_pids_and_times(text: str) -> list[str]:
    text = re.sub(r"time      : \S+", "time      : <TIME>", text)
    return re.sub(r"(pid: |PID )\d+", r"\g<1><PID>", text).split("\n")


@pytest.mark.parametrize("name", ["ours", "torch"])
def test_summary_matches_torchrun(tmp_path: Path, name: str) -> None:
    pytest.importorskip("torch")
    log_dir = ["--log-dir", str(tmp_path / "logs")]
    (tmp_path / "fail.py").write_text(TORCHRUN_WORKER.format(import_line=DECORATORS[name]))
    proc = subprocess.run(
        # --log-dir keeps torchrun's error files inside tmp_path instead of a stray /tmp dir.
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            *log_dir,
            "fail.py",
        ],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    marker = "ChildFailedError: "
    summary = proc.stderr[proc.stderr.index(marker) + len(marker) :].rstrip("\n")
    error_file = Path(re.findall(r"error_file: (/\S+)", summary)[0])
    assert error_file.is_relative_to(tmp_path / "logs")
    record = read_error_file(error_file)
    assert record is not None
    assert record.message == "ValueError: boom from rank 1"

    # torchrun lists rank 1 first (detected first) and rank 0 after terminating it.
    host = socket.getfqdn()
    raised = WorkerFailure(
        local_rank=1,
        global_rank=1,
        pid=0,
        exitcode=1,
        error_file=error_file,
        record=record,
        timestamp=time.time(),
        host=host,
    )
    terminated = WorkerFailure(
        local_rank=0,
        global_rank=0,
        pid=0,
        exitcode=-15,
        error_file=None,
        record=None,
        timestamp=time.time(),
        host=host,
    )
    ours = format_summary("fail.py", [raised, terminated])

    assert blank_pids_and_times(ours) == blank_pids_and_times(summary)
