"""The agent's side of progress: files per rank, torch's file timer, and when to call a hang.

    ProgressWatch.worker_env   what each worker gets: LAUNCHER_PROGRESS_FILE, and
                               TORCHELASTIC_TIMER_FILE when the script asked for torch's timer
    ProgressWatch.begin        a new worker group: last attempt's files removed, detector reset
    ProgressWatch.poll         every `interval_s` from the monitor loop: reads every running
                               rank's file, emits armed/stalled events, straggler reports, and
                               returns an `Incident` when a rank hangs or a torch timer expires

Stragglers are scored job-wide: at the end of each window every node publishes its ranks'
medians through the rendezvous store (`WindowExchange`), and group rank 0 alone scores all
of them and reports. It waits for every node's medians of that window, or half a window at
most (nodes start their windows up to a rendezvous apart; a node that never publishes is
left out of that window, not waited for).

Polling files (not a socket or FIFO) keeps the worker side lock-free: a beat is a store
into an mmap, and a dead or slow agent can never block or break training.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from launcher import events as ev
from launcher.config import LaunchConfig
from launcher.progress import PROGRESS_FILE_ENV
from launcher.progress.detector import (
    HangDetected,
    HangDetector,
    HangPolicy,
    ProgressArmed,
    ProgressStalled,
)
from launcher.progress.file_timer import (
    ENABLE_FILE_TIMER_ENV,
    TIMER_FILE_ENV,
    FileTimerServer,
    default_timer_file_path,
)
from launcher.progress.reader import RankProgress, read_progress
from launcher.progress.stragglers import (
    RankMedian,
    SectionSampler,
    StragglerPolicy,
    StragglerTracker,
    decode_medians,
    encode_medians,
)


class Watched(Protocol):
    """A running worker as the watch sees it (launcher.workers.group.Worker fits)."""

    @property
    def pid(self) -> int: ...
    @property
    def local_rank(self) -> int: ...
    @property
    def global_rank(self) -> int: ...


class Membership(Protocol):
    """This node's place in the round (launcher.rendezvous.RoundInfo fits)."""

    @property
    def group_rank(self) -> int: ...
    @property
    def group_world_size(self) -> int: ...


class WindowExchange(Protocol):
    """The rendezvous store, as the straggler windows use it (the Rendezvous fits)."""

    def publish_window(self, window: int, payload: str) -> None: ...
    def collect_window(self, window: int) -> list[str]: ...


@dataclass(frozen=True, kw_only=True)
class Incident:
    """Why the agent calls a hang now; `detail` is the one line for reports."""

    # progress (no beat in time), file_timer (torch's expires()), peer (another node's hang),
    # symptom (a worker failed because a peer timed out: some rank is stuck somewhere)
    source: str
    rank: int | None
    pid: int | None
    step: int | None = None
    phase: str | None = None
    seconds_since_progress: float | None = None
    timeout_s: float | None = None
    scope_id: str | None = None

    @property
    def detail(self) -> str:
        if self.source == "file_timer":
            return f"rank {self.rank}: torch timer {self.scope_id!r} expired"
        if self.source == "peer":
            return "a hang on another node"
        if self.source == "symptom":
            return f"rank {self.rank} failed on a peer's timeout"
        where = f" in phase {self.phase!r}" if self.phase else ""
        at = f" at step {self.step}" if self.step is not None else ""
        return (
            f"rank {self.rank}: no progress for {self.seconds_since_progress or 0:.1f} s{at}"
            f"{where} (timeout {self.timeout_s or 0:g} s)"
        )

    def fields(self) -> dict[str, object]:
        return {
            "source": self.source,
            "rank": self.rank,
            "pid": self.pid,
            "step": self.step,
            "phase": self.phase,
            "seconds_since_progress": _round(self.seconds_since_progress),
            "timeout_s": self.timeout_s,
            "scope_id": self.scope_id,
            "detail": self.detail,
        }


