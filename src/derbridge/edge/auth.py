"""Clients and tokens of the edge gateway (OAuth2 client credentials).

- A client (``derbridge edge client add``) gets a random id and secret; only the secret's argon2id hash is
  stored (argon2-cffi's ``PasswordHasher``), and the secret is shown once.
- ``POST /auth/token`` trades id and secret for an access token: a JWT signed HS256 (PyJWT) with the
  client id (``sub``), role, head-end and granted scopes, valid ``edge.token_ttl_seconds``. The key is
  ``edge.token_secret`` or one made once into ``DATA_DIR/edge-token-secret`` (mode 0600).
- Every call checks the signature and expiry, then that the client is not revoked (one primary-key read),
  so a revocation takes effect at once rather than when the token expires.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
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
ALGORITHM = "HS256"
ISSUER = "derbridge-edge"

_hasher = PasswordHasher()
# Verifying against this hash when the client is unknown costs what a real check costs, so the answer's
# timing does not tell which client ids exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def token_key(settings: Settings) -> str:
    """The token signing key: configured, or read from (or first written to) the data dir."""
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


async def issue_token(
    engine: AsyncEngine, key: str, ttl_seconds: int, client_id: str, secret: str, scope: str | None, now: datetime
) -> tuple[str, list[str]]:
    """A signed access token for a live client whose secret matches, and the scopes it carries.

    Raises :class:`CredentialsRefused` or :class:`derbridge.edge.domain.ScopeRefused`.
    """
    async with engine.connect() as connection:
        row = (await connection.execute(select(edge_clients).where(edge_clients.c.client_id == client_id))).first()
    try:
        _hasher.verify(row.secret_hash if row is not None else _DUMMY_HASH, secret)
    except (VerificationError, InvalidHashError):
        EDGE_AUTH_FAILURES.labels("bad_credentials").inc()
        raise CredentialsRefused("wrong client id or secret") from None
    if row is None or row.revoked_at is not None:
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
    return jwt.encode(claims, key, algorithm=ALGORITHM), scopes


class TokenRefused(Exception):
    """The bearer token is missing, malformed, expired, forged, or its client is revoked."""


async def verify_token(engine: AsyncEngine, key: str, token: str) -> Principal:
    """The caller a token names, once its signature, expiry and client are checked."""
    try:
        claims = jwt.decode(
            token, key, algorithms=[ALGORITHM], issuer=ISSUER, options={"require": ["exp", "sub", "iss"]}
        )
    except jwt.ExpiredSignatureError as error:
        EDGE_AUTH_FAILURES.labels("expired").inc()
        raise TokenRefused(str(error)) from None
    except jwt.PyJWTError as error:
        # A signature that does not verify lands here: a forged token, or API replicas that do not share
        # edge.token_secret (a token from one refused by the others) — what the alert on this metric is for.
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
