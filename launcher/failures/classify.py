"""What kind of failure a worker's is: its own, a symptom of a peer's, or the agent's doing.

Timestamps alone cannot find a root cause. When rank 1 exits and its interpreter takes a
second to tear gloo down, its peer's collective fails first and writes "Connection closed by
peer" to its error file before the agent has even seen rank 1 go; the agent then stops that
peer with SIGTERM. Ordered by time, the summary would name the peer: a symptom, and a worker
the agent itself stopped. So each failure gets a kind, and the root cause is sought among
the kinds in this order (report.py), by time only within a kind:

    kind     what the agent knows                                   rank
    hang     the agent declared the worker hung (and stopped it)    0
    self     its own exit code, its own exception, or a signal      0
             the agent did not send (SIGKILL from the OOM killer,
             SIGSEGV, a user's kill)
    symptom  its error file says a peer went away or timed out      1
             (SYMPTOM_PATTERNS below, or an exception type in
             SYMPTOM_TYPES)
    stopped  the agent signalled it while stopping the group,       2
             whatever its error file says

The checks run top down: a hung worker was stopped by the agent but is a cause; a stopped
worker that first wrote a symptom is still "stopped". Only the error file's message (the
`"<Type>: <str(exc)>"` line) is matched, not its traceback, whose source lines may mention
anything. A worker that exits non-zero without an error file is `self`: nothing says
otherwise. The patterns are the messages torch 2.13 really raises (provoked with gloo on
loopback; NCCL's from its source), matched case-sensitively as substrings.
"""

from __future__ import annotations

import enum

__all__ = [
    "SYMPTOM_PATTERNS",
    "SYMPTOM_TYPES",
    "FailureKind",
    "classify",
    "is_peer_timeout",
    "is_symptom",
]


class FailureKind(enum.StrEnum):
    HANG = "hang"
    SELF = "self"
    SYMPTOM = "symptom"
    STOPPED = "stopped"

    @property
    def blame_rank(self) -> int:
        """Lower is blamed first: causes, then symptoms, then the agent's own stops."""
        return _BLAME_RANK[self]


_BLAME_RANK = {
    FailureKind.HANG: 0,
    FailureKind.SELF: 0,
    FailureKind.SYMPTOM: 1,
    FailureKind.STOPPED: 2,
}

# Each says a peer (another worker, or the store's host) went away or did not answer.
SYMPTOM_PATTERNS: tuple[str, ...] = (
    # gloo, tcp/pair.cc: the peer's socket closed (its process exited or destroyed the group);
    # torch appends the hint on the next line to every such error.
    "Connection closed by peer",
    "Connection reset by peer",
    "This is typically caused by a remote worker crashing",
    # gloo, tcp/unbound_buffer.cc: "Timed out waiting 5000ms for recv operation to complete"
    "Timed out waiting",
    "Application timeout caused pair closure",
    "Socket Timeout",  # older gloo and the c10d store's client
    # NCCL: ncclRemoteError's text, an abort after a peer's failure, the watchdog's timeout
    "remote process exited",
    "ncclRemoteError",
    "NCCL communicator was aborted",
    "Watchdog caught collective operation timeout",
    "Some NCCL operations have failed or timed out",
    # the c10d store: "wait timeout after 1000ms, keys: /x", a peer missing at init
    # ("Timed out after 30 seconds waiting for clients. 1/2 clients joined."), its host gone
    "wait timeout after",
    "waiting for clients",
    "Connection was likely closed",
    # monitored_barrier names the rank that did not arrive
    "failed to pass monitoredBarrier",
)

# torch's exception types for "the other side is gone": DistNetworkError (the store's host
# or a peer unreachable, "Broken pipe", "Failed to recv, got 0 bytes") and DistStoreError
# (a store operation timed out). DistBackendError is not here: NCCL raises it for a worker's
# own misuse too; its remote cases carry the NCCL patterns above.
SYMPTOM_TYPES: tuple[str, ...] = ("DistNetworkError", "DistStoreError")


def is_symptom(message: str) -> bool:
    """Whether an error file's message says a peer went away or timed out."""
    exc_type = message.split(":", 1)[0].strip().rsplit(".", 1)[-1]
    if exc_type in SYMPTOM_TYPES:
        return True
    return any(pattern in message for pattern in SYMPTOM_PATTERNS)


def classify(*, message: str | None, stopped_by_agent: bool, hung: bool = False) -> FailureKind:
    """The kind of a failed worker's failure.

    `message` is its error file's message (None without an error file); `stopped_by_agent`
    whether the agent signalled it; `hung` whether the agent declared it hung. The exit code
    is not needed: a code or a signal the agent did not send are both the worker's own.
    """
    if hung:
        return FailureKind.HANG
    if stopped_by_agent:
        return FailureKind.STOPPED
    if message is not None and is_symptom(message):
        return FailureKind.SYMPTOM
    return FailureKind.SELF


# The symptoms that mean a peer did not answer (rather than went away): some rank is hung,
# and it is still running somewhere, so its stack is worth taking before the stop.
_TIMEOUT_WORDS = ("Timed out", "timed out", "Timeout", "timeout")


def is_peer_timeout(message: str | None) -> bool:
    return (
        bool(message)
        and is_symptom(message or "")
        and any(word in (message or "") for word in _TIMEOUT_WORDS)
    )
