from __future__ import annotations

import argparse

import pytest

from launcher.errors import ConfigError
from launcher.flags import build_parser, parse_args
from launcher.resolve import resolve


def _resolve(argv: list[str], env: dict[str, str] | None = None, tmp_script: str = "") -> object:
    return resolve(parse_args(argv, env or {}), env or {})


@pytest.fixture
def script(tmp_path: pytest.TempPathFactory) -> str:
    path = tmp_path / "train.py"  # type: ignore[operator]
    path.write_text("print('hi')\n")
    return str(path)


def test_every_torchrun_flag_has_dash_and_underscore_forms() -> None:
    torch_run = pytest.importorskip("torch.distributed.run")
    theirs = {s for a in torch_run.get_args_parser()._actions for s in a.option_strings}
    ours = {s for a in build_parser({})._actions for s in a.option_strings}
    assert theirs - ours == set()


def test_torchrun_defaults_match(script: str) -> None:
    torch_run = pytest.importorskip("torch.distributed.run")
    theirs = vars(torch_run.get_args_parser().parse_args([script]))
    ours = vars(parse_args([script], {}))
    for dest, value in theirs.items():
        if dest in ("duplicate_stdout_filters", "duplicate_stderr_filters"):
            continue  # torch converts these to lists at parse time; we keep the string
        assert ours[dest] == value, dest


def test_underscore_and_prefix_forms(script: str) -> None:
    args = parse_args(["--nproc_per_node", "3", "--max-rest", "2", "--redirect=3", script], {})
    assert (args.nproc_per_node, args.max_restarts, args.redirects) == ("3", 2, "3")


def test_script_args_pass_through_verbatim(script: str) -> None:
    args = parse_args([script, "--nproc-per-node", "9", "--lr", "0.1"], {})
    assert args.training_script_args == ["--nproc-per-node", "9", "--lr", "0.1"]


def test_pet_env_defaults_and_cli_precedence(script: str) -> None:
    env = {"PET_NPROC_PER_NODE": "3", "PET_MAX_RESTARTS": "5", "PET_STANDALONE": "1"}
    args = parse_args([script], env)
    assert (args.nproc_per_node, args.max_restarts, args.standalone) == ("3", 5, True)
    assert parse_args(["--nproc-per-node", "2", script], env).nproc_per_node == "2"
    assert parse_args([script], {"PET_MODULE": "0"}).module is False


def test_pet_boolean_must_be_integer(script: str) -> None:
    with pytest.raises(argparse.ArgumentError):
        parse_args([script], {"PET_NO_PYTHON": "yes"})


def test_implicit_standalone_and_static_master_port(script: str) -> None:
    cfg = _resolve(["--nproc-per-node", "2", script])
    assert cfg.standalone and cfg.rdzv_backend == "c10d"  # type: ignore[attr-defined]
    static = _resolve(["--master-port", "29999", script])
    assert not static.standalone  # type: ignore[attr-defined]
    assert (static.rdzv_backend, static.rdzv_port) == ("static", 29999)  # type: ignore[attr-defined]


def test_nproc_keywords(script: str) -> None:
    assert _resolve(["--nproc-per-node", "cpu", script]).nproc_per_node >= 1  # type: ignore[attr-defined]
    assert _resolve(["--nproc-per-node", "auto", script]).nproc_per_node >= 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--nnodes", "3:2"], "--nnodes"),
        (["--nnodes", "1:2:3"], "--nnodes"),
        (["--nnodes", "x"], "--nnodes"),
        (["--nproc-per-node", "0"], "--nproc-per-node"),
        (["--nproc-per-node", "lots"], "--nproc-per-node"),
        (["--rdzv-conf", "join_timeout=soon"], "join_timeout"),
        (["--rdzv-conf", "bogus_key=1"], "bogus_key"),
        (["--rdzv-conf", "is_host=maybe"], "is_host"),
        (["--rdzv-conf", "read_timeout="], "read_timeout"),
        (["--max-restarts", "-1"], "--max-restarts"),
        (["--monitor-interval", "0"], "--monitor-interval"),
        (["--redirects", "7"], "--redirects"),
        (["--local-ranks-filter", "a,b"], "--local-ranks-filter"),
        (["--signals-to-handle", "SIGNOPE"], "SIGNOPE"),
        (["--shutdown-timeout", "-1"], "--shutdown-timeout"),
        (["--rdzv-backend", "zookeeper"], "zookeeper"),
        (["-m", "--no-python"], "--no-python"),
    ],
)
def test_bad_input_is_one_clear_line(argv: list[str], needle: str, script: str) -> None:
    with pytest.raises(ConfigError) as err:
        _resolve([*argv, script])
    message = str(err.value)
    assert needle in message and "\n" not in message


def test_missing_script_names_it(tmp_path: pytest.TempPathFactory) -> None:
    missing = str(tmp_path / "nope.py")  # type: ignore[operator]
    with pytest.raises(ConfigError, match=r"nope\.py.*does not exist"):
        _resolve([missing])


def test_unwritable_log_dir_is_rejected(script: str, tmp_path: pytest.TempPathFactory) -> None:
    blocker = tmp_path / "file"  # type: ignore[operator]
    blocker.write_text("")
    with pytest.raises(ConfigError, match="--log-dir"):
        _resolve(["--log-dir", str(blocker), script])
