"""Where the agent's store servers listen: on the address the job reaches them by, not on every
interface (torch's servers listen on all of them; docs/security.md says why we do not).

Two servers, two names:

    the c10d rendezvous store   hosted by an agent, reached at --rdzv-endpoint's host
                                (the static backend's at --master-addr)
    the workers' store          served by group rank 0's agent, reached at MASTER_ADDR: that
                                node's --local-addr, or its FQDN

Each binds every address that name resolves to on this machine (IPv4 and IPv6, all on one
port). Every interface instead, with the reason in the log, when:

- ``--rdzv-conf store_bind=all`` says so (a multi-homed host whose peers reach it by another
  of its addresses than the one the name gives here);
- the name resolves to no address of this machine (a NAT or load-balancer address, a
  stale hosts file): binding it would fail, and torchrun would have listened everywhere;
- other machines take part and a host *name* resolves here only to loopback (Debian's
  ``/etc/hosts`` maps the host's own name to 127.0.1.1): peers resolve it to the real
  address, which this machine cannot name, so only every interface reaches them.

An address literal or ``localhost`` is taken at its word: 127.0.0.2 binds 127.0.0.2 alone.
``machine_owns`` is torchrun's test for "this agent may host the c10d store".
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

STORE_BIND_CHOICES = ("auto", "all")
_BACKLOG = 1024
_PORT_TRIES = 8  # an ephemeral port free on the first address but taken on another: retry


def resolve(host: str) -> list[str]:
    """The addresses `host` resolves to here, in the resolver's order, without repeats."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def bindable(address: str) -> bool:
    """Whether an interface of this machine has `address` (binding port 0 claims nothing)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def machine_owns(host: str) -> bool:
    """torchrun's test for "the endpoint is this machine" (``_matches_machine_hostname``):
    ``localhost``, a loopback address, this host's name, or an address of this host. torch
    compares only with the addresses its hostname resolves to (missing secondary NICs);
    asking the kernel whether the address can be bound answers for every interface."""
    if host == "localhost" or host in (socket.gethostname(), socket.getfqdn()):
        return True
    return any(_loopback(a) or bindable(a) for a in resolve(host.strip("[]")))


@dataclass(frozen=True, kw_only=True, slots=True)
class BindPlan:
    """The addresses a store listens on, and why."""

    addresses: tuple[str, ...]  # empty: every interface
    reason: str  # for the log line: why these
    warn: bool = False  # the job asked for less exposure than it gets

    def describe(self, port: int | None = None) -> str:
        shown = ", ".join(f"[{a}]" if ":" in a else a for a in self.addresses)
        where = shown or "every interface"
        return f"{where}{'' if port is None else f' port {port}'} ({self.reason})"


def plan_binding(
    host: str,
    *,
    store_bind: str = "auto",
    remote_peers: bool,
    lookup: Callable[[str], list[str]] = resolve,
    can_bind: Callable[[str], bool] = bindable,
) -> BindPlan:
    """What a store reached at `host` binds; `remote_peers`: other machines may connect."""
    if store_bind == "all":
        return BindPlan(addresses=(), reason="--rdzv-conf store_bind=all")
    name = host.strip("[]")
    local = tuple(a for a in lookup(name) if can_bind(a))
    if not local:
        reason = f"{host} is not an address of this machine"
        return BindPlan(addresses=(), reason=reason, warn=True)
    named = not _literal(name) and name != "localhost"
    if remote_peers and named and all(_loopback(a) for a in local):
        reason = (
            f"{host} resolves here only to loopback ({', '.join(local)}), which other "
            "machines cannot reach; give an address (--local-addr, --rdzv-endpoint) to "
            "listen on it alone"
        )
        return BindPlan(addresses=(), reason=reason, warn=True)
    return BindPlan(
        addresses=local, reason=f"the address{'es' if len(local) > 1 else ''} of {host}"
    )


def _every_interface(port: int) -> socket.socket:
    try:  # IPv6 and IPv4 on one socket, as torch's server
        return socket.create_server(
            ("", port), family=socket.AF_INET6, backlog=_BACKLOG, dualstack_ipv6=True
        )
    except (OSError, ValueError):  # no IPv6 on this host
        return socket.create_server(("", port), backlog=_BACKLOG)


def _one(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def listen(plan: BindPlan, port: int) -> list[socket.socket]:
    """Listening sockets for `plan`, all on one port (`port`, or one the kernel picks for
    the first address). Raises OSError (EADDRINUSE: the port is taken on one of them)."""
    if not plan.addresses:
        return [_every_interface(port)]
    for attempt in range(_PORT_TRIES):
        socks: list[socket.socket] = []
        try:
            for address in plan.addresses:
                socks.append(_one(address, port or (socks[0].getsockname()[1] if socks else 0)))
        except OSError as err:
            for sock in socks:
                sock.close()
            retry = port == 0 and len(socks) > 0 and err.errno == errno.EADDRINUSE
            if retry and attempt < _PORT_TRIES - 1:
                continue
            raise
        return socks
    raise AssertionError("unreachable: the last try returns or raises")


def log_plan(what: str, plan: BindPlan, port: int | None = None) -> None:
    (log.warning if plan.warn else log.info)("%s listens on %s", what, plan.describe(port))
