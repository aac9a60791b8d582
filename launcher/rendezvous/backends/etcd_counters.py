"""etcd counters that many writers can increment at once without retrying (pure: txn bodies
in, counts out; EtcdStore in etcd.py sends them).

etcd has no atomic add. A read-then-compare-and-put loop costs N txns for the first of N
simultaneous writers, N-1 for the next, ...: about N^2/2 txns for N joiners taking their
slots in one round (1.5 s for 100 on a 2-core machine). Every put raises a key's `version`
by one, atomically, so a counter is kept as

    value = TAG + offset        count = version + offset

and +1 is a put that keeps the value (`ignore_value`): one txn, whoever else is adding. Any
other delta (the protocol's -1s) rewrites the offset in a compare-on-`mod_revision` put, so
that the count moves by exactly delta. A counter holding plain decimal text (written by a
program that does not know this layout) reads as that number, and the first add rewrites it
in this layout. `get` turns a counter's value back into decimal text, so readers never see
the layout.

The +1 txn, nested (etcd >= 3.3), so that a copy re-sent after a lost reply never counts twice:

    marker == token ?  -> range marker          (an earlier copy was applied at its mod_revision)
    : key absent ?     -> put TAG+"0", marker := token, range key
    : key tagged ?     -> put (ignore_value), marker := token, range key
    :                  -> range key              (untagged: the caller converts it)

"Tagged" is tested as `value < "\\x01"` (etcd compares values as bytes): TAG starts with NUL,
which no text the protocol writes does.
"""

from __future__ import annotations

from launcher.rendezvous.backends.etcd_wire import Json, _b64, first_kv, kv_text

TAG = "\x00c"


def count_of(kv: Json | None) -> int:
    """The count a range reply's kv holds (None: absent, 0)."""
    if kv is None:
        return 0
    text = kv_text(kv)
    if text.startswith(TAG):
        return int(kv.get("version", 0)) + int(text[len(TAG) :])
    return int(text or "0")


def visible(kv: Json) -> str:
    """A kv's value as `get` returns it: a counter as decimal text, anything else as is."""
    text = kv_text(kv)
    return str(count_of(kv)) if text.startswith(TAG) else text


def increment_txn(key_b64: str, marker_b64: str, token: str) -> Json:
    """The one txn of a +1 (see the module docstring)."""
    token_b64 = _b64(token)
    read_key = {"request_range": {"key": key_b64}}
    mark = {"request_put": {"key": marker_b64, "value": token_b64}}
    tagged = {
        "compare": [{"key": key_b64, "target": "VALUE", "result": "LESS", "value": _b64("\x01")}],
        "success": [{"request_put": {"key": key_b64, "ignore_value": True}}, mark, read_key],
        "failure": [read_key],
    }
    absent = {
        "compare": [
            {"key": key_b64, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        ],
        "success": [{"request_put": {"key": key_b64, "value": _b64(TAG + "0")}}, mark, read_key],
        "failure": [{"request_txn": tagged}],
    }
    return {
        "compare": [{"key": marker_b64, "target": "VALUE", "result": "EQUAL", "value": token_b64}],
        "success": [{"request_range": {"key": marker_b64}}],
        "failure": [{"request_txn": absent}],
    }


def increment_outcome(reply: Json) -> tuple[str, Json | None]:
    """What the +1 txn did: ("counted", key's kv after the put), ("applied", the marker's kv:
    an earlier copy counted at its mod_revision), or ("untagged", the key's kv: nothing done)."""
    if reply.get("succeeded"):  # the gateway leaves out `succeeded` when false
        return "applied", first_kv(reply["responses"][0]["response_range"])
    absent = reply["responses"][0]["response_txn"]
    if absent.get("succeeded"):
        return "counted", first_kv(absent["responses"][2]["response_range"])
    tagged = absent["responses"][0]["response_txn"]
    if tagged.get("succeeded"):
        return "counted", first_kv(tagged["responses"][2]["response_range"])
    return "untagged", first_kv(tagged["responses"][0]["response_range"])


def rewrite(kv: Json | None, delta: int) -> tuple[str, str, int]:
    """For a compare-and-put that moves the count by `delta`: (the value to put, the
    mod_revision to compare, the count after it). The put raises `version` by one."""
    version = int(kv.get("version", 0)) if kv is not None else 0
    revision = str(kv.get("mod_revision", 0)) if kv is not None else "0"
    total = count_of(kv) + delta
    return TAG + str(total - (version + 1)), revision, total
