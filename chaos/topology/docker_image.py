"""The docker topology's node image, built offline, and the labels every object carries.

No registry is reachable here, so `FROM debian` cannot build. The built-in image is an almost
empty root imported from a tar made in memory (`docker import`, about 0.1 s): the folders a
container needs, `bin`/`lib`/`lib64` links into `usr`, and a real `sbin` (docker-init is
mounted there). Containers of that image get the host's `/usr`, `/etc`, the Python install
prefix and the virtual environment bind-mounted read-only at the same absolute paths (a venv
is not relocatable), so they run the harness's own Python and torch. A user's image (one with
Python and torch of its own) is run as it is, with only the project and the run directory
mounted.

Every container and network the harness creates is labelled with the run and with its owner
(the harness's pid and start time), so a later harness removes what a killed one left behind
and never what a live one is still using.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.topology import procs
from chaos.topology.base import TopologyError

BUILTIN_IMAGE = "chaos-node:offline"
LABEL = "chaos.harness"  # on everything the harness creates; the value is the kind
LABEL_RUN = "chaos.run"
LABEL_OWNER = "chaos.owner"  # "<pid>:<start time>" of the harness process
_ROOT_DIRS = ("usr", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var", "var/tmp", "sbin")
_ROOT_LINKS = (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"))


def owner_label() -> str:
    me = procs.identify(os.getpid())
    assert me is not None  # this process is alive
    return f"{me.pid}:{me.start}"


def owner_alive(label: str | None) -> bool:
    """Whether the harness that created an object still runs (same pid and start time)."""
    pid, _, start = (label or "").partition(":")
    if not pid.isdigit() or not start.isdigit():
        return False
    return procs.proc_start(int(pid)) == int(start)


def host_mount_paths() -> list[str]:
    """What a container of the built-in image needs from the host, read-only, same paths."""
    paths = ["/usr", "/etc", sys.base_prefix, sys.prefix]
    keep: list[str] = []
    for path in sorted(set(paths), key=len):
        # A prefix under /usr (Debian's python3) is already in; a venv under a prefix too.
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in keep):
            keep.append(path)
    return keep


def remove_containers(client: Any, ids: list[str]) -> tuple[list[str], list[str]]:
    """Force-removes containers (killing what runs), newest first; returns the failures
    as messages and the ids still there. One already gone is not a failure."""
    import docker.errors

    failed: list[str] = []
    left: list[str] = []
    for cid in reversed(ids):
        try:
            client.api.remove_container(cid, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            failed.append(f"container {cid[:12]}: {err}")
            left.append(cid)
    return failed, left


def _root_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in _ROOT_DIRS:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name in ("tmp", "var/tmp") else 0o755
            tar.addfile(info)
        for name, target in _ROOT_LINKS:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def ensure_builtin_image(client: Any) -> str:
    """Imports the built-in image unless it is already there; returns its name."""
    import docker.errors

    try:
        client.images.get(BUILTIN_IMAGE)
        return BUILTIN_IMAGE
    except docker.errors.ImageNotFound:
        pass
    repo, tag = BUILTIN_IMAGE.split(":")
    client.api.import_image_from_data(
        _root_tar(), repository=repo, tag=tag, changes=[f"LABEL {LABEL}=image"]
    )
    client.images.get(BUILTIN_IMAGE)  # raises if the import did not produce it
    return BUILTIN_IMAGE


def check_user_image(client: Any, image: str) -> None:
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise TopologyError(
            f"docker image {image!r} is not on this machine and no registry can be reached: "
            "`docker load` or `docker import` it first (or leave topology.image unset for the "
            "built-in image)"
        ) from None


@dataclass(frozen=True, kw_only=True)
class NodeImage:
    """What a node container runs: the image, its Python, and the read-only mounts."""

    name: str
    python: str
    host_mounts: tuple[str, ...]

    @classmethod
    def choose(cls, client: Any, image: str | None) -> NodeImage:
        if image is None or image == BUILTIN_IMAGE:
            name = ensure_builtin_image(client)
            return cls(name=name, python=sys.executable, host_mounts=tuple(host_mount_paths()))
        check_user_image(client, image)
        return cls(name=image, python="python3", host_mounts=())

    def binds(self, project: Path, run_dir: Path) -> dict[str, dict[str, str]]:
        binds = {path: {"bind": path, "mode": "ro"} for path in self.host_mounts}
        binds[str(project)] = {"bind": str(project), "mode": "ro"}
        binds[str(run_dir)] = {"bind": str(run_dir), "mode": "rw"}
        return binds


def remove_stale(client: Any) -> list[str]:
    """Removes containers and networks whose harness is gone; returns their names."""
    removed: list[str] = []
    for ctr in client.containers.list(all=True, filters={"label": LABEL}):
        if not owner_alive(ctr.labels.get(LABEL_OWNER)):
            with contextlib.suppress(Exception):
                ctr.remove(force=True, v=True)
                removed.append(ctr.name)
    for net in client.networks.list(filters={"label": LABEL}):
        if not owner_alive((net.attrs.get("Labels") or {}).get(LABEL_OWNER)):
            with contextlib.suppress(Exception):
                net.remove()
                removed.append(net.name)
    return removed
