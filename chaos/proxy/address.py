"""Listen and upstream addresses, parsed and resolved the way Go's `net.Listen` does.

A proxy reports the address it actually bound (port 0 becomes the real port, `localhost`
becomes `127.0.0.1`, a wildcard reads back as `[::]:port` because it is bound dual-stack),
keeps it, and re-binds exactly that on enable and reset. Failures carry Go's wording, since
clients show it to users (500 `listen tcp 127.0.0.1:3310: bind: address already in use`).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket

from chaos.proxy.errors import SERVER_ERROR, ApiError

_WILDCARDS = ("", "0.0.0.0", "::")


def split(text: str, prefix: str = "listen tcp: ") -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) into its parts; Go's messages when it is malformed."""
    host, colon, port_text = text.rpartition(":")
    if not colon:
        raise ApiError(SERVER_ERROR, f"{prefix}address {text}: missing port in address")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ApiError(SERVER_ERROR, f"{prefix}address {text}: too many colons in address")
    if port_text == "":
        return host, 0
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ApiError(SERVER_ERROR, f"{prefix}address {text}: invalid port")
    return host, int(port_text)


def _ip(host: str) -> str:
    """An IP literal for `host`, IPv4 preferred for names (as Go does for `localhost`)."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    try:
        # Blocking, but only for names the proxy's own user typed (usually /etc/hosts).
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ApiError(SERVER_ERROR, f"listen tcp: lookup {host}: no such host") from exc
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(infos[0][4][0])


def display(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def resolve(text: str) -> str:
    """What `text` would read back as once bound (port 0 stays 0): for update and populate,
    which compare it with a proxy's current address."""
    host, port = split(text, prefix="")
    if host in _WILDCARDS:
        return display("::" if socket.has_ipv6 else "0.0.0.0", port)
    return display(_ip(host), port)


def bind(text: str) -> tuple[socket.socket, str]:
    """A listening socket for `text` and the address it reads back as."""
    host, port = split(text)
    wildcard = host in _WILDCARDS
    ip = "::" if wildcard and socket.has_ipv6 else "0.0.0.0" if wildcard else _ip(host)
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
    except OSError:  # IPv6 compiled in but off (a bare network namespace): IPv4 wildcard
        ip = "0.0.0.0"
        sock = socket.socket(socket.AF_INET)
    family = sock.family
    try:
        # Go sets SO_REUSEADDR on listeners: re-enabling binds again past TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if wildcard and family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((ip, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = os.strerror(exc.errno or errno.EINVAL)
        reason = reason[:1].lower() + reason[1:]
        raise ApiError(SERVER_ERROR, f"listen tcp {display(ip, port)}: bind: {reason}") from exc
    bound_ip, bound_port = sock.getsockname()[:2]
    return sock, display("::" if wildcard else bound_ip, bound_port)
