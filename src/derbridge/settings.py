"""One settings model for every component.

Values come from, highest first: keyword arguments (the CLI passes ``--data-dir``), ``DERBRIDGE_*``
environment variables (nested with ``__``, e.g. ``DERBRIDGE_ASSETHUB__DATABASE_URL``), an optional TOML
file (``DERBRIDGE_CONFIG=path.toml``), then the defaults. Zero configuration gives the embedded system:
one SQLite file per system under ``./var``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

API_TOKEN_FILE = "api-token"  # noqa: S105 - a file name, not a secret


class SystemSettings(BaseModel):
    """Where one system keeps its data. Empty URL: a SQLite file named after the system in the data dir."""

    database_url: str | None = None


class RetryPolicy(BaseModel):
    """Capped exponential backoff with full jitter, for targets that fail transiently (5xx, down, slow)."""

    base_seconds: float = Field(1.0, gt=0)
    cap_seconds: float = Field(300.0, gt=0)
    max_attempts: int = Field(30, ge=1)
    """After this many failed attempts the message is dead-lettered with the last error (replayable)."""


class ParkPolicy(BaseModel):
    """How often a parked message is tried again while it waits for its prerequisite (besides waking)."""

    base_seconds: float = Field(60.0, gt=0)
    cap_seconds: float = Field(6 * 3600.0, gt=0)


class BridgeSettings(BaseModel):
    """The bridge: its own database, its transport, where it delivers, and how it retries."""

    database_url: str | None = None
    transport: Literal["sql", "amqp"] = "sql"
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    queue_prefix: str = Field("derbridge", pattern=r"^[a-z][a-z0-9_.-]{0,40}$")
    targets: dict[str, str] = Field(default_factory=dict)
    """Base URL of each system's inbound API (``{"derms": "http://derms:8080"}``); a system not listed is
    served in-process (the embedded mode)."""
    relay_systems: list[Literal["assethub", "derms"]] = Field(default=["assethub", "derms"])
    """Systems whose outbox the bridge worker of this process relays. Only a process that runs the bridge
    worker relays (``up``, ``serve bridge``; ``serve assethub|derms`` relays none), and it reads each of these
    systems' databases: a ``serve bridge`` process needs their database URLs (docs/operations.md)."""
    batch_size: int = Field(100, ge=1, le=10_000)
    relay_batch_size: int = Field(1000, ge=1, le=10_000)
    """Outbox rows a relay publishes per round: a publish waits for the transport's confirmation (a quorum
    queue's fsync on RabbitMQ), which costs about the same for a thousand messages as for a hundred."""
    concurrency: int = Field(16, ge=1, le=1000)
    lease_seconds: float = Field(60.0, gt=0)
    poll_seconds: float = Field(0.2, gt=0)
    http_timeout_seconds: float = Field(30.0, gt=0)
    tls_client_cert: Path | None = None
    """PEM certificate the bridge presents to ``targets`` served with mutual TLS (``tls_client_ca`` there);
    with ``tls_client_key``."""
    tls_client_key: Path | None = None
    """PEM private key of ``tls_client_cert``."""
    tls_ca_file: Path | None = None
    """PEM CA certificate(s) the bridge trusts for ``targets`` served over HTTPS (e.g. a private CA);
    unset: the system's trusted CAs."""

    @model_validator(mode="after")
    def _client_certificate_whole(self) -> BridgeSettings:
        if (self.tls_client_cert is None) != (self.tls_client_key is None):
            raise ValueError("bridge.tls_client_cert and bridge.tls_client_key go together")
        return self

    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    park: ParkPolicy = Field(default_factory=ParkPolicy)


class FileStoreSettings(BaseModel):
    """Where claim-checked files (score files, large reservation lists) go: a local directory (default,
    ``DATA_DIR/files``) or an SFTP server."""

    store: Literal["local", "sftp"] = "local"
    local_root: Path | None = None
    sftp_host: str = "127.0.0.1"
    sftp_port: int = Field(22, ge=1, le=65535)
    sftp_username: str = "derbridge"
    sftp_root: str = "derbridge"
    sftp_client_keys: list[Path] = Field(default_factory=list)
    sftp_known_hosts: Path | None = None
    sftp_password: SecretStr | None = None
    sftp_connect_timeout: float = Field(10.0, gt=0)


class ScoreSettings(BaseModel):
    """When Asset Hub computes and transfers device scores (F4)."""

    schedule: str = "0 2 * * *"
    """Cron expression (5 fields) in ``time_zone``: by default daily at 02:00."""
    time_zone: str = "America/Chicago"


class EventSettings(BaseModel):
    """Program events in the DERMS (F5)."""

    reservation_file_threshold: int = Field(5000, ge=1)
    """Reservation lists longer than this travel as a file (claim check) rather than in the message."""


RATE_LIMIT = (
    r"^\s*\d+\s*/\s*(\d+\s*)?(second|minute|hour|day)s?\s*(;\s*\d+\s*/\s*(\d+\s*)?(second|minute|hour|day)s?\s*)*$"
)
"""A rate limit in the ``limits`` library's notation: ``20/minute``, ``100/hour;1000/day``."""

