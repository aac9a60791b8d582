"""Worker groups in cgroup v2, so nothing they start can slip away.

A process can leave its process group and its session (setsid, a double fork, nohup,
`start_new_session=True`) and be reparented to init, but it cannot leave its cgroup: only a
write to `cgroup.procs` moves it, and that needs the rights that created the cgroup. So the
agent makes `<its own cgroup>/launcher-<pid>-<nonce>/` and in it one cgroup per worker group
(`g<n>`). Each worker enters its group's cgroup between fork and exec (it writes "0" to
`cgroup.procs` from the Popen child), so even its first child is born inside. Stopping is
then exact: `cgroup.procs` lists every process to SIGTERM, and `cgroup.kill` (Linux 5.14;
before that: freeze, SIGKILL each, thaw) SIGKILLs them all at once, forks in flight included.
The guardian writes `cgroup.kill` of the launcher's cgroup when the agent dies. torchrun
signals process groups only, so a detached descendant of a worker outlives every restart.

Only the unified (v2) hierarchy is used: it is where `cgroup.kill` and `cgroup.freeze` live, and
on a hybrid host it is mounted beside the v1 controllers (e.g. /sys/fs/cgroup/unified). The
agent's own cgroup keeps its controllers: nothing here enables or limits any.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Callable
from pathlib import Path

from launcher.workers import descendants
from launcher.workers.descendants import wait_gone


class CgroupUnavailable(Exception):
    """Why this machine or user cannot contain workers in cgroups (one line)."""


def unified_mount(mountinfo: str) -> tuple[Path, str] | None:
    """(mount point, root of the hierarchy it shows) of the cgroup2 mount, from mountinfo."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if sep and right.split()[:1] == ["cgroup2"]:
            fields = left.split()
            return Path(fields[4]), fields[3]
    return None


def own_cgroup(proc_cgroup: str) -> str | None:
    """This process's path in the unified hierarchy ("0::/path" in /proc/self/cgroup)."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def own_cgroup_dir() -> Path:
    """The directory of this process's own v2 cgroup, or CgroupUnavailable saying why not."""
    try:
        mount = unified_mount(Path("/proc/self/mountinfo").read_text())
        own = own_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError as err:
        raise CgroupUnavailable(f"cannot read /proc/self: {err.strerror}") from err
    if mount is None:
        raise CgroupUnavailable("no cgroup2 hierarchy is mounted")
    if own is None:
        raise CgroupUnavailable("this process is in no cgroup2 cgroup")
    point, root = mount
    root = root.rstrip("/")
    if own != root and not own.startswith(root + "/"):
        raise CgroupUnavailable(f"the cgroup2 mount at {point} does not show {own}")
    return point / own[len(root) :].lstrip("/")


class CgroupTree:
    """The launcher's own cgroup (`launcher-<pid>-<nonce>`) and its worker-group children."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._groups = 0

    @classmethod
    def create(cls, parent: Path | None = None) -> CgroupTree:
        """Makes the launcher's cgroup and proves a child process can enter it.

        Call before any thread starts: the proof forks. Raises CgroupUnavailable."""
        parent = own_cgroup_dir() if parent is None else parent
        base = parent / f"launcher-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            base.mkdir()
        except OSError as err:
            raise CgroupUnavailable(f"cannot create a cgroup in {parent}: {err.strerror}") from err
        tree = cls(base)
        try:
            if not (base / "cgroup.kill").exists() and not (base / "cgroup.freeze").exists():
                raise CgroupUnavailable("the kernel has neither cgroup.kill nor cgroup.freeze")
            probe = tree.new_group()
            try:
                _prove_entry(probe)
            finally:
                probe.remove()
        except BaseException:
            tree.remove()
            raise
        return tree

    def new_group(self) -> CgroupScope:
        self._groups += 1
        path = self.base / f"g{self._groups}"
        try:
            path.mkdir()
        except OSError as err:
            raise CgroupUnavailable(f"cannot create {path}: {err.strerror}") from err
        return CgroupScope(path)

    def remove(self) -> None:
        """Removes the (empty) launcher cgroup and any empty group left in it."""
        remove_tree(self.base)


class CgroupScope:
    """One worker group's cgroup: every process in it is the group's, however it detached."""

    kind = "cgroup"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._procs_fd = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def preexec(self) -> Callable[[], None]:
        """Runs in the Popen child before exec: moves it into this cgroup. Only a write to an
        already open descriptor: nothing there may take a lock another thread could hold."""
        fd = self._procs_fd
        return lambda: _enter(fd)

    def pids(self) -> list[int]:
        try:
            text = (self.path / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def signal(self, sig: int) -> list[int]:
        return descendants.send(self.pids(), sig)

    def kill(self) -> list[int]:
        """SIGKILLs everything in the cgroup at once (processes forking meanwhile too)."""
        pids = self.pids()
        kill_file = self.path / "cgroup.kill"
        if kill_file.exists():
            kill_file.write_text("1")
            return pids
        freeze = self.path / "cgroup.freeze"
        freeze.write_text("1")  # frozen processes cannot fork between listing and killing
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
        finally:
            freeze.write_text("0")  # SIGKILL is delivered once thawed
        return pids

    def wait_empty(self, timeout_s: float) -> bool:
        return wait_gone(self.pids, timeout_s)

    def remove(self) -> None:
        if self._procs_fd >= 0:
            os.close(self._procs_fd)
            self._procs_fd = -1
        try:
            self.path.rmdir()
        except OSError:
            return  # gone already, or still populated (D state): the tree's removal retries


def remove_tree(base: Path) -> None:
    """rmdir of `base` and its child cgroups, deepest first; busy ones are left."""
    try:
        children = [p for p in base.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return
    for child in children:
        remove_tree(child)
    try:
        base.rmdir()
    except OSError:
        return  # populated still (a process in D state) or already gone


def tree_pids(base: Path) -> list[int]:
    """Every process in `base` and the cgroups below it."""
    found: list[int] = []
    for procs in base.rglob("cgroup.procs"):
        try:
            found.extend(int(pid) for pid in procs.read_text().split())
        except OSError:
            continue  # removed while we looked
    return found


def kill_tree(base: Path) -> None:
    """cgroup.kill of `base` (it reaches every cgroup below it). For the guardian."""
    try:
        (base / "cgroup.kill").write_text("1")
        return
    except OSError:
        pass  # no cgroup.kill (before 5.14): signal what is listed, twice for forks in flight
    for _ in range(2):
        for pid in tree_pids(base):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue


def _enter(fd: int) -> None:  # pragma: no cover - runs in the Popen child
    os.write(fd, b"0")


def _prove_entry(scope: CgroupScope) -> None:
    """Forks a child that moves itself into `scope`: creating a cgroup is not enough, the
    move also needs write access to the common ancestor's cgroup.procs (delegation)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - forked child
        code = 1
        try:
            _enter(scope._procs_fd)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise CgroupUnavailable(f"a process cannot be moved into {scope.path}")
