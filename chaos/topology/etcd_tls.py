"""Certificates for an etcd cluster that speaks TLS and wants client certificates
(`rdzv_tls: true` in a scenario, and the tests): a throwaway CA, one server certificate for
every member, one client certificate for every agent, written as PEM files into a directory.

Two things etcd's JSON gateway (what the launcher speaks) needs that are easy to get wrong:
- the server certificate carries clientAuth as well as serverAuth: with --client-cert-auth the
  gateway dials its own gRPC port presenting that certificate ("bad certificate" otherwise);
- the client certificate has no CommonName: with auth enabled the gateway refuses one that has
  (it cannot pass the name on as the etcd user), so the identity stays in username/password.

Keys are P-256 (fast to make: a run's certificates take milliseconds). Uses `cryptography`
(the chaos and test extras); the launcher only reads the files, with `ssl`.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """The PEM files of one TLS setup: what etcd gets, and what every agent gets."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def etcd_args(self) -> list[str]:
        """etcd's flags for TLS on its client port, with client certificates required."""
        return [
            f"--cert-file={self.server_cert}",
            f"--key-file={self.server_key}",
            "--client-cert-auth",
            f"--trusted-ca-file={self.ca}",
        ]

    def rdzv_conf(self) -> dict[str, str]:
        """The launcher's `--rdzv-conf` keys for this setup."""
        return {
            "protocol": "https",
            "cacert": str(self.ca),
            "cert": str(self.client_cert),
            "key": str(self.client_key),
        }


class CertAuthority:
    """A CA made on the spot, which signs what `issue` asks for."""

    def __init__(self, directory: Path, name: str = "chaos etcd CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        builder = _builder(self._name, self._key, self._name, now - _DAY, now + 30 * _DAY)
        usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        cert = builder.add_extension(usage, critical=True).sign(self._key, hashes.SHA256())
        self.cert = directory / f"{_slug(name)}.pem"
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        stem: str,
        *,
        hosts: Sequence[str] = (),
        expired: bool = False,
    ) -> tuple[Path, Path]:
        """A certificate and its key, `<stem>.pem` and `<stem>.key`: for a server when `hosts`
        (its addresses or names) are given, else for a client (no CommonName). `expired`:
        valid yesterday, not today."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (now - 2 * _DAY, now - _DAY) if expired else (now - _DAY, now + 30 * _DAY)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcd")] if hosts else [])
        builder = _builder(subject, key, self._name, start, end)
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        uses = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if hosts:
            uses.append(ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(x509.SubjectAlternativeName(_names(hosts)), False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(uses), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_path, key_path = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.touch(mode=0o600)  # a private key is nobody else's to read
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def make_tls_files(directory: Path, hosts: Sequence[str]) -> TlsFiles:
    """A CA, a server certificate valid for `hosts` (every member's address, and whatever a
    client may dial instead, such as a proxy on 127.0.0.1) and one client certificate."""
    ca = CertAuthority(directory)
    server_cert, server_key = ca.issue("server", hosts=hosts)
    client_cert, client_key = ca.issue("client")
    return TlsFiles(
        ca=ca.cert,
        server_cert=server_cert,
        server_key=server_key,
        client_cert=client_cert,
        client_key=client_key,
    )


def _builder(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    start: datetime.datetime,
    end: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # once each, in order
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _slug(name: str) -> str:
    return "-".join(name.lower().split())