TokenAlgorithm = Literal["HS256", "ES256", "RS256"]
"""How the edge's access tokens are signed: a shared secret (HS256) or a private key (ES256, RS256)."""


class PreviousTokenKey(BaseModel):
    """A key that signed tokens before the current one: tokens it signed still verify until it is removed
    (keep it for at least ``edge.token_ttl_seconds`` after the rotation). Only verification material:
    the HS256 secret, or the public (or private) key file of an ES256/RS256 key."""

    model_config = ConfigDict(extra="forbid")

    kid: str = Field(min_length=1, max_length=128)
    algorithm: TokenAlgorithm = "HS256"
    secret: SecretStr | None = None
    public_key_file: Path | None = None

    @model_validator(mode="after")
    def _material(self) -> PreviousTokenKey:
        if self.algorithm == "HS256" and self.secret is None:
            raise ValueError(f"previous token key {self.kid!r}: an HS256 key needs its secret")
        if self.algorithm != "HS256" and self.public_key_file is None:
            raise ValueError(f"previous token key {self.kid!r}: an {self.algorithm} key needs public_key_file")
        return self


class EdgeSettings(BaseModel):
    """The OpenADR 3.1 edge gateway (VTN) for aggregators (see docs/edge.md and docs/security.md)."""

    token_algorithm: TokenAlgorithm = "HS256"  # noqa: S105 - an algorithm name, not a secret
    """How tokens are signed. ES256/RS256 sign with ``token_private_key_file``; their public keys are served
    in the VTN's JWKS document (``/openadr3/3.1.0/.well-known/jwks.json``)."""
    token_secret: SecretStr | None = None
    """HS256 key of the access tokens. Unset: made once into ``DATA_DIR/edge-token-secret`` (mode 0600)."""
    token_private_key_file: Path | None = None
    """PEM private key (PKCS#8 or traditional, unencrypted) for ES256 (P-256) or RS256 (2048 bits or more)."""
    token_key_id: str | None = Field(None, min_length=1, max_length=128)
    """``kid`` of the current signing key. Unset: derived from the key (HS256: a digest of the secret;
    ES256/RS256: the RFC 7638 thumbprint), so replicas sharing the key agree on it."""
    token_previous_keys: list[PreviousTokenKey] = Field(default_factory=list)
    """Keys that signed tokens before the current one, still accepted for verification (rotation)."""
    token_audience: str = Field("derbridge-vtn", min_length=1, max_length=256)
    """``aud`` of every token; a token for another audience is refused."""
    token_ttl_seconds: int = Field(3600, ge=60, le=86_400)
    token_requests_per_address: str = Field("60/minute", pattern=RATE_LIMIT)
    """Token requests from one remote address (each costs an argon2 check); over it: 429 with Retry-After."""
    token_failures_per_client: str = Field("50/hour", pattern=RATE_LIMIT)
    """Refused secrets for one client id, from any address; over it the client id gets 429 until the window
    moves on. Higher than the per-address limit so that one guessing address is stopped first."""
    auth_failures_per_address: str = Field("20/minute", pattern=RATE_LIMIT)
    """Refused credentials (token endpoint) and refused bearer tokens (every VTN operation) from one
    address; over it, every VTN request from that address gets 429 with Retry-After. Limits are counted in
    each process (replicas do not share them): N replicas allow N times as much."""
    allow_http_callbacks: bool = False
    """The spec demands HTTPS webhook callbacks; allow plain HTTP only for a lab or a test on loopback."""
    allow_private_callbacks: bool = False
    """Callbacks resolving to loopback, private, link-local or other non-global addresses are refused (a VEN
    must not make the VTN call into the utility's own network); allow them only for a lab or a local test."""
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=60)
    webhook_max_attempts: int = Field(12, ge=1, le=100)
    """After this many failed deliveries a notification is given up (``failed``) and logged."""
    webhook_backoff_seconds: float = Field(2.0, gt=0)
    webhook_backoff_cap_seconds: float = Field(3600.0, gt=0)
    webhook_token_key: SecretStr | None = None
    """Fernet key(s), comma-separated, newest first, that encrypt subscribers' webhook bearer tokens at rest.
    Unset: made once into ``DATA_DIR/edge-webhook-key`` (mode 0600). See docs/security.md for rotation."""

    # --- limits on what a client may store and read (issue 15, finding 6; docs/edge.md "Limits") ---
    max_attribute_chars: int = Field(8_192, ge=64)
    """Largest ``valuesMap`` (its type and values, in characters) in a ven's or resource's ``attributes``."""
    max_object_chars: int = Field(65_536, ge=1_024)
    """Largest ven, resource or subscription a client may write (its attributes, names, callbacks, in
    characters). Reports are not bounded by it (one report may name 100,000 resources): the server's
    ``max_body_bytes`` bounds them."""
    max_vens_per_client: int = Field(100, ge=1)
    max_resources_per_client: int = Field(500_000, ge=1)
    max_subscriptions_per_client: int = Field(100, ge=1)
    max_reports_per_client: int = Field(1_000_000, ge=1)
    page_max_bytes: int = Field(4 * 1024 * 1024, ge=1_024)
    """A listing page stops before the object that would take it past this many bytes of stored
    representation (it always holds at least one object): a short page is then not the last one."""


