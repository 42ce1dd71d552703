"""Clients and tokens of the edge gateway (OAuth2 client credentials).

- A client (``derbridge edge client add``) gets a random id and secret; only the secret's argon2id hash is
  stored (argon2-cffi's ``PasswordHasher``), and the secret is shown once. The hash is checked in a small
  thread pool of its own (``_HASH_POOL``), never on the event loop: a flood of token requests then slows
  token requests, not every other request of the process (and cannot take the default pool that other
  work uses).
- ``POST /auth/token`` trades id and secret for an access token: a JWT (PyJWT) with the client id
  (``sub``), role, head-end and granted scopes, the audience ``edge.token_audience`` (``aud``), valid
  ``edge.token_ttl_seconds``, and the signing key's id in its header (``kid``). It is signed HS256 with
  ``edge.token_secret`` (or one made once into ``DATA_DIR/edge-token-secret``, mode 0600), or ES256/RS256
  with ``edge.token_private_key_file`` (its public key in the JWKS document, :meth:`TokenKeys.jwks`).
- A token verifies with the key its ``kid`` names: the current key or one of ``edge.token_previous_keys``
  (rotation), each pinned to its own algorithm, so a token cannot choose how it is checked.
- Every call checks the signature, audience and expiry, then that the client is not revoked (one
  primary-key read), so a revocation takes effect at once rather than when the token expires.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.edge.domain import Role, grant_scopes
from derbridge.edge.tables import edge_clients
from derbridge.infra.db import utcnow
from derbridge.infra.metrics import EDGE_AUTH_FAILURES
from derbridge.infra.private import private_dir, private_file
from derbridge.settings import Settings

TOKEN_SECRET_FILE = "edge-token-secret"  # noqa: S105 - a file name, not a secret
ISSUER = "derbridge-edge"

_hasher = PasswordHasher()
# Verifying against this hash when the client is unknown costs what a real check costs, so the answer's
# timing does not tell which client ids exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
# Two threads: argon2id is CPU-bound (and releases the GIL), so more threads than cores buy nothing, and
# a bounded pool caps the CPU a flood of token requests can take from the rest of the process.
_HASH_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="edge-argon2")


def token_secret(settings: Settings) -> str:
    """The HS256 signing secret: configured, or read from (or first written to) the data dir."""
    if settings.edge.token_secret is not None:
        return settings.edge.token_secret.get_secret_value()
    path = settings.data_dir / TOKEN_SECRET_FILE
    if path.exists():
        return private_file(path).read_text().strip()
    private_dir(settings.data_dir)
    key = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public_jwk(public: Any, algorithm: str) -> dict[str, Any]:
    """The public JWK of an EC or RSA public key (no private members)."""
    jwk = (
        ECAlgorithm.to_jwk(public, as_dict=True) if algorithm == "ES256" else RSAAlgorithm.to_jwk(public, as_dict=True)
    )
    return {k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y", "n", "e")}


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: the digest of the key's required members, in order, without whitespace."""
    required = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def _hs256_kid(secret: str) -> str:
    # A digest of a 48-byte random secret, domain-separated: names the key without revealing anything of it.
    return "hs-" + hashlib.sha256(b"derbridge edge kid\0" + secret.encode()).hexdigest()[:16]


class TokenKeyError(ValueError):
    """A key file the edge settings name cannot be used: missing, unreadable, or not a key of its algorithm.
    The message names the setting and the file (one line: the server ends with it at start-up)."""


def _read_key_file(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TokenKeyError(f"{setting}: cannot read {path}: {error.strerror or error}") from error


def _load_public(path: Path, algorithm: str, setting: str) -> Any:
    """The public key of a PEM file holding a public or a private key of ``algorithm``."""
    data = _read_key_file(path, setting)
    key: Any
    try:
        if b"PRIVATE KEY" in data:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        else:
            key = serialization.load_pem_public_key(data)
        _check_kind(key, algorithm, path)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise TokenKeyError(f"{setting}: {path} is not a usable {algorithm} key: {error}") from error
    return key


def _load_private(path: Path, algorithm: str, setting: str) -> Any:
    """The private key of a PEM file (unencrypted) of ``algorithm``."""
    data = _read_key_file(path, setting)
    try:
        key = serialization.load_pem_private_key(data, password=None)
        _check_kind(key, algorithm, path)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise TokenKeyError(f"{setting}: {path} is not a usable {algorithm} private key: {error}") from error
    return key


def _check_kind(key: Any, algorithm: str, path: Path) -> None:
    if algorithm == "ES256":
        if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError(f"{path}: ES256 needs a P-256 (secp256r1) key")
    elif not isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey) or key.key_size < 2048:
        raise ValueError(f"{path}: RS256 needs an RSA key of 2048 bits or more")


@dataclass(frozen=True)
class VerificationKey:
    """One key tokens may be verified with, pinned to its algorithm."""

    kid: str
    algorithm: str
    key: Any
    jwk: dict[str, Any] | None = None
    """The public JWK (asymmetric keys only; an HS256 secret is never published)."""


