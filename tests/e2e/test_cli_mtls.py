"""Mutual TLS as an option (issue 15, "mutual TLS as an option for the VTN"): ``up --tls-client-ca CA``
makes the server require a client certificate that CA signed — without one, or with one another CA signed,
the TLS handshake fails before any HTTP — and the bridge's delivery client presents one
(``bridge.tls_client_cert``/``tls_client_key``, trusting ``bridge.tls_ca_file``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from derbridge.bridge.assembly import target_client
from derbridge.settings import BridgeSettings
from tests.support.embedded import free_port


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _builder(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )


class Ca:
    """A certificate authority of the test's own: signs a server's or a client's certificate."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory, self.name = directory, name
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            _builder(name, name, self.key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        self.path, _ = _write(directory, name, self.cert, self.key)

    def issue(self, subject: str, *, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(subject, self.name, key).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
        if server:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return _write(self.directory, subject, builder.sign(self.key, hashes.SHA256()), key)


def _context(ca: Ca, client: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.path))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    return context


@pytest.fixture
def mtls_server(tmp_path: Path) -> Iterator[tuple[str, Ca, tuple[Path, Path]]]:
    """``derbridge up`` with mutual TLS: its base URL, the CA and a client certificate that CA signed."""
    ca = Ca(tmp_path, "test-ca")
    server_cert, server_key = ca.issue("server", server=True)
    client = ca.issue("bridge-client", server=False)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_")} | {
        "DERBRIDGE_API_TOKEN": "mtls-test-token"
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "derbridge", "--data-dir", "V", "up", "--port", str(port),
             "--tls-cert", str(server_cert), "--tls-key", str(server_key), "--tls-client-ca", str(ca.path)],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        base = f"https://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{base}/healthz", verify=_context(ca, client), timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.3)
            yield base, ca, client
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_only_a_client_certificate_the_ca_signed_opens_the_server(
    mtls_server: tuple[str, Ca, tuple[Path, Path]], tmp_path: Path
) -> None:
    base, ca, client = mtls_server
    auth = {"Authorization": "Bearer mtls-test-token"}
    answer = httpx.get(f"{base}/derms/v1/programs", headers=auth, verify=_context(ca, client), timeout=10)
    assert answer.status_code == 200
    # No client certificate: the handshake fails (TLS 1.3 may report it on the first read), no HTTP answer.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz", verify=_context(ca, None), timeout=10)
    # A certificate another CA signed, for the same name: refused alike.
    (tmp_path / "rogue").mkdir()
    rogue = Ca(tmp_path / "rogue", "rogue-ca")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz", verify=_context(ca, rogue.issue("bridge-client", server=False)), timeout=10)


def test_the_bridge_delivery_client_presents_its_certificate(mtls_server: tuple[str, Ca, tuple[Path, Path]]) -> None:
    base, ca, client = mtls_server
    timeout = httpx.Timeout(10)

    async def health(settings: BridgeSettings) -> int:
        async with target_client(settings, base, timeout) as http:
            return (await http.get("/healthz")).status_code

    with_cert = BridgeSettings(tls_ca_file=ca.path, tls_client_cert=client[0], tls_client_key=client[1])
    assert asyncio.run(health(with_cert)) == 200
    with pytest.raises(httpx.TransportError):
        asyncio.run(health(BridgeSettings(tls_ca_file=ca.path)))


def test_a_client_ca_without_a_server_certificate_is_refused(tmp_path: Path) -> None:
    ca = Ca(tmp_path, "test-ca")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_")}
    done = subprocess.run(
        [sys.executable, "-m", "derbridge", "--data-dir", "V", "up", "--tls-client-ca", str(ca.path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--tls-client-ca" in done.stderr
    assert "--tls-cert" in done.stderr


def test_the_bridge_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError, match=r"tls_client_cert and bridge\.tls_client_key go together"):
        BridgeSettings(tls_client_cert=Path("client.pem"))
