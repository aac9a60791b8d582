"""How `EtcdStore` reaches a member: TLS, a user's credentials, kept-alive connections.

Connections: one HTTP/1.1 connection per (thread, member), kept open and reused. A fresh
connection per request cost, per `get` on loopback, 0.3 ms of client CPU and 0.6 ms of etcd's
over HTTP, and 1.5 ms and 2.0 ms over TLS (a handshake each time): with a hundred agents on
one small machine that was much of the CPU. A connection the server closed while it sat idle
(a member restarted, an idle timeout) is not a failure of that member: it is noticed before
use (an idle connection with something to read is at its end) or by the request failing on
it before any reply, and the request then goes once more on a fresh connection to the same
member. Sending a request twice is safe for the reason failover is (etcd.py: writes are
idempotent or compare-guarded, and `add` recognises its own marker).

TLS: `ClientTls.load` builds the context once per agent (the CA bundle that verifies the
members, the client certificate for etcd's `--client-cert-auth`); a file that cannot be used
is a ConfigError naming its key. `tls_refusal` tells a handshake that failed for good (a
certificate that does not verify, on either side) from a connection that merely broke. Over
TLS 1.3 a member judges the client certificate after the handshake, and its alert can be
lost to the request crossing it: a fresh TLS connection that breaks that way is tried once
more, reading the member's verdict before the request goes (`_await_verdict`).

Credentials: etcd's `POST /v3/auth/authenticate {"name", "password"}` answers a token that
goes, as it is (no "Bearer"), in the `Authorization` header of every request. etcd checks the
password with bcrypt, costly for it, so every store of one agent shares one token.
"""

from __future__ import annotations

import select
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from launcher.errors import ConfigError
from launcher.rendezvous.backends.http_wire import HttpConnection

if TYPE_CHECKING:
    import ssl

# `ssl` is imported only for TLS (ClientTls.load): without it no error can be a TLS one.
# Failures of the handshake or the stream that another try may get past.
_TRANSIENT_SSL = ("SSLEOFError", "SSLZeroReturnError", "SSLSyscallError")


def _ssl_module() -> ModuleType | None:
    return sys.modules.get("ssl")


def _stale(err: BaseException) -> bool:
    """How a kept connection that the server had closed fails a request sent on it."""
    ssl_ = _ssl_module()
    return isinstance(err, ConnectionError) or (
        ssl_ is not None and isinstance(err, ssl_.SSLEOFError)
    )


def _conf_error(keys: str, path: Path | None, problem: str) -> ConfigError:
    return ConfigError(f"{keys}={path}: {problem}", flag="--rdzv-conf")


@dataclass(frozen=True, kw_only=True)
class ClientTls:
    """The TLS context for every connection to etcd, and the files it came from (for hints)."""

    context: ssl.SSLContext
    cacert: Path | None = None
    cert: Path | None = None

    @classmethod
    def load(
        cls, *, cacert: Path | None = None, cert: Path | None = None, key: Path | None = None
    ) -> ClientTls:
        """Reads the files now, so a bad one fails at start, naming its `--rdzv-conf` key."""
        import ssl  # only TLS needs it (see http_wire.py)

        for name, path in (("cacert", cacert), ("cert", cert), ("key", key)):
            if path is not None:
                try:
                    with path.open("rb"):
                        pass
                except OSError as err:
                    raise _conf_error(name, path, f"cannot read: {err.strerror or err}") from None
        try:  # only the given bundle when there is one, else the system's CAs
            context = ssl.create_default_context(cafile=None if cacert is None else str(cacert))
        except ssl.SSLError as err:
            problem = f"no PEM CA certificate in it ({err.reason or err})"
            raise _conf_error("cacert", cacert, problem) from None
        if cert is not None:
            if key is None:
                raise _conf_error("cert", cert, "needs key=PATH (its private key)")

            def no_passphrase() -> str:
                problem = "is encrypted, and the launcher cannot ask for its passphrase"
                raise _conf_error("key", key, problem)

            try:
                context.load_cert_chain(str(cert), str(key), password=no_passphrase)
            except ssl.SSLError as err:
                problem = "not a PEM certificate and its private key"
                if err.reason == "KEY_VALUES_MISMATCH":
                    problem = "the key is not the certificate's"
                raise ConfigError(
                    f"cert={cert}, key={key}: {problem} ({err.reason or err})",
                    flag="--rdzv-conf",
                ) from None
        return cls(context=context, cacert=cacert, cert=cert)


def tls_refusal(err: BaseException, tls: ClientTls | None) -> str | None:
    """What went wrong, when `err` is a TLS failure that retrying cannot fix; else None."""
    ssl = _ssl_module()
    if ssl is None or not isinstance(err, ssl.SSLError):
        return None
    if type(err).__name__ in _TRANSIENT_SSL:
        return None
    if isinstance(err, ssl.SSLCertVerificationError):
        which = f"cacert={tls.cacert}" if tls and tls.cacert else "the system's CAs (no cacert)"
        return (
            f"TLS: the member's certificate does not verify against {which}: {err.verify_message}"
        )
    reason = str(err.reason or err)
    if "ALERT" in reason:
        # The member rejected the handshake: with --client-cert-auth, a missing certificate
        # or one it does not trust (expired, another CA) all read as "bad certificate".
        if tls is None or tls.cert is None:
            return f"TLS: the member refused the connection ({reason}); it may want cert=, key="
        return (
            f"TLS: the member refused the client certificate cert={tls.cert} ({reason}): "
            "it must be signed by a CA etcd trusts (--trusted-ca-file) and valid now"
        )
    if reason == "WRONG_VERSION_NUMBER":  # an HTTP answer; etcd itself just hangs up
        return "TLS: the member does not speak TLS on this port (protocol=http?)"
    return f"TLS: {reason}"