class ProgressWatch:
    def __init__(
        self,
        *,
        policy: HangPolicy,
        run_dir: Path | None,
        agent_env: Mapping[str, str],
        events: ev.EventSink,
        node: str,
        allowed_pids: Callable[[], set[int]],
        straggler_policy: StragglerPolicy | None = None,
    ) -> None:
        self.policy = policy
        self._stragglers = straggler_policy or StragglerPolicy()
        # Each poll is one straggler sample: a window needs several to score a rank.
        self.interval_s = min(1.0, self._stragglers.window_s / 5)
        if policy.enabled:
            self.interval_s = min(self.interval_s, policy.hang_timeout_s / 10)
        self._own_dir = run_dir is None
        base = Path(tempfile.mkdtemp(prefix="launcher_progress_")) if run_dir is None else run_dir
        self.dir = base / "progress" if run_dir is not None else base
        self._events = events
        self._node = node
        self._detector = HangDetector(policy)
        self._sampler = SectionSampler(node=node)
        self._tracker = StragglerTracker(self._stragglers)
        self._window_end: float | None = None
        self._window_no = 0
        self._pending: tuple[int, float] | None = None  # (window, score it by then at most)
        self._exchange: WindowExchange | None = None
        self._nodes = 1
        self._scorer = True
        self._workers: list[Watched] = []
        self.timer: FileTimerServer | None = None
        if agent_env.get(ENABLE_FILE_TIMER_ENV) == "1":
            path = Path(agent_env.get(TIMER_FILE_ENV) or default_timer_file_path())
            self.timer = FileTimerServer(path, allowed_pids=allowed_pids)
            self.timer.start()

    @classmethod
    def configured(cls, config: LaunchConfig, **kw: Any) -> ProgressWatch:
        """The watch `config`'s flags ask for (--hang-timeout, --straggler-window)."""
        return cls(
            policy=HangPolicy(hang_timeout_s=config.hang_timeout_s),
            straggler_policy=StragglerPolicy(window_s=config.straggler_window_s),
            **kw,
        )

    def rank_file(self, global_rank: int) -> Path:
        return self.dir / f"rank-{global_rank}"

    def worker_env(self, global_rank: int, base: Mapping[str, str]) -> dict[str, str]:
        env = {PROGRESS_FILE_ENV: str(self.rank_file(global_rank))}
        if self.timer is not None:
            env[TIMER_FILE_ENV] = str(self.timer.path)
        if "PYTHONFAULTHANDLER" not in base:
            env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT then prints every thread's stack
        return env

    def begin(
        self,
        workers: Sequence[Watched],
        now: float,
        membership: Membership | None = None,
        exchange: WindowExchange | None = None,
    ) -> None:
        """A new group: its workers write fresh files (the last group's are removed first:
        a snapshot from a dead worker would arm, and hang, its successor). With several
        nodes, `exchange` carries the straggler windows to group rank 0."""
        self._workers = list(workers)
        self._detector = HangDetector(self.policy)
        self._sampler = SectionSampler(node=self._node)
        self._window_end = now + self._stragglers.window_s
        self._window_no, self._pending = 0, None
        self._nodes = membership.group_world_size if membership is not None else 1
        self._scorer = membership is None or membership.group_rank == 0
        self._exchange = exchange if self._nodes > 1 else None

    def clear_files(self) -> None:
        for path in self.dir.glob("rank-*") if self.dir.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def snapshots(self) -> dict[int, RankProgress]:
        return self._detector.latest()

    def poll(self, now: float) -> Incident | None:
        incident: Incident | None = None
        running = {w.global_rank: w for w in self._workers}
        for rank, worker in sorted(running.items()):
            snap = read_progress(self.rank_file(rank))
            if snap is not None:
                self._sampler.observe(rank, snap.sections)
            for found in self._detector.observe(rank, snap, now):
                incident = self._note(found, worker) or incident
        if self.timer is not None and incident is None:
            for expired in self.timer.pop_expired(now):
                owner = next((w for w in self._workers if w.pid == expired.pid), None)
                incident = Incident(
                    source="file_timer",
                    rank=owner.global_rank if owner else None,
                    pid=expired.pid,
                    scope_id=expired.scope_id,
                )
                break
        if self._window_end is not None and now >= self._window_end:
            self._window_end = now + self._stragglers.window_s
            self._close_window(now)
        if self._pending is not None:
            self._score_pending(now)
        return incident

    def _close_window(self, now: float) -> None:
        medians = self._sampler.close_window()
        self._window_no += 1
        if self._exchange is None:
            self._report_window(medians, nodes=1)
            return
        self._exchange.publish_window(self._window_no, encode_medians(medians))
        if self._scorer:
            self._pending = (self._window_no, now + self._stragglers.window_s / 2)

    def _score_pending(self, now: float) -> None:
        assert self._pending is not None and self._exchange is not None
        window, deadline = self._pending
        payloads = self._exchange.collect_window(window)
        if len(payloads) < self._nodes and now < deadline:
            return  # a node whose window closes a little later than ours: give it time
        self._pending = None
        medians = [m for payload in payloads for m in decode_medians(payload)]
        self._report_window(medians, nodes=len(payloads))

    def _note(self, found: object, worker: Watched) -> Incident | None:
        common = {"rank": worker.global_rank, "local_rank": worker.local_rank}
        if isinstance(found, ProgressArmed):
            self._events.emit(ev.PROGRESS_ARMED, **common, pid=found.pid, step=found.step)
        elif isinstance(found, ProgressStalled):
            self._events.emit(
                ev.PROGRESS_STALLED,
                **common,
                pid=found.pid,
                step=found.step,
                phase=found.phase,
                seconds_since_progress=_round(found.seconds_since_progress),
                timeout_s=found.timeout_s,
            )
        elif isinstance(found, HangDetected):
            return Incident(
                source="progress",
                rank=worker.global_rank,
                pid=worker.pid,
                step=found.step,
                phase=found.phase,
                seconds_since_progress=found.seconds_since_progress,
                timeout_s=found.timeout_s,
            )
        return None

    def _report_window(self, medians: Sequence[RankMedian], *, nodes: int) -> None:
        report = self._tracker.add_window(medians)
        for slow in report.stragglers:
            self._events.emit(
                ev.STRAGGLER_DETECTED,
                rank=slow.rank,
                node=slow.node,
                section=slow.section,
                score=round(slow.score, 3),
                median_s=slow.median_s,
                mean_s=slow.mean_s,
                fastest_s=slow.fastest_s,
                windows=slow.windows,
            )
        if report.stats:
            self._events.emit(
                ev.STRAGGLER_STATS,
                window=report.window,
                nodes=nodes,
                sections=[
                    {
                        "section": s.section,
                        "ranks": s.ranks,
                        "min_s": s.min_s,
                        "median_s": s.median_s,
                        "max_s": s.max_s,
                        "fastest_rank": s.fastest_rank,
                        "slowest": [list(pair) for pair in s.slowest],
                    }
                    for s in report.stats
                ],
            )

    def close(self) -> None:
        if self.timer is not None:
            self.timer.close()
        if self._own_dir:
            self.clear_files()
            with contextlib.suppress(OSError):
                os.rmdir(self.dir)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
