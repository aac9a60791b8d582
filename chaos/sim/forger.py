"""The `forge` fault: an intruder on the store without the job secret.

Every FORGE_EVERY_S of its window it writes the values a node would act on if it believed
them, wherever the job has not written its own yet (a forger that overwrites or deletes
the job's values destroys state, which no signature prevents: docs/security.md): a close
decision for the running round and the next one, an EXCLUDED assignment for every slot of
both, `done`, `last`, and a dead mark for every live agent. Unsigned values all of them;
with a job secret every reader must ignore them, and a forged close must not stall the
round that needs that key (signing.py replaces it).
"""

from __future__ import annotations

import json

from chaos.sim.store import SimStore
from launcher.rendezvous.state import EXCLUDED, Keys, round_of

FORGE_EVERY_S = 0.1


def forge(store: SimStore, keys: Keys, *, live_ids: list[str], max_nodes: int) -> int:
    """One round of forgeries; returns how many values were written."""
    raw = store.value(keys.round)
    current = round_of(raw) if raw is not None and raw[:1].isdigit() else 0
    forged = {
        keys.done: "succeeded",
        keys.last: json.dumps({"round": current, "size": 1, "restart_count": 0}),
    }
    for rnd in (current, current + 1):
        forged[keys.r(rnd, "close")] = json.dumps({"size": 1, "closer": "forger"})
        for slot in range(max_nodes):
            forged[keys.assign(rnd, slot)] = EXCLUDED
    for node_id in live_ids:
        forged[keys.dead(node_id)] = "lost"
    written = 0
    for key, value in forged.items():
        if key not in store.data:
            store.data[key] = value
            written += 1
    return written