class Credentials:
    """A user's name and password, and the token etcd issued for them (None until the first
    request, and again once etcd rejects it). Shared by the stores of one agent."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password
        self.token: str | None = None
        self.lock = threading.Lock()  # one authentication at a time

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r})"  # never the password

    def body(self) -> dict[str, str]:
        return {"name": self.username, "password": self._password}

    @classmethod
    def from_file(cls, username: str, path: Path) -> Credentials:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            problem = getattr(err, "strerror", None) or str(err)
            raise _conf_error("password_file", path, f"cannot read: {problem}") from None
        password = text.rstrip("\r\n")  # the newline an editor or `echo` adds
        if not password:
            raise _conf_error("password_file", path, "is empty")
        return cls(username, password)


class Connections:
    """One kept-alive HTTP connection per (thread, member); `post` sends on it."""

    def __init__(self, endpoints: tuple[tuple[str, int], ...], tls: ClientTls | None) -> None:
        self._endpoints = endpoints
        self._tls = tls
        self._open: dict[tuple[int, int], HttpConnection] = {}
        self._lock = threading.Lock()  # guards _open; each connection is one thread's
        self.opened = 0  # connections made (tests and benchmarks read it)

    def post(
        self,
        index: int,
        path: str,
        payload: bytes,
        headers: dict[str, str],
        timeouts: tuple[float, float],
    ) -> tuple[int, bytes]:
        """One POST to member `index`; timeouts: (connect, reply) in seconds."""
        slot = (threading.get_ident(), index)
        conn = self._open.get(slot)
        if conn is not None and _idle_closed(conn):
            self._drop(slot)
            conn = None
        reused = conn is not None
        try:
            if conn is None:
                conn = self._connect(slot, timeouts[0])
            return conn.post(path, payload, headers, timeouts[1])
        except BaseException as err:
            self._drop(slot)  # a half-done exchange leaves the connection unusable
            if not _stale(err) or (not reused and self._tls is None):
                raise
        # A kept connection the server had closed; or, over TLS 1.3, a fresh one the member
        # closed when the request came: it judges our certificate after the handshake, and
        # its alert is often lost to our request crossing it (measured: half the time with
        # etcd). Once more on a fresh connection, reading its verdict before sending.
        try:
            conn = self._connect(slot, timeouts[0])
            if not reused:
                _await_verdict(conn, timeouts[0])
            return conn.post(path, payload, headers, timeouts[1])
        except BaseException:
            self._drop(slot)
            raise

    def close(self) -> None:
        with self._lock:
            conns, self._open = list(self._open.values()), {}
        for conn in conns:
            conn.close()

    def _connect(self, slot: tuple[int, int], timeout_s: float) -> HttpConnection:
        host, port = self._endpoints[slot[1]]
        context = self._tls.context if self._tls is not None else None
        conn = HttpConnection(host, port, timeout=timeout_s, context=context)
        with self._lock:
            self._open[slot] = conn
            self.opened += 1
        conn.connect()  # TCP, and the TLS handshake, within the connect timeout
        return conn

    def _drop(self, slot: tuple[int, int]) -> None:
        with self._lock:
            conn = self._open.pop(slot, None)
        if conn is not None:
            conn.close()


def _idle_closed(conn: HttpConnection) -> bool:
    """Whether a kept connection has ended: between requests nothing is due to arrive, so a
    readable socket is at its end (or holds bytes nobody asked for); both mean reconnect."""
    sock = conn.sock
    if sock is None:  # closed after a reply that said `Connection: close`
        return True
    poller = select.poll()  # not select(): an agent may hold more than 1024 descriptors
    poller.register(sock, select.POLLIN)
    try:
        return bool(poller.poll(0))  # POLLIN, or POLLHUP/POLLERR, which poll always reports
    except OSError:
        return True


def _await_verdict(conn: HttpConnection, timeout_s: float) -> None:
    """Waits (bounded) for what a TLS 1.3 server sends once it has judged the client: session
    tickets (accepted) or an alert, raised here as the SSLError it is. A server that sends
    neither just costs the wait."""
    sock, ssl = conn.sock, _ssl_module()
    if ssl is None or not isinstance(sock, ssl.SSLSocket) or sock.version() != "TLSv1.3":
        return  # before 1.3 the handshake itself carries the verdict
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(timeout_s * 1000):
        return
    sock.setblocking(False)
    try:
        sock.recv(1)  # an HTTP server says nothing first: this reads tickets, or the alert
    except ssl.SSLWantReadError:
        pass  # tickets only: accepted
    finally:
        sock.settimeout(timeout_s)
