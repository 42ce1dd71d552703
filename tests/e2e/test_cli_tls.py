"""Issue 15, finding 11: `up` and `serve` serve HTTPS themselves with --tls-cert/--tls-key, and log each
request (the access log is on by default)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.embedded import free_port


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.mark.parametrize("command", [["up"], ["serve", "derms", "--migrate"]])
def test_the_server_speaks_https_with_the_given_certificate_and_logs_each_request(
    tmp_path: Path, command: list[str]
) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_")} | {
        "DERBRIDGE_LOG_JSON": "true",
        "DERBRIDGE_API_TOKEN": "tls-test-token",
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "derbridge", "--data-dir", "V", *command, "--port", str(port),
             "--tls-cert", str(cert), "--tls-key", str(key)],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        trusted = ssl.create_default_context(cafile=str(cert))
        base = f"https://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{base}/healthz", verify=trusted, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.3)
            auth = {"Authorization": "Bearer tls-test-token"}
            assert httpx.get(f"{base}/derms/v1/programs", headers=auth, verify=trusted).status_code == 200
            # Finding 8 on the real command: the data dir it made is 0700, every file in it 0600.
            data_dir = tmp_path / "V"
            assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
            files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data_dir.iterdir() if p.is_file()}
            assert "derms.db" in files
            assert files == dict.fromkeys(files, 0o600)
            with pytest.raises(httpx.TransportError):  # plain HTTP is not spoken on the TLS port
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        finally:
            server.terminate()
            server.wait(timeout=30)
    text = log_path.read_text()
    assert f"on https://127.0.0.1:{port}" in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [e for e in lines if e.get("event") == "http request" and e.get("system") == "derms"]
    assert [(e["method"], e["route"], e["status"], e["client_id"]) for e in access] == [
        ("GET", "/derms/v1/programs", 200, "service")
    ]
    assert "tls-test-token" not in text


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_")}
    done = subprocess.run(
        [sys.executable, "-m", "derbridge", "--data-dir", "V", "up", "--tls-cert", str(cert)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--tls-key" in done.stderr
