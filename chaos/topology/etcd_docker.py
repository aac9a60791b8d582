"""etcd members as containers on a docker run's internal network (a `Placement`, see
chaos.topology.etcd_members).

Member i is the container `<prefix>-e<i>` at `address(i)` (10.214.<k>.<200+i>) on the run's
network, always of the harness's built-in offline image with the host's `/usr` mounted (that
is where `/usr/bin/etcd` comes from, whatever image the nodes use), and only the etcd log
directory mounted read-write. etcd runs as the container's PID 1 (`sh -c 'exec etcd ...'`),
with its data in the container's own layer, so removing the container removes the data.

The containers carry the node containers' labels (`chaos.harness=etcd`, the run, the owner),
so a later harness removes them when this one dies without teardown (`remove_stale`).
Killing a member is `docker kill`; the stopped container stays until `close()`, so its log
and state can still be looked at. The harness cannot reach the network from the host, so
probes run in a live member's network namespace: `nsenter -t <pid> -n` as root, otherwise
`docker exec` (the binaries are the host's, mounted at the same paths).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.topology import procs
from chaos.topology.base import TopologyError
from chaos.topology.docker_image import (
    LABEL,
    ensure_builtin_image,
    host_mount_paths,
    remove_containers,
)
from chaos.topology.etcd_members import CLIENT_PORT, PEER_PORT

_WAIT_S = 10.0
# sh execs etcd with its output in the member's log: the container's PID 1 is etcd itself.
_REDIRECT = 'exec "$@" >>"$CHAOS_ETCD_LOG" 2>&1'


@dataclass(frozen=True, kw_only=True)
class _Member:
    id: str
    proc: procs.ProcId  # etcd, PID 1 of the container, as the host sees it


class DockerPlacement:
    """Members as containers on network `network`; `address(i)` and `name(i)` are read when
    the member starts (the topology may redraw its subnet in `up()`)."""

    direct = False

    def __init__(
        self,
        client: Any,
        *,
        network: str,
        address: Callable[[int], str],
        name: Callable[[int], str],
        labels: dict[str, str],
    ) -> None:
        self.client = client
        self.network = network
        self._address = address
        self._name = name
        self.labels = {**labels, LABEL: "etcd"}
        self._members: dict[int, _Member] = {}  # started members
        self._ids: dict[int, str] = {}  # the member's latest container, started or not
        self._created: list[str] = []  # every container id, started or not

    def address(self, index: int) -> str:
        return self._address(index)

    def ports(self, size: int) -> list[tuple[int, int]]:
        return [(CLIENT_PORT, PEER_PORT)] * size  # each container has its own port space

    def data_dir(self, index: int, attempt: int) -> str:
        return f"/tmp/etcd-m{index}-try{attempt}"  # in the container's layer; etcd creates it

    def spawn(self, index: int, argv: list[str], log: Path) -> None:
        import docker.errors

        mounts = host_mount_paths()
        binary = os.path.realpath(argv[0])
        if not any(binary.startswith(path.rstrip("/") + "/") for path in mounts):
            raise TopologyError(f"etcd at {binary} is not under {mounts}, which members mount")
        self._remove(index)  # a retry replaces the container of the failed attempt
        image = ensure_builtin_image(self.client)
        binds = {path: {"bind": path, "mode": "ro"} for path in mounts}
        binds[str(log.parent)] = {"bind": str(log.parent), "mode": "rw"}
        api, name = self.client.api, self._name(index)
        created = api.create_container(
            image,
            command=["/bin/sh", "-c", _REDIRECT, "etcd", binary, *argv[1:]],
            name=name,
            hostname=f"etcd{index}",
            environment={"CHAOS_ETCD_LOG": str(log)},
            labels=self.labels,
            host_config=api.create_host_config(binds=binds, network_mode=self.network),
            networking_config=api.create_networking_config(
                {self.network: api.create_endpoint_config(ipv4_address=self.address(index))}
            ),
        )
        cid = str(created["Id"])
        self._created.append(cid)  # removed by close() even if it never starts
        self._ids[index] = cid
        try:
            api.start(cid)
        except docker.errors.APIError as err:
            raise TopologyError(f"etcd container {name}: {err.explanation or err}") from None
        pid = int(api.inspect_container(cid)["State"]["Pid"])
        proc = procs.identify(pid) if pid else None
        if proc is None:
            raise TopologyError(f"etcd container {name} exited at once: see {log}")
        self._members[index] = _Member(id=cid, proc=proc)

    def pid(self, index: int) -> int | None:
        member = self._members.get(index)
        return member.proc.pid if member is not None and member.proc.alive() else None

    def kill(self, index: int) -> int | None:
        import docker.errors

        member = self._members.get(index)
        if member is None or not member.proc.alive():
            return None
        with contextlib.suppress(docker.errors.APIError):  # it stopped on its own meanwhile
            self.client.api.kill(member.id, "SIGKILL")
        with contextlib.suppress(Exception):  # the SDK raises several types for a timeout
            self.client.api.wait(member.id, timeout=_WAIT_S)
        return member.proc.pid

    def probe_exec(self, index: int) -> list[str]:
        member = self._members.get(index)
        if member is None or not member.proc.alive():
            raise TopologyError(f"etcd member {index} has no running container")
        if os.geteuid() == 0 and shutil.which("nsenter"):
            return ["nsenter", "-t", str(member.proc.pid), "-n"]
        return ["docker", "exec", member.id]

    def _remove(self, index: int) -> None:
        import docker.errors

        self._members.pop(index, None)
        cid = self._ids.pop(index, None)
        if cid is not None:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(cid, force=True, v=True)
            self._created.remove(cid)

    def close(self) -> list[str]:
        """Removes every member container (killing what still runs)."""

        failed, self._created = remove_containers(self.client, self._created)
        self._members.clear()
        self._ids.clear()
        return failed
