"""Rendezvous store backends, each imported lazily by name (`etcd` needs no extra package).

c10d     C10dStore: a TCPStore (torch's wire protocol, our own code), hosted by one agent
         (also the `static` backend's store)
etcd     EtcdStore: a real etcd (>= 3.4) cluster through its v3 JSON gateway, with failover
         across members, TLS and user/password sign-in (standard library only)

`open_store(config)` opens the configured one.
"""

from __future__ import annotations

from collections.abc import Callable

from launcher.config import LaunchConfig
from launcher.errors import RendezvousConnectionError
from launcher.rendezvous.store import Store
from launcher.tcpstore.drops import OnDrop


def open_store(config: LaunchConfig, *, on_drop: OnDrop | None = None) -> Callable[[], Store]:
    """Opens the backend's store; returns a factory for more client connections.
    ``on_drop``: told of clients a store this agent hosts dropped for misbehaving."""
    opts = config.rdzv
    backend = config.rdzv_backend
    if backend in ("c10d", "static"):
        from launcher.rendezvous.backends.c10d import C10dStore

        is_host = opts.is_host
        if backend == "static":
            is_host = config.node_rank == 0
        timeout = opts.timeout_s if backend == "static" else opts.read_timeout_s
        first = C10dStore.open(
            config.rdzv_host,
            int(config.rdzv_port or 0),
            is_host=is_host,
            timeout_s=timeout,
            run_id=config.run_id,
            store_bind=opts.store_bind,
            remote_peers=config.max_nodes > 1,
            on_drop=on_drop,
        )
        clones: list[Store] = [first]

        def c10d_factory() -> Store:
            return clones.pop() if clones else first.clone()

        return c10d_factory
    if backend in ("etcd", "etcd-v2"):
        from launcher.rendezvous.backends.etcd import EtcdStore
        from launcher.rendezvous.backends.etcd_transport import ClientTls, Credentials
        from launcher.rendezvous.backends.etcd_wire import parse_endpoints

        endpoints = parse_endpoints(config.rdzv_endpoint_text, default_port=2379)
        etcd = opts.etcd
        # Read once, here, at start: a bad file is a ConfigError before anything runs, and
        # the agent's stores share one TLS context and one sign-in.
        tls = None
        if etcd.protocol == "https":
            tls = ClientTls.load(cacert=etcd.cacert, cert=etcd.cert, key=etcd.key)
        credentials = None
        if etcd.username is not None and etcd.password_file is not None:
            credentials = Credentials.from_file(etcd.username, etcd.password_file)

        def etcd_factory() -> Store:
            return EtcdStore(
                endpoints,
                prefix=etcd.prefix,
                timeout_s=opts.read_timeout_s,
                protocol=etcd.protocol,
                tls=tls,
                credentials=credentials,
            )

        return etcd_factory
    raise RendezvousConnectionError(f"backend {backend!r} has no multi-node store")
