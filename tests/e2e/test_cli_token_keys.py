"""A key file of the edge's tokens that is missing, unreadable or not a key ends ``up`` and ``serve derms``
at start-up with one line naming the setting and the file, and the configuration exit status (2) — not a
traceback when the VTN is mounted, and before any database is touched or any port bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from derbridge.cli.common import ExitCode


def _run(tmp_path: Path, extra_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_")} | extra_env
    return subprocess.run(
        [sys.executable, "-m", "derbridge", "--data-dir", "V", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == ExitCode.USAGE, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def _es256_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


@pytest.mark.parametrize("command", [["up"], ["serve", "derms", "--migrate"]])
def test_a_missing_signing_key_file_is_named_with_its_setting(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "keys" / "edge-es256.pem"
    env = {"DERBRIDGE_EDGE__TOKEN_ALGORITHM": "ES256", "DERBRIDGE_EDGE__TOKEN_PRIVATE_KEY_FILE": str(missing)}
    line = _error_line(_run(tmp_path, env, *command))
    assert "edge.token_private_key_file" in line
    assert "DERBRIDGE_EDGE__TOKEN_PRIVATE_KEY_FILE" in line
    assert str(missing) in line
    assert not (tmp_path / "V").exists(), "nothing may be made before the configuration is found valid"


def test_a_signing_key_file_that_is_not_a_key_is_named(tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-key.pem"
    garbage.write_text("hello\n")
    env = {"DERBRIDGE_EDGE__TOKEN_ALGORITHM": "ES256", "DERBRIDGE_EDGE__TOKEN_PRIVATE_KEY_FILE": str(garbage)}
    line = _error_line(_run(tmp_path, env, "up"))
    assert "edge.token_private_key_file" in line
    assert str(garbage) in line
    assert "ES256" in line


def test_a_missing_public_key_file_of_a_previous_key_is_named(tmp_path: Path) -> None:
    current = _es256_key(tmp_path / "current.pem")
    missing = tmp_path / "old-public.pem"
    env = {
        "DERBRIDGE_EDGE__TOKEN_ALGORITHM": "ES256",
        "DERBRIDGE_EDGE__TOKEN_PRIVATE_KEY_FILE": str(current),
        "DERBRIDGE_EDGE__TOKEN_PREVIOUS_KEYS": json.dumps(
            [{"kid": "old-key", "algorithm": "ES256", "public_key_file": str(missing)}]
        ),
    }
    line = _error_line(_run(tmp_path, env, "serve", "derms", "--migrate"))
    assert "edge.token_previous_keys[0].public_key_file" in line
    assert "old-key" in line
    assert str(missing) in line


def test_a_directory_given_as_key_file_is_unreadable_and_named(tmp_path: Path) -> None:
    # A directory: unreadable as a file whatever the user (the tests may run as root, who reads any mode).
    directory = tmp_path / "a-directory"
    directory.mkdir()
    env = {"DERBRIDGE_EDGE__TOKEN_ALGORITHM": "RS256", "DERBRIDGE_EDGE__TOKEN_PRIVATE_KEY_FILE": str(directory)}
    line = _error_line(_run(tmp_path, env, "up"))
    assert "cannot read" in line
    assert str(directory) in line
