"""Which mechanism keeps every descendant of the workers within reach, chosen once at start.

    cgroup     a cgroup v2 per worker group (launcher.workers.cgroup): exact and atomic;
               needs root or a delegated subtree
    subreaper  the agent adopts every orphan (launcher.workers.descendants); the guardian
               finds them by their environment token once the agent is gone

`--containment auto` (the default) takes the cgroup when this process may create one and
falls back to the subreaper, logging the choice and the reason once; `cgroup` insists (an
error if impossible), `subreaper` skips cgroups. Either way a worker group is a `Scope`: the
processes of one group, to signal, kill, wait for and remove.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from launcher.errors import LauncherError
from launcher.workers import descendants
from launcher.workers.cgroup import CgroupTree, CgroupUnavailable
from launcher.workers.guardian import Guardian

log = logging.getLogger(__name__)

AUTO, CGROUP, SUBREAPER = "auto", "cgroup", "subreaper"


class ContainmentError(LauncherError):
    exit_code = 2

    def __init__(self, mode: str, reason: str) -> None:
        self.mode = mode
        self.reason = reason
        super().__init__(
            f"--containment {mode}: {reason} (run as root or in a delegated cgroup, "
            "or use --containment auto)"
        )


class Scope(Protocol):
    """The processes of one worker group, the workers and everything they started."""

    kind: str

    def preexec(self) -> Callable[[], None] | None: ...
    def pids(self) -> list[int]: ...
    def signal(self, sig: int) -> list[int]: ...
    def kill(self) -> list[int]: ...
    def wait_empty(self, timeout_s: float) -> bool: ...
    def remove(self) -> None: ...


class SubreaperScope:
    """Everything below the agent but the guardian (earlier groups were emptied before)."""

    kind = SUBREAPER

    def __init__(self, *, token: str, spared: frozenset[int], owned: Callable[[], set[int]]):
        self._token = token
        self._spared = spared
        self._owned = owned  # pids Popen reaps: never waitpid them here

    def preexec(self) -> Callable[[], None] | None:
        return None

    def pids(self) -> list[int]:
        kids = [p for p in descendants.children(os.getpid()) if p not in self._spared]
        owned = self._owned()
        descendants.reap(p for p in kids if p not in owned)  # adopted orphans that exited
        found = set(descendants.tree(kids))
        # A process that re-parented itself elsewhere (a subreaper of its own that died
        # before us) still carries the token.
        found.update(descendants.token_pids(self._token))
        return sorted(found - self._spared)

    def signal(self, sig: int) -> list[int]:
        return descendants.send(self.pids(), sig)

    def kill(self) -> list[int]:
        return self.signal(signal.SIGKILL)

    def wait_empty(self, timeout_s: float) -> bool:
        return descendants.wait_gone(self.pids, timeout_s)

    def remove(self) -> None:
        descendants.reap(
            p for p in descendants.children(os.getpid()) if p not in self._owned() | self._spared
        )


@dataclass(kw_only=True)
class Containment:
    """How this agent keeps its workers' processes from escaping."""

    mechanism: str
    reason: str  # why this mechanism (the fallback's cause, or what was asked)
    token: str
    cgroups: CgroupTree | None = None
    spared: frozenset[int] = frozenset()  # the guardian: below the agent, not the job's

    def new_scope(self, owned: Callable[[], set[int]]) -> Scope:
        if self.cgroups is not None:
            return self.cgroups.new_group()
        return SubreaperScope(token=self.token, spared=self.spared, owned=owned)

    def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.remove()

    def describe(self) -> str:
        where = f" ({self.cgroups.base})" if self.cgroups is not None else ""
        return f"{self.mechanism}{where}: {self.reason}"


def choose(mode: str) -> Containment:
    """Sets up the mechanism `mode` allows. Call before any thread starts (cgroup's probe
    forks). Raises ContainmentError when `mode` is cgroup and it cannot be had."""
    token = f"{os.getpid()}-{secrets.token_hex(6)}"
    if mode in (AUTO, CGROUP):
        try:
            tree = CgroupTree.create()
        except CgroupUnavailable as err:
            if mode == CGROUP:
                raise ContainmentError(mode, str(err)) from err
            reason = f"cgroup v2 unavailable: {err}"
        else:
            chosen = Containment(mechanism=CGROUP, reason="cgroup v2", token=token, cgroups=tree)
            log.info("worker containment: %s", chosen.describe())
            return chosen
    else:
        reason = "asked for with --containment subreaper"
    try:
        descendants.become_subreaper()
    except OSError as err:
        raise ContainmentError(mode, f"{reason}; and {err}") from err
    chosen = Containment(mechanism=SUBREAPER, reason=reason, token=token)
    log.info("worker containment: %s", chosen.describe())
    return chosen


def guarded(mode: str) -> tuple[Containment, Guardian]:
    """The containment `mode` allows, and a guardian that enforces it if the agent dies.
    Call before any thread starts: both fork."""
    chosen = choose(mode)
    guardian = Guardian()
    chosen.spared = frozenset({guardian.pid})
    if chosen.cgroups is not None:
        guardian.contain_cgroup(chosen.cgroups.base)
    guardian.contain_token(chosen.token)
    return chosen, guardian
