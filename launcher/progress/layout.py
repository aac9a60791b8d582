"""The progress file: one page per rank, fixed offsets, written in place by the worker.

The worker mmaps `LAUNCHER_PROGRESS_FILE` and overwrites fixed fields; the agent reads them.
There is no queue, no socket and no pickle, so a worker never blocks or fails when the agent
is slow or gone. Little-endian, all times are `time.monotonic()` seconds (CLOCK_MONOTONIC is
system-wide on Linux, so the agent compares them with its own clock).

    offset size  field
    ------ ----  ---------------------------------------------------------------------------
         0    8  magic b"LPROGRES" (written last when the file is set up: no magic, no data)
         8    4  version u32 (1)
        12    4  pid u32 of the writer
        16    8  opened_at f64 (monotonic)
        24    8  reserved
        32   48  beat block:    seq u64 | step i64 (-1: none given) | beat_at f64 |
                                longest_interval_s f64 | beats u64 | seq u64
        80   56  phase block:   seq u64 | name 24s (empty: no phase open) |
                                timeout_s f64 (< 0: none, detection suspended) |
                                changed_at f64 (open: the phase's start; closed: its end) | seq u64
       136    8  reserved
       144 1024  16 section slots of 64 bytes, claimed in order of first use:
                                seq u64 | name 24s | count u64 | total_s f64 | last_s f64 | seq u64

Consistency without locks: every block is written by ONE `struct.pack_into` (one C call under
the GIL, so threads of a worker never interleave inside a block), which stores its fields in
order, the block's sequence number first and again last. The reader reads the trailing copy
first, then the fields, then the leading copy, and accepts the block only if both copies
match; a block torn by a concurrent write fails that check and is read again. This keeps the
hot path to a single store (a classic "odd while writing" seqlock needs a second one), and
relies on stores becoming visible in program order (true on x86-64; on weakly-ordered CPUs a
torn read is possible but only ever shows a mix of two consecutive, equally plausible values).

`longest_interval_s` ignores the first `WARMUP_BEATS` beats (compilation, cache fills) and the
time spent inside phases; `changed_at` lets the detector restart the steady-state clock when a
long phase (a checkpoint) ends.
"""

from __future__ import annotations

import struct

__all__ = [
    "BEAT",
    "BEAT_OFFSET",
    "FILE_SIZE",
    "HEADER",
    "MAGIC",
    "NAME_BYTES",
    "NO_TIMEOUT",
    "PHASE",
    "PHASE_OFFSET",
    "SECTION",
    "SECTION_OFFSET",
    "SECTION_SLOTS",
    "VERSION",
    "WARMUP_BEATS",
    "section_offset",
]

MAGIC = b"LPROGRES"
VERSION = 1
NAME_BYTES = 24
NO_TIMEOUT = -1.0
WARMUP_BEATS = 5

HEADER = struct.Struct("<8sIId8x")
BEAT = struct.Struct("<QqddQQ")
PHASE = struct.Struct(f"<Q{NAME_BYTES}sddQ")
SECTION = struct.Struct(f"<Q{NAME_BYTES}sQddQ")

BEAT_OFFSET = HEADER.size
PHASE_OFFSET = BEAT_OFFSET + BEAT.size
SECTION_OFFSET = PHASE_OFFSET + PHASE.size + 8
SECTION_SLOTS = 16
FILE_SIZE = SECTION_OFFSET + SECTION_SLOTS * SECTION.size

assert (HEADER.size, BEAT.size, PHASE.size, SECTION.size) == (32, 48, 56, 64)
assert (BEAT_OFFSET, PHASE_OFFSET, SECTION_OFFSET, FILE_SIZE) == (32, 80, 144, 1168)


def section_offset(slot: int) -> int:
    return SECTION_OFFSET + slot * SECTION.size