class ServerSettings(BaseModel):
    """The HTTP server of ``derbridge up``. It binds loopback unless told otherwise."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    """Larger request bodies are refused with 413 before they are read."""
    forwarded_allow_ips: str | None = None
    """Addresses of the TLS-terminating reverse proxies whose ``X-Forwarded-Proto`` and ``X-Forwarded-For``
    are believed (comma-separated; ``*``: any, when nothing else can reach the port), so that the links a
    server makes (the VTN's token URL in ``/auth/server``) say ``https``. Unset: uvicorn's default
    (``FORWARDED_ALLOW_IPS``, else 127.0.0.1 only)."""
    tls_cert: Path | None = None
    """PEM certificate (chain) to serve HTTPS with itself, without a reverse proxy (``--tls-cert``); with
    ``tls_key``. Unset: plain HTTP, TLS terminated in front."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert`` (``--tls-key``)."""
    tls_client_ca: Path | None = None
    """PEM certificate(s) of the CA that signs client certificates (``--tls-client-ca``): mutual TLS, every
    connection must present a certificate it signed, or the handshake fails. Needs ``tls_cert``. Unset: no
    client certificate asked for."""
    access_log: bool = True
    """One log line per request (``http request``: method, route template, status, duration, client id when
    authenticated; no query, no path values, no bodies): the trail of who called what."""

    @property
    def scheme(self) -> str:
        """``https`` when this server terminates TLS itself."""
        return "https" if self.tls_cert is not None else "http"


class Settings(BaseSettings):
    """The effective configuration of a derbridge process."""

    model_config = SettingsConfigDict(
        env_prefix="DERBRIDGE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Path("var")
    assethub: SystemSettings = Field(default_factory=SystemSettings)
    derms: SystemSettings = Field(default_factory=SystemSettings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    files: FileStoreSettings = Field(default_factory=FileStoreSettings)
    scores: ScoreSettings = Field(default_factory=ScoreSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    edge: EdgeSettings = Field(default_factory=EdgeSettings)
    api_token: SecretStr | None = None
    """Service credential every API call must carry (``Authorization: Bearer …``). Unset: one is made on
    first use and kept in ``DATA_DIR/api-token`` (mode 0600), where the CLI and local tools read it."""
    derms_instance_id: str = Field("derms-1", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """This DERMS's id in messages: a utility may run several DERMS and routes by it."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None
    """How much to log (the global ``--log-level`` overrides it). Unset: INFO for the servers (``up``,
    ``serve``), WARNING for a command, whose result is its output."""
    log_json: bool | None = None
    """Logs as JSON lines (true) or readable lines (false). Unset: readable when stderr is a terminal, JSON
    otherwise (a file, a pipe, a log collector)."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Add the optional TOML file named by ``DERBRIDGE_CONFIG`` below the environment."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("DERBRIDGE_CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)

    def database_url(self, system: str) -> str:
        """The database URL of ``system`` ("assethub", "derms" or "bridge"), defaulting to SQLite in the data
        dir."""
        configured: SystemSettings | BridgeSettings = getattr(self, system)
        if configured.database_url:
            return configured.database_url
        return f"sqlite:///{(self.data_dir / f'{system}.db').resolve()}"

    def resolved_api_token(self) -> str:
        """The service credential: configured, or read from (or first written to) the data dir."""
        if self.api_token is not None:
            return self.api_token.get_secret_value()
        from derbridge.infra.private import private_dir, private_file

        path = self.data_dir / API_TOKEN_FILE
        if path.exists():
            return private_file(path).read_text().strip()
        private_dir(self.data_dir)
        token = secrets.token_urlsafe(32)
        # O_EXCL: two processes starting at once must not each write a different token.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        return token

    def masked(self) -> dict[str, Any]:
        """The configuration as plain data with secrets and database passwords masked (``config show``)."""
        data = self.model_dump(mode="json")
        data["api_token"] = "**********" if self.api_token else f"(in {self.data_dir / API_TOKEN_FILE})"
        for system in ("assethub", "derms", "bridge"):
            data[system]["database_url"] = mask_url(self.database_url(system))
        data["bridge"]["amqp_url"] = mask_url(self.bridge.amqp_url.get_secret_value())
        if self.edge.token_secret is not None:
            data["edge"]["token_secret"] = "**********"  # noqa: S105 - the mask, not a secret
        if self.files.sftp_password is not None:
            data["files"]["sftp_password"] = "**********"  # noqa: S105 - the mask, not a password
        return data


def mask_url(url: str) -> str:
    """Hide the password of a database URL."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
