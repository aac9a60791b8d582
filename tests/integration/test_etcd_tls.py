"""etcd over TLS with client certificates and etcd's own users, against a REAL etcd.

One etcd per module (and xdist worker) runs with `--client-cert-auth` and auth enabled
(users `root` and `agent`, made with etcdctl); the certificates are made here, in the test's
temporary directory. Failures must be one line naming the endpoint, exit 2, and fast: a
certificate or a password is not retried for `read_timeout` (60 s).
"""

from __future__ import annotations

import http.server
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chaos.topology.etcd import EtcdCluster, etcd_binary, etcdctl_binary, free_ports
from chaos.topology.etcd_tls import CertAuthority, TlsFiles
from launcher.errors import ConfigError, RendezvousAccessError
from launcher.rendezvous.backends.etcd import EtcdStore
from launcher.rendezvous.backends.etcd_transport import ClientTls, Credentials
from tests.conftest import Procs
from tests.integration.test_multinode_etcd import describe_all, start_nodes

pytestmark = [pytest.mark.integration, pytest.mark.etcd]

FAIL_FAST_S = 2.0  # a refused certificate or password, at the store
CLI_FAIL_FAST_S = 10.0  # the same through the CLI: an interpreter start on a busy machine
PASSWORD = "s3cret-pass"  # the file holds it and a newline, which is not part of it
# Needs no torch: the rendezvous is what these tests are about.
WORKER = "import os, sys; open(os.path.join(sys.argv[1], os.environ['RANK']), 'w').close()\n"


@dataclass(frozen=True)
class Secure:
    etcd: EtcdCluster
    ca: CertAuthority
    files: TlsFiles
    password_file: Path
    dir: Path

    @property
    def endpoint(self) -> str:
        host, port = self.etcd.endpoints[0]
        return f"{host}:{port}"

    def conf(self, **changes: str) -> str:
        keys = {**self.files.rdzv_conf(), "username": "agent"}
        keys |= {"password_file": str(self.password_file), "read_timeout": "60", **changes}
        return ",".join(f"{k}={v}" for k, v in keys.items())

    def ctl(self, *args: str, stdin: str = "") -> None:
        """etcdctl as root (as itself before auth is on: the certificate has no name)."""
        files = self.files
        argv = [str(etcdctl_binary()), f"--endpoints={self.etcd.client_url(0)}"]
        argv += [f"--cacert={files.ca}", f"--cert={files.client_cert}"]
        argv += [f"--key={files.client_key}", "--user=root:rootpw", *args]
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, f"etcdctl {args}: {done.stderr}"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    if etcd_binary() is None or etcdctl_binary() is None:
        pytest.skip("etcd and etcdctl are needed (apt-get install etcd-server etcd-client)")
    directory = tmp_path_factory.mktemp("etcd-tls")
    ca = CertAuthority(directory)
    server_cert, server_key = ca.issue("server", hosts=["127.0.0.1"])
    client_cert, client_key = ca.issue("client")
    files = TlsFiles(
        ca=ca.cert,
        server_cert=server_cert,
        server_key=server_key,
        client_cert=client_cert,
        client_key=client_key,
    )
    password_file = directory / "password"
    password_file.write_text(PASSWORD + "\n")
    with EtcdCluster(1, tls=files) as etcd:
        setup = Secure(etcd, ca, files, password_file, directory)
        for args in (
            ["user", "add", "root:rootpw"],
            ["user", "grant-role", "root", "root"],
            ["user", "add", f"agent:{PASSWORD}"],
            ["role", "add", "rdzv"],
            ["role", "grant-permission", "rdzv", "--prefix=true", "readwrite", "/launcher/"],
            ["user", "grant-role", "agent", "rdzv"],
            ["auth", "enable"],
        ):
            setup.ctl(*args)
        yield setup


def store(secure: Secure, endpoints: list[tuple[str, int]] | None = None) -> EtcdStore:
    files = secure.files
    return EtcdStore(
        endpoints or secure.etcd.endpoints,
        prefix=f"/launcher/test-{uuid.uuid4().hex[:8]}/",
        protocol="https",
        tls=ClientTls.load(cacert=files.ca, cert=files.client_cert, key=files.client_key),
        credentials=Credentials.from_file("agent", secure.password_file),
    )


# -- the happy path ---------------------------------------------------------------------------


