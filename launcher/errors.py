"""The launcher's exception tree.

    LauncherError                 anything the launcher reports to the user as one line
    +-- ConfigError               bad flags, env defaults or --rdzv-conf (exit 2, nothing started)
    +-- RendezvousError           the job could not be formed
    |   +-- RendezvousTimeoutError
    |   +-- RendezvousConnectionError
    |   +-- RendezvousAccessError  the store refused this client: TLS or credentials (exit 2)
    |   +-- RendezvousClosedError
    +-- WorkerStartError          a worker process could not be created

Every error builds its message from its fields, so the text and the data never disagree.
"""

from __future__ import annotations


class LauncherError(Exception):
    """Base class; `str(err)` is a single line naming the problem and the fix."""

    exit_code: int = 1


class ConfigError(LauncherError):
    exit_code = 2

    def __init__(self, problem: str, *, fix: str = "", flag: str = "") -> None:
        self.problem = problem
        self.fix = fix
        self.flag = flag
        prefix = f"{flag}: " if flag else ""
        suffix = f" ({fix})" if fix else ""
        super().__init__(f"{prefix}{problem}{suffix}")


class RendezvousError(LauncherError):
    def __init__(self, problem: str, *, run_id: str = "", endpoint: str = "") -> None:
        self.problem = problem
        self.run_id = run_id
        self.endpoint = endpoint
        where = f" [run {run_id}" + (f" at {endpoint}" if endpoint else "") + "]" if run_id else ""
        super().__init__(f"rendezvous: {problem}{where}")


class RendezvousTimeoutError(RendezvousError):
    pass


class RendezvousConnectionError(RendezvousError):
    pass


class RendezvousAccessError(RendezvousError):
    """The store answered and refused us (a certificate it or we do not trust, a wrong
    password, no permission): a configuration error that no retry fixes, so it exits 2
    like one instead of being retried until a timeout."""

    exit_code = 2


class RendezvousClosedError(RendezvousError):
    pass


class WorkerStartError(LauncherError):
    def __init__(self, problem: str, *, local_rank: int, command: str) -> None:
        self.problem = problem
        self.local_rank = local_rank
        self.command = command
        super().__init__(f"cannot start worker local_rank {local_rank} ({command}): {problem}")
