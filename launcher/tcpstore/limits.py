"""How much one client may make the store server hold, and for how long (docs/security.md).

The first three are torch 2.13's libuv server's (``TCPStoreLibUvBackend.cpp``), so whatever
works against torch's default server works here; the rest are ours, since torch's server has
none: it buffers a request of any total size, keeps a connection that never validates (and
its garbage) forever, and queues replies for a client that never reads them.

What torch and the launcher really store is small: an NCCL unique id (128 bytes), one gloo
address per rank, barrier counters, the rendezvous' JSON descriptors (hundreds of bytes per
node). A value of several MiB is legitimate (torch allows 8 MiB); a request or a reply of
hundreds of MiB is not something any of them sends.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB, MiB = 1024, 1024 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """What one client may make the server hold, and for how long."""

    max_key_len: int = 8 * KiB  # torch: MAX_STRING_LEN
    max_value_len: int = 8 * MiB  # torch: MAX_PAYLOAD_LEN
    max_key_count: int = 128 * KiB  # torch: MAX_KEY_COUNT (CHECK, WAIT, MULTI_GET/SET)
    # One request, whole: a MULTI_SET of 128 Ki keys of 8 MiB each would otherwise be 1 TiB
    # that the server must buffer before it can act. Eight values of the largest size.
    max_request_len: int = 64 * MiB
    # One reply: a MULTI_GET naming one 8 MiB key 128 Ki times asks for 1 TiB. Larger than
    # the request limit because the data is already in the store: a multi-get of every
    # rank's value in a large job may be tens of MiB.
    max_reply_len: int = 256 * MiB
    # Bytes held for all connections together (unparsed input and unsent replies). Over it,
    # the connection holding the most is dropped until the total fits again.
    buffer_budget: int = 512 * MiB
    # A client with this much reply unsent is not read from until it drains (TCP pushes
    # back on it): pipelined GETs cannot pile up replies.
    out_high_water: int = 1 * MiB
    # A torch client sends VALIDATE the moment it connects; a connection that has not
    # within this time is not a TCPStore client (or is one that no longer runs).
    handshake_timeout_s: float = 10.0
    # A request started but not finished, with nothing received for this long, is a stalled
    # or slow-loris client: dropped. An idle connection between requests is never dropped
    # (workers hold theirs for the whole job).
    frame_idle_timeout_s: float = 30.0
    # Dropped clients are logged and reported at most this many times per window; the rest
    # are counted into the next report.
    drop_reports_per_window: int = 5
    drop_report_window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.buffer_budget < self.max_request_len + self.max_reply_len:
            raise ValueError("buffer_budget must hold at least one request and one reply")
        if min(self.handshake_timeout_s, self.frame_idle_timeout_s) <= 0:
            raise ValueError("timeouts must be positive")
        if self.out_high_water <= 0:  # at 0 a client with a reply due would never be read
            raise ValueError("out_high_water must be positive")


DEFAULT_LIMITS = Limits()