@dataclass(frozen=True)
class TokenKeys:
    """The current signing key and every key a token may still be verified with (by ``kid``)."""

    kid: str
    algorithm: str
    signing_key: Any
    audience: str
    verification: dict[str, VerificationKey] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenKeys:
        """The keys ``settings.edge`` names (reading the key files once)."""
        edge = settings.edge
        keys: dict[str, VerificationKey] = {}
        for i, old in enumerate(edge.token_previous_keys):
            if old.algorithm == "HS256":
                assert old.secret is not None  # the settings model requires it
                keys[old.kid] = VerificationKey(old.kid, "HS256", old.secret.get_secret_value())
            else:
                assert old.public_key_file is not None
                setting = f"edge.token_previous_keys[{i}].public_key_file (key {old.kid!r})"
                public = _load_public(old.public_key_file, old.algorithm, setting)
                jwk = _public_jwk(public, old.algorithm) | {"kid": old.kid, "alg": old.algorithm, "use": "sig"}
                keys[old.kid] = VerificationKey(old.kid, old.algorithm, public, jwk)
        if edge.token_algorithm == "HS256":  # noqa: S105 - an algorithm name, not a secret
            secret = token_secret(settings)
            kid = edge.token_key_id or _hs256_kid(secret)
            signing: Any = secret
            current = VerificationKey(kid, "HS256", secret)
        else:
            if edge.token_private_key_file is None:
                raise TokenKeyError(
                    f"edge.token_algorithm {edge.token_algorithm} needs edge.token_private_key_file"
                    " (DERBRIDGE_EDGE__TOKEN_PRIVATE_KEY_FILE)"
                )
            signing = _load_private(
                edge.token_private_key_file,
                edge.token_algorithm,
                "edge.token_private_key_file (DERBRIDGE_EDGE__TOKEN_PRIVATE_KEY_FILE)",
            )
            public = signing.public_key()
            jwk = _public_jwk(public, edge.token_algorithm)
            kid = edge.token_key_id or _thumbprint(jwk)
            current = VerificationKey(
                kid, edge.token_algorithm, public, jwk | {"kid": kid, "alg": edge.token_algorithm, "use": "sig"}
            )
        keys[kid] = current  # the current key wins over a previous one configured with the same kid
        return cls(kid, edge.token_algorithm, signing, edge.token_audience, keys)

    def sign(self, claims: dict[str, Any]) -> str:
        """A token of ``claims`` (with this key's audience) signed by the current key."""
        return jwt.encode(
            claims | {"aud": self.audience}, self.signing_key, algorithm=self.algorithm, headers={"kid": self.kid}
        )

    def decode(self, token: str) -> dict[str, Any]:
        """The claims of a token signed by one of the keys (by its ``kid``, with that key's algorithm only),
        for this audience, not expired. Raises ``jwt.PyJWTError``."""
        kid = jwt.get_unverified_header(token).get("kid")
        key = self.verification.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise jwt.InvalidKeyError("the token names no key of this VTN (kid)")
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[key.algorithm],
            audience=self.audience,
            issuer=ISSUER,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )
        return claims

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The JWKS document (RFC 7517): the public keys tokens may be verified with; none for HS256."""
        return {"keys": [k.jwk for k in self.verification.values() if k.jwk is not None]}


@dataclass(frozen=True)
class NewClient:
    """A client just made: the secret is here once and nowhere else."""

    client_id: str
    client_secret: str
    name: str
    head_end_system: str
    role: Role


def _new_client(name: str, head_end_system: str, role: Role) -> tuple[NewClient, dict[str, object]]:
    """A fresh id and secret, and the row that keeps the secret's hash only."""
    client_id = f"{role.value}-{secrets.token_hex(8)}"
    secret = secrets.token_urlsafe(32)
    row: dict[str, object] = {
        "client_id": client_id,
        "name": name,
        "head_end_system": head_end_system,
        "role": role.value,
        "secret_hash": _hasher.hash(secret),
        "created_at": utcnow(),
    }
    return NewClient(client_id, secret, name, head_end_system, role), row


def add_client(engine: Engine, name: str, head_end_system: str, role: Role) -> NewClient:
    """Create a client with a fresh id and secret; store the secret's hash."""
    made, row = _new_client(name, head_end_system, role)
    with engine.begin() as connection:
        connection.execute(insert(edge_clients).values(**row))
    return made


async def create_client(engine: AsyncEngine, name: str, head_end_system: str, role: Role) -> NewClient:
    """:func:`add_client` for the API: the argon2 hash (tens of milliseconds of CPU) is made in a worker
    thread, so the event loop keeps serving meanwhile."""
    import asyncio

    made, row = await asyncio.to_thread(_new_client, name, head_end_system, role)
    async with engine.begin() as connection:
        await connection.execute(insert(edge_clients).values(**row))
    return made


