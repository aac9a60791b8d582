"""`--rdzv-conf`'s etcd keys: typed, checked at start, never silently ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.config import ETCD_PASSWORD_FILE_ENV, EtcdOptions, parse_rdzv_conf
from launcher.errors import ConfigError
from launcher.flags import parse_args
from launcher.resolve import resolve


def test_torchrun_spellings_of_the_tls_keys() -> None:
    tls = "protocol=HTTPS,cacert=/c/ca.pem,cert=/c/me.pem,key=/c/me.key,etcd_prefix=/x/"
    v2 = "protocol=https,ca_cert=/c/ca.pem,ssl_cert=/c/me.pem,ssl_cert_key=/c/me.key"
    v2 += ",etcd_prefix=/x/"
    expected = EtcdOptions(
        protocol="https",
        cacert=Path("/c/ca.pem"),
        cert=Path("/c/me.pem"),
        key=Path("/c/me.key"),
        prefix="/x/",
    )
    assert parse_rdzv_conf(tls).etcd == expected  # torchrun's etcd backend
    assert parse_rdzv_conf(v2).etcd == expected  # torchrun's etcd-v2 backend
    auth = parse_rdzv_conf("username=agent,password_file=/run/pw").etcd
    assert (auth.username, auth.password_file) == ("agent", Path("/run/pw"))


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ("protocol=ftp", "protocol must be http or https"),
        ("cacert=/ca.pem", "cacert need TLS, but protocol is http (add protocol=https)"),
        ("protocol=http,cert=/a,key=/b", "cert, key need TLS"),
        ("protocol=https,cert=/a", "cert without key"),
        ("protocol=https,ssl_cert_key=/b", "ssl_cert_key without cert"),
        ("protocol=https,cacert=/a,ca_cert=/a", "cacert and ca_cert are two names"),
        ("password_file=/pw", "password_file without username"),
        ("username=u,password=hunter2", "visible to every user (ps)"),
    ],
)
def test_bad_etcd_keys_are_one_line_errors(conf: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^--rdzv-conf: ") as info:
        parse_rdzv_conf(conf)
    assert message in str(info.value)
    assert "\n" not in str(info.value) and "hunter2" not in str(info.value)


def _resolve(tmp_path: Path, backend: str, conf: str, env: dict[str, str]) -> EtcdOptions:
    script = tmp_path / "train.py"
    script.write_text("")
    argv = ["--nnodes", "2", "--rdzv-backend", backend, "--rdzv-endpoint", "h:1"]
    args = parse_args([*argv, "--rdzv-conf", conf, str(script)], env)
    return resolve(args, env).rdzv.etcd


def test_the_password_file_may_be_named_by_the_environment(tmp_path: Path) -> None:
    env = {ETCD_PASSWORD_FILE_ENV: "/run/secrets/pw"}
    assert _resolve(tmp_path, "etcd", "username=u", env).password_file == Path("/run/secrets/pw")
    given = _resolve(tmp_path, "etcd", "username=u,password_file=/mine", env)
    assert given.password_file == Path("/mine")  # the command line wins
    with pytest.raises(ConfigError, match=f"username=u needs a password.*{ETCD_PASSWORD_FILE_ENV}"):
        _resolve(tmp_path, "etcd", "username=u", {})


def test_etcd_keys_with_another_backend_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="do not apply to the c10d backend"):
        _resolve(tmp_path, "c10d", "protocol=https,cacert=/ca.pem", {})
    assert _resolve(tmp_path, "etcd-v2", "protocol=https", {}).protocol == "https"
