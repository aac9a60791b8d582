"""A job secret (`--rdzv-conf secret_file=PATH`): two real agents on loopback (c10d), and an
intruder on the same store with our TCPStore client and no secret.

With the secret, the intruder's forged bump, dead mark and `done` are ignored and reported
(`rendezvous.value.rejected`): the job finishes in its first round. Without it, the same
forged bump is believed and the job re-forms: what an unauthenticated store trusts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher import events as ev
from launcher.rendezvous.state import Keys
from launcher.tcpstore.client import StoreClient
from tests.conftest import Procs, wait_until
from tests.integration.test_multinode import ADDRS, HOST_ADDR, Cluster

pytestmark = pytest.mark.integration


def _secret(tmp_path: Path) -> Path:
    path = tmp_path / "job.secret"
    path.write_bytes(os.urandom(24).hex().encode())
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("signed", [True, False], ids=["secret", "no-secret"])
def test_an_intruders_forged_values(procs: Procs, tmp_path: Path, signed: bool) -> None:
    conf = "last_call_timeout=1" + (f",secret_file={_secret(tmp_path)}" if signed else "")
    cluster = Cluster(procs, tmp_path, nnodes="2", rdzv_conf=conf, STEPS="100000")
    for addr in ADDRS[:2]:
        cluster.start(addr)
    cluster.wait_world(2, timeout_s=60)
    members = cluster.events(ev.RDZV_ROUND_COMPLETE)[0].fields["members"]
    keys = Keys(cluster.run_id)
    intruder = StoreClient(HOST_ADDR, cluster.port, timeout_s=10)
    try:
        intruder.set(keys.round, "5:intruder+node_lost")  # a bump to a round of its own
        intruder.set(keys.dead(members[1]), "lost")  # a healthy node marked dead
        if signed:  # bytes that are not even text, where every member looks
            intruder.set(keys.r(0, "close"), b"\xff\xfe\x00garbage")
            intruder.set(keys.done, b"\x80" * 1000)
    finally:
        intruder.close()

    if not signed:
        assert wait_until(lambda: cluster.events(ev.RDZV_CHANGED), 30, 0.05), cluster.report()
        return  # believed: the job re-forms (what the docs say an open store trusts)
    rejected = {"round", f"dead/{members[1]}"}  # what running members read
    assert wait_until(
        lambda: rejected <= {e.fields["key"] for e in cluster.events(ev.RDZV_VALUE_REJECTED)},
        30,
        0.05,
    ), cluster.report()
    cluster.stop_workers()
    assert cluster.wait_exit() == dict.fromkeys(ADDRS[:2], 0), cluster.report()
    assert not cluster.events(ev.RDZV_CHANGED)  # nothing re-formed, nobody restarted
    assert len(cluster.events(ev.RDZV_ROUND_COMPLETE)) == 2  # one round, two nodes
