"""Signed rendezvous values (launcher/rendezvous/state/signing.py), against a MemoryStore."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from launcher.errors import ConfigError
from launcher.rendezvous.driver import Driver
from launcher.rendezvous.state import Keys, Params, check_round, heartbeat, join
from launcher.rendezvous.state.model import Add, CompareSet, Get, MultiGet, MultiSet, NodeInfo, Set
from launcher.rendezvous.state.running import WatchState
from launcher.rendezvous.state.signing import Seal
from launcher.rendezvous.store import MemoryStore
from launcher.secret import SECRET_FILE_ENV, read_secret, secret_file

K = Keys("job")
P = Params(run_id="job", min_nodes=1, max_nodes=1, max_restarts=0, last_call_timeout_s=0.0)
SECRET = b"0123456789abcdef0123"


REJECTED: list[str] = []  # what the last `drive` reported


def drive(store: MemoryStore, seal: Seal, step: object) -> object:
    REJECTED.clear()
    seal.on_reject = REJECTED.append
    return Driver(store, seal=seal).run(step)  # type: ignore[arg-type]


def test_a_seal_binds_the_value_to_its_key_and_job() -> None:
    seal = Seal(SECRET, "job")
    sealed = seal.seal(K.done, "succeeded")
    assert sealed != "succeeded" and seal.check(K.done, sealed) == "succeeded"
    assert seal.check(K.round, sealed) is None  # copied to another key
    assert Seal(SECRET, "other").check(K.done, sealed) is None  # to another job
    assert Seal(b"another secret 1234", "job").check(K.done, sealed) is None
    assert seal.check(K.done, sealed.replace("succeeded", "failed")) is None
    assert seal.check(K.done, "succeeded") is None and seal.check(K.done, "") is None


def test_writes_are_sealed_and_reads_checked() -> None:
    store, seal = MemoryStore(), Seal(SECRET, "job")

    def step() -> Any:
        yield Set("a", "1")
        yield MultiSet((("b", "2"), ("c", "3")))
        (a, _), (bc, _) = (yield Get("a")), (yield MultiGet(("b", "c", "absent")))
        return a, bc

    assert drive(store, seal, step()) == ("1", ("2", "3", None))
    assert store.get("a") == seal.seal("a", "1")
    assert REJECTED == []


def test_a_forged_value_is_ignored_for_the_last_valid_one_and_reported() -> None:
    store, seal = MemoryStore(), Seal(SECRET, "job")
    run = Driver(store, seal=seal)
    run.run(join(P, NodeInfo(node_id="n0", addr="a", master_port=1, nproc=1), now=0.0))
    assert drive(store, seal, check_round(P, 0)) is None
    store.set(K.round, "7:intruder+node_lost")  # a forged bump, unsigned
    assert drive(store, seal, check_round(P, 0)) is None  # still round 0: nothing restarts
    assert [K.round] == REJECTED
    store.set(K.dead("n0"), Seal(b"wrong secret 123456", "job").seal(K.dead("n0"), "lost"))
    watch = WatchState(round=0, group_world_size=1, watched="")
    assert drive(store, seal, heartbeat(P, "n0", watch, now=1.0)) is None  # not declared dead


def test_a_forged_value_cannot_block_a_compare_and_set_from_absent() -> None:
    """A round's close is decided by CAS from absent: garbage written there first must not
    stall the round. The CAS replaces it; an honest decision already there still wins."""
    store, seal = MemoryStore(), Seal(SECRET, "job")
    store.set("close", "garbage")
    assert drive(store, seal, _cas("close", None, "mine")) == "mine"
    assert store.get("close") == seal.seal("close", "mine")
    assert drive(store, seal, _cas("close", None, "theirs")) == "mine"  # honest loss
    assert REJECTED == []


def test_a_cas_against_a_forgery_of_the_expected_value_goes_through() -> None:
    store, seal = MemoryStore(), Seal(SECRET, "job")
    drive(store, seal, _cas("round", None, "1:a"))
    store.set("round", "9:forged")
    assert drive(store, seal, _cas("round", "1:a", "2:b")) == "2:b"  # the view was 1:a
    store.set("round", "9:forged")
    assert drive(store, seal, _cas("round", "0:x", "3:c")) == "2:b"  # expectation failed


def test_counters_stay_plain_integers() -> None:
    store, seal = MemoryStore(), Seal(SECRET, "job")

    def step() -> Any:
        yield Add(K.r(0, "seq"), 2)
        (values, _) = yield MultiGet((K.r(0, "seq"), K.r(0, "expected")))
        return values

    assert drive(store, seal, step()) == ("2", None)
    store.set(K.r(0, "seq"), "not a number")
    assert drive(store, seal, _get(K.r(0, "seq"))) == "2"  # garbage: the last valid one


def _cas(key: str, expected: str | None, value: str) -> Any:
    reply, _ = yield CompareSet(key, expected, value)
    return reply


def _get(key: str) -> Any:
    value, _ = yield Get(key)
    return value


# -- the secret file ------------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int = 0o600) -> str:
    path.write_bytes(data)
    os.chmod(path, mode)
    return str(path)


def test_the_secret_comes_from_a_file_named_by_conf_or_environment(tmp_path: Path) -> None:
    path = _write(tmp_path / "s", b"  " + SECRET + b"\n")
    assert read_secret(path) == SECRET
    assert secret_file(None, {SECRET_FILE_ENV: path}) == path
    assert secret_file("conf", {SECRET_FILE_ENV: path}) == "conf"
    assert secret_file(None, {}) is None


@pytest.mark.parametrize(
    ("data", "mode", "match"),
    [
        (None, 0o600, "cannot read"),
        (b"short", 0o600, "at least 16"),
        (SECRET, 0o644, "chmod 600"),
    ],
)
def test_a_bad_secret_file_is_one_line_naming_it(
    tmp_path: Path, data: bytes | None, mode: int, match: str
) -> None:
    path = tmp_path / "s"
    if data is not None:
        _write(path, data, mode)
    with pytest.raises(ConfigError, match=match) as err:
        read_secret(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_without_a_secret_an_unreadable_value_is_one_line_naming_the_fix() -> None:
    from launcher.errors import RendezvousError

    store = MemoryStore()
    store.set(K.round, "\udcff\udcfe not a round")
    with pytest.raises(RendezvousError, match="no agent of this job wrote") as err:
        Driver(store).run(check_round(P, 0))
    assert "secret_file" in str(err.value) and "\n" not in str(err.value)
