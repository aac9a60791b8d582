"""The c10d backend's store: a TCPStore (torch 2.13's wire protocol) spoken with the project's
own standard-library server and client (launcher/tcpstore/), so the agent never imports torch.

Who hosts it, as torchrun decides (``c10d_rendezvous_backend._create_tcp_store``):
``--rdzv-conf is_host=1/0`` if given; otherwise every agent whose machine owns the endpoint's
address (``localhost``, any loopback address, this host's name, or an address it can bind)
tries to host, and the one that binds the port first does; the others, finding the port
taken, join as clients. Several agents on one machine therefore race, and whichever binds
first hosts: pass ``is_host`` where the host must be a given agent (docs/rendezvous.md).
Unlike torch's, the server listens only on the endpoint's addresses here (every interface
with ``--rdzv-conf store_bind=all``, or where those cannot serve: rendezvous/addresses.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from launcher.errors import RendezvousConnectionError
from launcher.rendezvous.addresses import BindPlan, listen, log_plan, machine_owns, plan_binding
from launcher.tcpstore.client import StoreClient, StoreConnectionError
from launcher.tcpstore.drops import OnDrop
from launcher.tcpstore.server import StoreServer

log = logging.getLogger(__name__)

# A client whose connection broke connects again on its next operation, waiting at most
# this long: a retry must stay short while the host is unreachable (the agent retries with
# backoff until store_outage_timeout).
_RECONNECT_TIMEOUT_S = 2.0


# The rendezvous never waits for a key (every operation answers at once), so a reply later
# than this is a store that does not answer (a black-holed link, a frozen host): the step
# fails and the store-outage window runs, instead of the agent waiting read_timeout (60 s)
# per operation, heartbeats and its workers' watch included.
REPLY_TIMEOUT_S = 5.0


class C10dStore:
    """The Store protocol over one StoreClient connection; the hosting agent's first one
    also owns the server, which must outlive every reconnect."""

    def __init__(
        self, client: StoreClient, *, endpoint: str, server: StoreServer | None = None
    ) -> None:
        self._client = client
        self._server = server
        self.endpoint = endpoint
        self.hosting = server is not None

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        *,
        is_host: bool | None,
        timeout_s: float,
        run_id: str,
        store_bind: str = "auto",
        remote_peers: bool = True,
        on_drop: OnDrop | None = None,
    ) -> C10dStore:
        """``remote_peers``: agents on other machines may connect (``--nnodes`` above 1);
        ``on_drop`` hears of clients the hosted server dropped for misbehaving."""
        endpoint = f"{host}:{port}"
        server = None
        if is_host if is_host is not None else machine_owns(host):
            plan = plan_binding(host, store_bind=store_bind, remote_peers=remote_peers)
            server = _host(
                port,
                plan=plan,
                explicit=is_host is not None,
                endpoint=endpoint,
                run_id=run_id,
                on_drop=on_drop,
            )
        try:
            client = StoreClient(
                host,
                port,
                timeout_s=timeout_s,
                reconnect_timeout_s=_RECONNECT_TIMEOUT_S,
                reply_timeout_s=min(timeout_s, REPLY_TIMEOUT_S),
            )
        except StoreConnectionError as err:
            if server is not None:
                server.stop()
            raise RendezvousConnectionError(
                f"cannot reach the rendezvous store at {endpoint} ({err.reason}); start an "
                f"agent on the machine that owns {host} (it hosts the store), or pass "
                "--rdzv-conf is_host=1 to one agent, and check the address and port",
                run_id=run_id,
                endpoint=endpoint,
            ) from err
        return cls(client, endpoint=endpoint, server=server)

    def clone(self) -> C10dStore:
        """Another client connection (for a second thread)."""
        return C10dStore(self._client.clone(), endpoint=self.endpoint)

    def get(self, key: str) -> str | None:
        value = self._client.get_if_present(key)
        return None if value is None else _text(value)

    def multi_get(self, keys: Sequence[str]) -> list[str | None]:
        return [None if v is None else _text(v) for v in self._client.multi_get_if_present(keys)]

    def set(self, key: str, value: str) -> None:
        self._client.set(key, value)

    def multi_set(self, items: Sequence[tuple[str, str]]) -> None:
        if items:
            self._client.multi_set([k for k, _ in items], [v for _, v in items])

    def compare_set(self, key: str, expected: str | None, value: str) -> str:
        return _text(self._client.compare_set(key, expected or "", value))

    def add(self, key: str, delta: int) -> int:
        return self._client.add(key, delta)

    def close(self) -> None:
        self._client.close()
        if self._server is not None:
            self._server.stop()
            self._server = None


def _host(
    port: int,
    *,
    plan: BindPlan,
    explicit: bool,
    endpoint: str,
    run_id: str,
    on_drop: OnDrop | None,
) -> StoreServer | None:
    """The store's server on the planned addresses, or None when the port is taken and
    hosting was only inferred (another agent on this machine won the race: join it)."""
    try:
        listeners = listen(plan, port)
    except OSError as err:
        if explicit:
            raise RendezvousConnectionError(
                f"cannot host the rendezvous store on port {port}: {err.strerror}; pick "
                "another --rdzv-endpoint port (is another job using it?)",
                run_id=run_id,
                endpoint=endpoint,
            ) from err
        # As torchrun: an inferred host that cannot bind joins as a client, whatever the
        # reason (the usual one: another agent on this machine bound the port first).
        log.info("cannot host the store on port %d (%s); joining as a client", port, err.strerror)
        return None
    server = StoreServer(listeners, label="the rendezvous store", on_drop=on_drop)
    server.start()
    log.info("hosting the rendezvous store at %s", endpoint)
    log_plan("the rendezvous store", plan, port)
    return server


def _text(value: bytes) -> str:
    """A stored value as text. Bytes that are not UTF-8 (garbage from an intruder) become
    lone surrogates, not an error: a reader that checks values rejects them, and writing
    one back (a compare-and-set expecting it) sends the same bytes."""
    return value.decode("utf-8", "surrogateescape")