async def get_client(engine: AsyncEngine, client_id: str) -> dict[str, object] | None:
    """One client without its secret's hash, or None."""
    columns = [c for c in edge_clients.c if c.name != "secret_hash"]
    async with engine.connect() as connection:
        row = (await connection.execute(select(*columns).where(edge_clients.c.client_id == client_id))).first()
    return None if row is None else dict(row._mapping)


async def revoke(engine: AsyncEngine, client_id: str) -> bool:
    """:func:`revoke_client` for the API. False when there is no such live client."""
    async with engine.begin() as connection:
        done = await connection.execute(
            update(edge_clients)
            .where(edge_clients.c.client_id == client_id, edge_clients.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .returning(edge_clients.c.client_id)
        )
        return done.first() is not None


def list_clients(engine: Engine) -> list[dict[str, object]]:
    """Every client, without secrets, by id."""
    columns = [c for c in edge_clients.c if c.name != "secret_hash"]
    with engine.connect() as connection:
        rows = connection.execute(select(*columns).order_by(edge_clients.c.client_id)).mappings()
        return [dict(r) for r in rows]


def revoke_client(engine: Engine, client_id: str) -> bool:
    """Revoke a client: its tokens stop working at once. False when there is no such live client."""
    with engine.begin() as connection:
        done = connection.execute(
            update(edge_clients)
            .where(edge_clients.c.client_id == client_id, edge_clients.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .returning(edge_clients.c.client_id)
        )
        return done.first() is not None


@dataclass(frozen=True)
class Principal:
    """Who is calling, from a verified token."""

    client_id: str
    role: Role
    head_end_system: str
    scopes: frozenset[str]

    @property
    def is_ven(self) -> bool:
        """True for an aggregator's VEN (object privacy applies)."""
        return self.role is Role.VEN


class CredentialsRefused(Exception):
    """The client id or secret is wrong, or the client is revoked."""


def _secret_matches(secret_hash: str, secret: str) -> bool:
    try:
        _hasher.verify(secret_hash, secret)
    except (VerificationError, InvalidHashError):
        return False
    return True


async def issue_token(
    engine: AsyncEngine,
    keys: TokenKeys,
    ttl_seconds: int,
    client_id: str,
    secret: str,
    scope: str | None,
    now: datetime,
) -> tuple[str, list[str]]:
    """A signed access token for a live client whose secret matches, and the scopes it carries.

    Raises :class:`CredentialsRefused` or :class:`derbridge.edge.domain.ScopeRefused`.
    """
    async with engine.connect() as connection:
        row = (await connection.execute(select(edge_clients).where(edge_clients.c.client_id == client_id))).first()
    secret_hash = row.secret_hash if row is not None else _DUMMY_HASH
    matches = await asyncio.get_running_loop().run_in_executor(_HASH_POOL, _secret_matches, secret_hash, secret)
    if not matches or row is None or row.revoked_at is not None:
        EDGE_AUTH_FAILURES.labels("bad_credentials").inc()
        raise CredentialsRefused("wrong client id or secret")
    role = Role(row.role)
    scopes = grant_scopes(role, scope)
    claims = {
        "iss": ISSUER,
        "sub": client_id,
        "role": role.value,
        "head_end_system": row.head_end_system,
        "scope": " ".join(scopes),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_seconds)).timestamp()),
        "jti": secrets.token_hex(8),
    }
    return keys.sign(claims), scopes


class TokenRefused(Exception):
    """The bearer token is missing, malformed, expired, forged, or its client is revoked."""


async def verify_token(engine: AsyncEngine, keys: TokenKeys, token: str) -> Principal:
    """The caller a token names, once its signature, audience, expiry and client are checked."""
    try:
        claims = keys.decode(token)
    except jwt.ExpiredSignatureError as error:
        EDGE_AUTH_FAILURES.labels("expired").inc()
        raise TokenRefused(str(error)) from None
    except jwt.PyJWTError as error:
        # A signature that does not verify lands here: a forged token, or API replicas that do not share
        # edge.token_secret (a token from one refused by the others), or a key retired too early — what the
        # alert on this metric is for.
        EDGE_AUTH_FAILURES.labels("invalid").inc()
        raise TokenRefused(str(error)) from None
    async with engine.connect() as connection:
        revoked = await connection.scalar(
            select(edge_clients.c.revoked_at.is_not(None)).where(edge_clients.c.client_id == claims["sub"])
        )
    if revoked is None or revoked:
        EDGE_AUTH_FAILURES.labels("revoked").inc()
        raise TokenRefused("the client is unknown or revoked")
    try:
        return Principal(
            client_id=str(claims["sub"]),
            role=Role(claims["role"]),
            head_end_system=str(claims["head_end_system"]),
            scopes=frozenset(str(claims.get("scope", "")).split()),
        )
    except (KeyError, ValueError) as error:
        EDGE_AUTH_FAILURES.labels("malformed").inc()
        raise TokenRefused(f"malformed claims: {error}") from None