def test_two_agents_finish_over_tls_with_a_user(
    secure: Secure, procs: Procs, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    nodes = start_nodes(
        procs,
        tmp_path,
        count=2,
        endpoint=secure.endpoint,
        nnodes="2",
        script=script,
        script_args=[str(out)],
        extra_args=["--rdzv-conf", secure.conf()],
    )
    codes = [node.wait() for node in nodes]
    assert codes == [0, 0], describe_all(nodes)
    assert sorted(p.name for p in out.iterdir()) == ["0", "1"]


def test_one_connection_per_thread_and_a_new_token_when_etcd_drops_it(secure: Secure) -> None:
    # The member twice: were the restart's dead connection counted as a failure, the store
    # would move on to the second entry.
    etcd = store(secure, endpoints=secure.etcd.endpoints * 2)
    etcd.set("k", "v")
    assert [etcd.get("k") for _ in range(20)] == ["v"] * 20
    assert etcd.add("n", 2) == 2
    assert etcd._connections.opened == 1
    token = etcd._credentials.token if etcd._credentials else None
    # A new password (the same one) makes etcd forget the user's tokens.
    secure.ctl("user", "passwd", "agent", "--interactive=false", stdin=PASSWORD + "\n")
    assert etcd.get("k") == "v"
    assert etcd._credentials is not None and etcd._credentials.token not in (None, token)
    secure.etcd.kill_member(0)
    secure.etcd.restart_member(0)  # its kept connection is now closed
    assert etcd.add("n", 1) == 3
    assert (etcd._connections.opened, etcd._preferred) == (2, 0)
    etcd.close()
    assert etcd._connections._open == {}


# -- what the store refuses, fast and in one line ---------------------------------------------


def test_a_stale_kept_connection_is_reopened_not_failed_over() -> None:
    """A server that closes a kept connection when the next request arrives (the race a
    keep-alive timeout leaves open): the request goes again on a new connection."""
    seen: list[int] = []  # per request: how many the connection had carried before

    class OncePerConnection(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        served = 0  # one handler per connection

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.served)
            self.served += 1
            if self.served > 1:
                self.close_connection = True  # closed unanswered: nothing was applied
                return
            body = b'{"kvs": [{"value": "dg==", "mod_revision": "1"}]}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OncePerConnection)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        endpoint = ("127.0.0.1", server.server_port)
        etcd = EtcdStore([endpoint, endpoint], timeout_s=10)
        assert [etcd.get("k"), etcd.get("k")] == ["v", "v"]
        assert (seen, etcd._connections.opened, etcd._preferred) == ([0, 1, 0], 2, 0)
        etcd.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def refused(make: EtcdStore) -> str:
    began = time.monotonic()
    with pytest.raises(RendezvousAccessError) as info:
        make.get("k")
    took = time.monotonic() - began
    assert took < FAIL_FAST_S, f"{took:.1f}s: {info.value}"
    # One member: a connection, and a second where the member's alert was lost (TLS 1.3).
    assert make._connections.opened <= 2, "retried"
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "\n" not in message and PASSWORD not in message
    return message


def test_wrong_ca_expired_certificate_and_bad_password_are_refused_at_once(
    secure: Secure,
) -> None:
    files, url = secure.files, secure.etcd.client_url(0)
    other = CertAuthority(secure.dir / "other", name="another CA")
    wrong_ca = ClientTls.load(cacert=other.cert, cert=files.client_cert, key=files.client_key)
    expired_cert, expired_key = secure.ca.issue("expired-client", expired=True)
    expired = ClientTls.load(cacert=files.ca, cert=expired_cert, key=expired_key)
    right = ClientTls.load(cacert=files.ca, cert=files.client_cert, key=files.client_key)
    endpoints = secure.etcd.endpoints
    user = Credentials("agent", PASSWORD)
    message = refused(EtcdStore(endpoints, protocol="https", tls=wrong_ca, credentials=user))
    assert f"etcd at {url}: TLS" in message and str(other.cert) in message
    for _ in range(10):  # etcd often hangs up before its alert arrives: never a retry pass
        message = refused(EtcdStore(endpoints, protocol="https", tls=expired, credentials=user))
        assert str(expired_cert) in message and "BAD_CERTIFICATE" in message
    wrong = Credentials("agent", "wrong")
    message = refused(EtcdStore(endpoints, protocol="https", tls=right, credentials=wrong))
    assert f"etcd at {url} refused user 'agent'" in message and "password" in message
    message = refused(EtcdStore(endpoints, protocol="https", tls=right))
    assert "permission denied (pass username=, password_file=)" in message


def test_an_expired_server_certificate_is_refused_at_once(tmp_path: Path) -> None:
    ca = CertAuthority(tmp_path)
    cert, key = ca.issue("server", hosts=["127.0.0.1"], expired=True)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept() -> None:
            conn, _ = listener.accept()
            with conn, pytest.raises(ssl.SSLError):
                server_side.wrap_socket(conn, server_side=True)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        tls = ClientTls.load(cacert=ca.cert)
        message = refused(EtcdStore([("127.0.0.1", port)], protocol="https", tls=tls))
        thread.join(timeout=10)
    assert f"etcd at https://127.0.0.1:{port}: TLS" in message and "expired" in message


@pytest.mark.parametrize("case", ["wrong_ca", "expired_client", "bad_password"])
def test_the_launcher_exits_2_with_one_line(
    secure: Secure, procs: Procs, tmp_path: Path, case: str
) -> None:
    files = secure.files
    if case == "wrong_ca":
        changes = {"cacert": str(CertAuthority(tmp_path, name="another CA").cert)}
    elif case == "expired_client":
        cert, key = secure.ca.issue(f"expired-{uuid.uuid4().hex[:6]}", expired=True)
        changes = {"cert": str(cert), "key": str(key)}
    else:
        wrong = tmp_path / "wrong"
        wrong.write_text("not the password\n")
        changes = {"password_file": str(wrong)}
    assert files.ca.exists()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    began = time.monotonic()
    result = procs.run_launcher(
        "--nnodes", "2", "--rdzv-backend", "etcd", "--rdzv-endpoint", secure.endpoint,
        "--rdzv-id", f"tls-{uuid.uuid4().hex[:8]}", "--local-addr", "127.0.0.2",
        "--rdzv-conf", secure.conf(**changes), str(script), str(tmp_path),
        timeout=60,
    )  # fmt: skip
    assert result.code == 2, result
    assert time.monotonic() - began < CLI_FAIL_FAST_S, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("launcher: error: rendezvous: "), result
    assert f"etcd at https://{secure.endpoint}" in lines[0], result
    assert PASSWORD not in result.err + result.out


# -- files that cannot be used: ConfigError at start, naming the key ----------------------------


def test_unusable_files_are_config_errors_naming_the_key(tmp_path: Path) -> None:
    ca = CertAuthority(tmp_path)
    cert, key = ca.issue("client")
    other_cert, _ = ca.issue("other")
    missing, not_pem, empty = tmp_path / "missing.pem", tmp_path / "x.txt", tmp_path / "empty"
    not_pem.write_text("hello\n")
    empty.write_text("\n")
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: ClientTls.load(cacert=missing), f"cacert={missing}: cannot read"),
        (lambda: ClientTls.load(cacert=not_pem), f"cacert={not_pem}: no PEM CA certificate"),
        (lambda: ClientTls.load(cert=other_cert, key=key), "the key is not the certificate's"),
        (lambda: ClientTls.load(cert=cert, key=missing), f"key={missing}: cannot read"),
        (lambda: Credentials.from_file("u", missing), f"password_file={missing}: cannot read"),
        (lambda: Credentials.from_file("u", empty), f"password_file={empty}: is empty"),
    ]
    for make, text in cases:
        with pytest.raises(ConfigError) as info:
            make()
        assert text in str(info.value) and "\n" not in str(info.value)


def test_a_missing_file_stops_the_launcher_at_start(procs: Procs, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    missing = tmp_path / "nope.pem"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = procs.run_launcher(
        "--nnodes", "2", "--rdzv-backend", "etcd", "--rdzv-endpoint", f"127.0.0.1:{port}",
        "--rdzv-conf", f"protocol=https,cacert={missing}", "--local-addr", "127.0.0.2",
        str(script), str(tmp_path),
        timeout=30,
    )  # fmt: skip
    assert result.code == 2, result
    assert result.err.strip() == (
        f"launcher: error: --rdzv-conf: cacert={missing}: cannot read: No such file or directory"
    ), result
