"""The c10d backend's store: torch's TCPStore, hosted by the agent whose address matches
the endpoint (or `--rdzv-conf is_host=1`), reached by the others as clients.

torch is imported here and only here (and only for multi-node c10d/static jobs).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
from collections.abc import Sequence
from typing import Any

from launcher.errors import RendezvousConnectionError

log = logging.getLogger(__name__)


def _local_addresses() -> set[str]:
    found = {"127.0.0.1", "::1"}
    for name in {socket.gethostname(), socket.getfqdn()}:
        try:
            found.update(str(info[4][0]) for info in socket.getaddrinfo(name, None))
        except socket.gaierror:
            continue
    return found


def _resolve(host: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return set()


def endpoint_is_local(host: str, local_addr: str | None) -> bool:
    """Whether this agent should host the store at `host`.

    With --local-addr the answer is exact (several agents share one machine in tests and
    in containers); without it, torchrun's rule: any name or address of this machine."""
    targets = _resolve(host)
    if local_addr is not None:
        return bool(targets & (_resolve(local_addr) or {local_addr}))
    if host in ("localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    return bool(targets & _local_addresses())


# A client whose connection broke connects again on its next operation, waiting at most
# this long: TCPStore never reconnects by itself, and a retry must stay short while the
# host is unreachable (the agent retries with backoff until store_outage_timeout).
_RECONNECT_TIMEOUT_S = 2.0


class C10dStore:
    def __init__(
        self, store: Any, *, endpoint: str, hosting: bool, timeout_s: float = 60.0
    ) -> None:
        self._store = store
        # The hosting TCPStore object runs the server: it must outlive any reconnect.
        self._server = store if hosting else None
        self.endpoint = endpoint
        self.hosting = hosting
        self._timeout_s = timeout_s
        self._broken = False

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        *,
        is_host: bool | None,
        local_addr: str | None,
        timeout_s: float,
        run_id: str,
    ) -> C10dStore:
        import torch.distributed as dist

        endpoint = f"{host}:{port}"
        timeout = datetime.timedelta(seconds=timeout_s)
        hosting = is_host if is_host is not None else endpoint_is_local(host, local_addr)
        if hosting:
            try:
                store = dist.TCPStore(  # type: ignore[attr-defined]
                    host,
                    port,
                    is_master=True,
                    multi_tenant=True,
                    wait_for_workers=False,
                    timeout=timeout,
                    use_libuv=True,
                )
                return cls(store, endpoint=endpoint, hosting=True, timeout_s=timeout_s)
            except (RuntimeError, ValueError, OSError) as err:
                if is_host:
                    raise RendezvousConnectionError(
                        f"cannot host the rendezvous store on port {port}: {err} "
                        "(is another job using it? pick another --rdzv-endpoint port)",
                        run_id=run_id,
                        endpoint=endpoint,
                    ) from err
                # Inferred, not asked for: another agent on this machine hosts it already.
                log.info("store at %s already hosted here (%s); joining as a client", endpoint, err)
        try:
            store = dist.TCPStore(  # type: ignore[attr-defined]
                host, port, is_master=False, timeout=timeout, use_libuv=True
            )
        except (RuntimeError, ValueError, OSError) as err:
            first_line = (
                str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            )
            raise RendezvousConnectionError(
                f"cannot reach the rendezvous store at {endpoint} within {timeout_s:.0f}s "
                f"({first_line}); start the agent whose --local-addr matches the endpoint "
                "(or pass --rdzv-conf is_host=1 to one agent) and check the address",
                run_id=run_id,
                endpoint=endpoint,
            ) from err
        return cls(store, endpoint=endpoint, hosting=False, timeout_s=timeout_s)

    def clone(self) -> C10dStore:
        """Another client connection (for a second thread)."""
        return C10dStore(
            self._live().clone(), endpoint=self.endpoint, hosting=False, timeout_s=self._timeout_s
        )

    def _live(self) -> Any:
        """The connection, made again first if the last operation broke it."""
        if self._broken:
            import torch.distributed as dist

            host, _, port = self.endpoint.rpartition(":")
            store = dist.TCPStore(  # type: ignore[attr-defined]
                host.strip("[]"),
                int(port),
                is_master=False,
                timeout=datetime.timedelta(seconds=min(self._timeout_s, _RECONNECT_TIMEOUT_S)),
                use_libuv=True,
            )
            store.set_timeout(datetime.timedelta(seconds=self._timeout_s))
            self._store, self._broken = store, False
            log.info("reconnected to the rendezvous store at %s", self.endpoint)
        return self._store

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._live(), name)(*args)
        except (RuntimeError, OSError, ValueError):
            # A reset or timed-out connection stays broken in TCPStore; connect again on
            # the next operation. The failing operation itself is not replayed here: it
            # may have been applied, and only the protocol step can re-run safely.
            self._broken = True
            raise

    def get(self, key: str) -> str | None:
        if not self._call("check", [key]):
            return None
        return bytes(self._call("get", key)).decode()

    def multi_get(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        if self._call("check", list(keys)):
            return [bytes(v).decode() for v in self._call("multi_get", list(keys))]
        return [self.get(key) for key in keys]

    def set(self, key: str, value: str) -> None:
        self._call("set", key, value)

    def multi_set(self, items: Sequence[tuple[str, str]]) -> None:
        if items:
            self._call("multi_set", [k for k, _ in items], [v for _, v in items])

    def compare_set(self, key: str, expected: str | None, value: str) -> str:
        return bytes(self._call("compare_set", key, expected or "", value)).decode()

    def add(self, key: str, delta: int) -> int:
        return int(self._call("add", key, delta))

    def close(self) -> None:
        self._store = None
        self._server = None
