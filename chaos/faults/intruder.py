"""The `intruder` fault: a process with access to the job's rendezvous store and no job
secret (`secret: none`), or a wrong one (`secret: wrong`), that tries to take the job over.

It speaks to the store from the harness as an outside program would (torch's TCPStore client
for c10d, etcd's JSON gateway for etcd: intruder_stores.py), and writes what a member would
act on if it believed it. Each action, against the round running when the fault fires (n):

    join       takes a slot in round n+1 with a descriptor of its own (a node at 127.0.0.254)
               and bumps the job to n+1 for a scale-up, expecting one more node
    bump       moves the round pointer to n+1 for a node loss, expecting one node back
    close      publishes a close decision for round n+1 ({"size": 1}) before it forms
    garbage    writes bytes that are not even text into the round pointer, round n's and
               n+1's close, n+1's first assignment and `done`
    oversize   writes a value of OVERSIZE_BYTES under round n+1's first join slot and `last`
    mark_dead  marks every member of round n dead ("lost")

Values are written as they are (`none`) or sealed with a secret the job does not have
(`wrong`). With a job secret the members must ignore all of it and report it
(`rendezvous.value.rejected`); without one they believe it. Under torchrun (whose whole
rendezvous state is one pickled value under `torch.rendezvous.<run id>`) every action
writes garbage there instead. `did` lists the keys written, per action.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

from chaos.faults.intruder_stores import (
    EtcdGateway,
    IntruderStore,
    IntruderStoreError,
    TorchTCPStore,
)
from chaos.scenario.schema import Fault
from launcher import events as ev
from launcher.rendezvous.state import Keys, NodeInfo, round_of
from launcher.rendezvous.state.signing import Seal, content

if TYPE_CHECKING:
    from chaos.faults import FaultContext

OVERSIZE_BYTES = 4 * 1024 * 1024
WRONG_SECRET = b"a secret that is not the job's"
_TIMEOUT_S = 3.0  # the harness waits for the fault: a refusal must not hold it long
_ADDR = "127.0.0.254"  # the intruder's node, as its descriptor claims


def _open(ctx: FaultContext) -> IntruderStore:
    store = ctx.topology.store
    if store.kind == "etcd":
        return EtcdGateway(store.endpoint, _TIMEOUT_S)
    host, _, port = store.endpoint.rpartition(":")
    return TorchTCPStore(host, int(port), _TIMEOUT_S)


def _members(ctx: FaultContext) -> list[str]:
    """The node ids of the latest round, from the job's own round.complete events."""
    latest: list[str] = []
    latest_round = -1
    for _, event in ctx.topology.view.named(ev.RDZV_ROUND_COMPLETE):
        number, members = event.fields.get("round"), event.fields.get("members")
        if isinstance(number, int) and number >= latest_round and isinstance(members, list):
            latest_round, latest = number, [str(m) for m in members]
    return latest


class _Writer:
    """Writes values as the intruder does: bare, or sealed with the wrong secret."""

    def __init__(self, store: IntruderStore, run_id: str, secret: str) -> None:
        self.store = store
        self.seal = Seal(WRONG_SECRET, run_id) if secret == "wrong" else None
        self.written: list[str] = []

    def value(self, key: str, value: str) -> str:
        return value if self.seal is None else self.seal.seal(key, value)

    def set(self, key: str, value: str) -> None:
        self.store.set(key, self.value(key, value))
        self.written.append(key)

    def raw(self, key: str, value: str) -> None:
        self.store.set(key, value)
        self.written.append(key)


def _bump(
    w: _Writer, keys: Keys, raw_round: str | None, n: int, *, reason: str, expect: int
) -> None:
    writer = f"intruder+{reason}"
    record = {"reason": reason, "by": "intruder", "detail": "intruder", "expected": expect}
    w.set(keys.bump(n + 1, writer), json.dumps(record, sort_keys=True))
    new = w.value(keys.round, f"{n + 1}:{writer}")
    w.store.compare_set(keys.round, raw_round, new)  # from whatever is there: it moves it
    w.written.append(keys.round)


def _garbage(rng: random.Random, size: int) -> str:
    """Bytes that are not UTF-8 (0x80..0xff alone never are), as the launcher's clients
    carry them: lone surrogates that encode back to the same bytes."""
    raw = bytes(rng.randrange(0x80, 0x100) for _ in range(size))
    return raw.decode("utf-8", "surrogateescape")


def _act(action: str, w: _Writer, keys: Keys, ctx: FaultContext, rng: random.Random) -> None:
    raw_round = w.store.get(keys.round)
    text = content(raw_round) if raw_round is not None else ""
    n = round_of(text) if text[:1].isdigit() else 0
    members = _members(ctx)
    if action == "join":
        slot = w.store.add(keys.r(n + 1, "seq"), 1) - 1
        me = NodeInfo(node_id="intruder", addr=_ADDR, master_port=29999, nproc=1)
        w.set(keys.node(n + 1, slot), me.to_json())
        _bump(w, keys, raw_round, n, reason="scale_up", expect=len(members) + 1)
    elif action == "bump":
        _bump(w, keys, raw_round, n, reason="node_lost", expect=1)
    elif action == "close":
        w.set(keys.r(n + 1, "close"), json.dumps({"size": 1, "closer": "intruder"}))
    elif action == "garbage":
        for key in (keys.round, keys.r(n, "close"), keys.r(n + 1, "close"), keys.done):
            w.raw(key, _garbage(rng, 64))
        w.raw(keys.assign(n + 1, 0), _garbage(rng, 64))
    elif action == "oversize":
        for key in (keys.node(n + 1, 0), keys.last):
            w.set(key, "x" * OVERSIZE_BYTES)
    elif action == "mark_dead":
        for node_id in members:
            w.set(keys.dead(node_id), "lost")


def intruder(fault: Fault, ctx: FaultContext) -> dict[str, Any]:
    run_id = ctx.topology.run_id
    rng = random.Random(f"{ctx.scenario.seed}-intruder-{fault.trigger}")
    try:
        store = _open(ctx)
    except Exception as err:
        return {"error": f"the intruder could not reach the store: {err}"}
    did: dict[str, Any] = {"store": ctx.topology.store.kind, "secret": fault.secret}
    try:
        if ctx.scenario.launcher != "launcher":
            # torchrun keeps its whole rendezvous state pickled under one key.
            key = f"torch.rendezvous.{run_id}"
            store.set(key, _garbage(rng, 64))
            return {**did, "actions": list(fault.actions), "written": {"torchrun": [key]}}
        written: dict[str, list[str]] = {}
        refused: dict[str, str] = {}  # what the store itself turned away (etcd's size limit)
        for action in fault.actions:
            writer = _Writer(store, run_id, fault.secret or "none")
            try:
                _act(action, writer, Keys(run_id), ctx, rng)
            except IntruderStoreError as err:
                refused[action] = str(err).splitlines()[0]
            written[action] = [k.removeprefix(Keys(run_id).prefix) for k in writer.written]
        return {**did, "actions": list(fault.actions), "written": written, "refused": refused}
    except Exception as err:
        return {**did, "error": f"the intruder's writes failed: {err}"}
    finally:
        store.close()
