"""Who owns which `chx*` network namespaces, so leftovers of dead harnesses can be removed.

Network namespaces outlive the process that made them: a harness SIGKILLed mid-run leaves its
`chx<tag>-*` namespaces behind (its agents die with it, through `setpriv --pdeathsig`). Another
harness may be running at the same moment (pytest-xdist runs two), so "every chx* namespace
is stale" is wrong. Each netns run therefore claims its name prefix first:

    /run/chaos-netns/<prefix>   {"pid", "start", "boot_id", "created", "run_id"}

written (atomically: a temp file hard-linked into place, which fails if the name is taken)
*before* any namespace of the prefix is created, and removed only once they are all deleted.
`start` is the owner's start time from /proc/<pid>/stat, so a recycled pid is not mistaken for
the owner, and `boot_id` makes claims from before a reboot stale (namespaces do not survive
one; the claim file may, when /run is not a tmpfs).

`reap_stale` removes, for each prefix found (namespaces named `<prefix>` or `<prefix>-*`, and
claim files):
- claimed by a harness that is gone (no such pid, another start time, another boot): its
  namespaces, then the claim;
- unclaimed (no claim file, or one that cannot be read): its namespaces, but only when every
  one of them is older than `unclaimed_after_s` (default 10 minutes, from the namespace's
  inode time) and no process lives in any of them. Those come from a harness without claims
  (an older version) or from someone's manual work; the age and the "nobody inside" rule keep
  a running one safe, since a running job has agents inside its namespaces.
A live owner's namespaces are never touched, however old. Claiming a prefix and reaping hold
one lock (flock on /run/chaos-netns/.lock), so a reaper never deletes namespaces of a prefix
that was claimed again after it judged the prefix stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.topology import procs

CLAIMS_DIR = Path("/run/chaos-netns")
NETNS_DIR = Path("/run/netns")  # where `ip netns add` mounts named namespaces
UNCLAIMED_AFTER_S = 600.0
_LOCK = ".lock"


@dataclass(frozen=True, kw_only=True)
class Owner:
    pid: int
    start: int  # clock ticks after boot (procs.proc_start)
    boot_id: str

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        start = procs.proc_start(pid)
        if start is None:  # our own /proc entry is always there
            raise RuntimeError("cannot read this process's start time from /proc")
        return cls(pid=pid, start=start, boot_id=boot_id())

    def alive(self) -> bool:
        return self.boot_id == boot_id() and procs.proc_start(self.pid) == self.start


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@contextlib.contextmanager
def locked(claims_dir: Path = CLAIMS_DIR) -> Iterator[None]:
    """Holds the claims lock (claims and reaps are serialised across harnesses)."""
    claims_dir.mkdir(parents=True, exist_ok=True)
    with (claims_dir / _LOCK).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def claim_path(prefix: str, claims_dir: Path = CLAIMS_DIR) -> Path:
    return claims_dir / prefix


def write_claim(
    prefix: str, owner: Owner, *, run_id: str = "", claims_dir: Path = CLAIMS_DIR
) -> bool:
    """Claims `prefix` for `owner`; False if someone already holds a claim on it."""
    claims_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "pid": owner.pid,
        "start": owner.start,
        "boot_id": owner.boot_id,
        "created": time.time(),
        "run_id": run_id,
    }
    tmp = claims_dir / f".{prefix}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data) + "\n")
    try:
        os.link(tmp, claim_path(prefix, claims_dir))
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def read_claim(prefix: str, claims_dir: Path = CLAIMS_DIR) -> Owner | None:
    """The owner named by the claim on `prefix`; None if there is none or it is unreadable."""
    try:
        data: Any = json.loads(claim_path(prefix, claims_dir).read_text())
        return Owner(pid=int(data["pid"]), start=int(data["start"]), boot_id=str(data["boot_id"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def release(prefix: str, claims_dir: Path = CLAIMS_DIR) -> None:
    claim_path(prefix, claims_dir).unlink(missing_ok=True)


def prefix_of(name: str) -> str:
    """`chx3fa1c2-n0` -> `chx3fa1c2` (the run's prefix: everything before the first dash)."""
    return name.split("-", 1)[0]


def _ns_age_s(name: str) -> float | None:
    try:
        return time.time() - (NETNS_DIR / name).stat().st_mtime
    except OSError:
        return None


def _occupied(names: list[str]) -> bool:
    """Whether any process lives in one of these namespaces (by nsfs inode)."""
    wanted: set[tuple[int, int]] = set()
    for name in names:
        with contextlib.suppress(OSError):
            st = (NETNS_DIR / name).stat()
            wanted.add((st.st_dev, st.st_ino))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            st = (entry / "ns" / "net").stat()
        except OSError:
            continue  # gone, or a kernel thread we may not look at
        if (st.st_dev, st.st_ino) in wanted:
            return True
    return False


def reap_stale(
    namespaces: list[str],
    delete: Callable[[str], bool],
    *,
    prefix: str = "chx",
    unclaimed_after_s: float = UNCLAIMED_AFTER_S,
    claims_dir: Path = CLAIMS_DIR,
) -> list[str]:
    """Deletes the stale namespaces among `namespaces` (those starting with `prefix`) and the
    stale claims; `delete(name)` deletes one namespace and says whether it is gone. Returns
    the namespaces deleted. Call it holding `locked()`."""
    groups: dict[str, list[str]] = {}
    for name in namespaces:
        if name.startswith(prefix):
            groups.setdefault(prefix_of(name), []).append(name)
    claimed = {
        path.name
        for path in (claims_dir.iterdir() if claims_dir.is_dir() else ())
        if path.name.startswith(prefix) and path.is_file()
    }
    reaped: list[str] = []
    for run in sorted(set(groups) | claimed):
        names = sorted(groups.get(run, []))
        owner = read_claim(run, claims_dir) if run in claimed else None
        if owner is not None:
            if owner.alive():
                continue
        else:
            ages = [_ns_age_s(name) for name in names]
            young = any(age is None or age < unclaimed_after_s for age in ages)
            if young or _occupied(names):
                continue
        gone = [name for name in names if delete(name)]
        reaped.extend(gone)
        if run in claimed and len(gone) == len(names):
            release(run, claims_dir)
    return reaped
