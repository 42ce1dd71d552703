"""``derbridge up`` and ``serve``: the embedded system in one process, or one component per process."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from derbridge import __version__
from derbridge.cli.common import (
    ComponentChoice,
    ExitCode,
    check_port_free,
    err,
    fail,
    load_settings,
    migrated,
    reaching_servers,
)

if TYPE_CHECKING:
    from derbridge.settings import Settings

OTHER_SYSTEM = {"assethub": "derms", "derms": "assethub"}
"""Where a system's outbox messages go: the bridge delivering one system's messages needs the other's URL."""


TlsCert = Annotated[
    Path | None,
    typer.Option(
        "--tls-cert",
        exists=True,
        dir_okay=False,
        help="PEM certificate (chain): serve HTTPS with it (with --tls-key). Default: plain HTTP behind a proxy.",
    ),
]
TlsKey = Annotated[
    Path | None, typer.Option("--tls-key", exists=True, dir_okay=False, help="PEM private key of --tls-cert.")
]
TlsClientCa = Annotated[
    Path | None,
    typer.Option(
        "--tls-client-ca",
        exists=True,
        dir_okay=False,
        help="PEM CA certificate(s): mutual TLS, every client must present a certificate this CA signed "
        "(with --tls-cert).",
    ),
]


def up(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port (default 8080).")] = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_client_ca: TlsClientCa = None,
) -> None:
    """Serve both systems' APIs in one process, with /healthz, /readyz and /metrics. The databases are
    created or migrated on start."""
    settings = _bound(host, port, tls_cert, tls_key, tls_client_ca)
    run_server(
        settings,
        f"derbridge {__version__} on {settings.server.scheme}://{settings.server.host}:{settings.server.port} "
        f"(Asset Hub: /assethub/v1/docs, DERMS: /derms/v1/docs); service token in "
        f"{settings.data_dir / 'api-token'}",
        migrate=True,
    )


def serve(
    component: Annotated[
        ComponentChoice,
        typer.Argument(help="assethub or derms: that system's API; bridge: the bridge worker and its operations API."),
    ],
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port (default 8080).")] = None,
    migrate: Annotated[
        bool,
        typer.Option(
            "--migrate",
            help="Create or migrate this process's databases on start (one process, a lab); a deployment runs "
            "`derbridge db upgrade` first instead.",
        ),
    ] = False,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_client_ca: TlsClientCa = None,
) -> None:
    """Serve one component (the distributed mode): a system's API, or the bridge worker with its
    operations API. Several processes of each may run against the same databases and broker.

    A system's process opens only its own database; the bridge's opens its own and those of the systems
    whose outboxes it relays (`bridge.relay_systems`). Each must be at the newest schema: run `derbridge db
    upgrade` first (or pass `--migrate`)."""
    settings = _bound(host, port, tls_cert, tls_key, tls_client_ca)
    if component is ComponentChoice.BRIDGE:
        check_bridge_settings(settings)
    run_server(
        settings,
        f"derbridge {__version__}: {component.value} on "
        f"{settings.server.scheme}://{settings.server.host}:{settings.server.port}",
        components=[component.value],
        migrate=migrate,
    )


def databases_of(settings: Settings, served: Sequence[str]) -> list[str]:
    """The databases a process serving ``served`` opens: each system's own; for the bridge, its own and
    the outboxes it relays."""
    needed = set(served)
    if "bridge" in served:
        needed.update(settings.bridge.relay_systems)
    return [s for s in ("assethub", "derms", "bridge") if s in needed]


def check_bridge_settings(settings: Settings) -> None:
    """Refuse a distributed bridge whose settings cannot work: an outbox it relays left at the embedded
    SQLite default while its own database is elsewhere (it would relay from an empty file, and every
    message of that system would wait for ever), or a system its messages go to without a URL in
    ``bridge.targets`` (nothing is served in this process: they would be dead at once)."""
    from derbridge.infra.db import is_sqlite

    bridge_url = settings.bridge.database_url
    for system in settings.bridge.relay_systems:
        configured = getattr(settings, system).database_url
        if bridge_url and not is_sqlite(bridge_url) and not configured:
            fail(
                f"serve bridge relays the {system} outbox, but DERBRIDGE_{system.upper()}__DATABASE_URL is not "
                f"set: it would read an empty SQLite file ({settings.database_url(system)}) while the bridge's "
                f"database is not SQLite; set it to that system's database, or leave {system} out of "
                "DERBRIDGE_BRIDGE__RELAY_SYSTEMS",
                ExitCode.USAGE,
            )
        target = OTHER_SYSTEM[system]
        if not settings.bridge.targets.get(target):
            fail(
                f"serve bridge delivers the {system} outbox's messages to {target}, but DERBRIDGE_BRIDGE__TARGETS "
                f"has no URL for {target}; set it, e.g. "
                """DERBRIDGE_BRIDGE__TARGETS='{"assethub": "http://assethub:8080", "derms": "http://derms:8080"}'""",
                ExitCode.USAGE,
            )
    for target in ("assethub", "derms"):
        if not settings.bridge.targets.get(target):
            # Another bridge process may relay that system's outbox: this one would take its messages
            # from the shared queues too, and find no route for them.
            err.print(
                f"warning: DERBRIDGE_BRIDGE__TARGETS has no URL for {target}: a message to it that this "
                "worker takes is dead (no route) until the setting is added and the message replayed",
                markup=False,
                highlight=False,
            )


def _bound(
    host: str | None,
    port: int | None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_client_ca: Path | None = None,
) -> Settings:
    """The settings, with ``--host``, ``--port``, ``--tls-cert``, ``--tls-key`` and ``--tls-client-ca`` on
    top."""
    settings = load_settings()
    if host is not None:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    if tls_cert is not None:
        settings.server.tls_cert = tls_cert
    if tls_key is not None:
        settings.server.tls_key = tls_key
    if (settings.server.tls_cert is None) != (settings.server.tls_key is None):
        fail("--tls-cert and --tls-key go together (DERBRIDGE_SERVER__TLS_CERT and __TLS_KEY)", ExitCode.USAGE)
    if tls_client_ca is not None:
        settings.server.tls_client_ca = tls_client_ca
    if settings.server.tls_client_ca is not None and settings.server.tls_cert is None:
        fail(
            "--tls-client-ca (DERBRIDGE_SERVER__TLS_CLIENT_CA) needs --tls-cert and --tls-key: mutual TLS is TLS",
            ExitCode.USAGE,
        )
    return settings


def run_server(settings: Settings, banner: str, *, components: list[str] | None = None, migrate: bool = False) -> None:
    """Serve ``components`` (every one by default: the embedded system) until stopped: the port checked
    first, the databases this process opens brought to the newest schema (``migrate``) or found there, then
    ``banner`` on stderr, then uvicorn. The bridge worker runs where the bridge is served, the systems' jobs
    where a system is."""
    import ssl

    import uvicorn

    from derbridge.api.app import ALL_COMPONENTS, create_asgi
    from derbridge.runtime import Runtime

    served = [c for c in ALL_COMPONENTS if components is None or c in components]
    # The port first: it has no side effect, where reading the token keys makes the HS256 secret in the data
    # dir when there is none yet (a busy port must leave nothing behind).
    check_port_free(settings.server.host, settings.server.port)
    if "derms" in served:
        check_token_keys(settings)
    with reaching_servers():
        if migrate:
            migrated(settings, databases_of(settings, served))
        else:
            # Distributed: replicas do not race to migrate; the one migration step is `db upgrade`.
            require_at_head(settings, databases_of(settings, served))
    err.print(banner, markup=False, highlight=False)
    uvicorn.run(
        create_asgi(
            Runtime(settings),
            components=served,
            run_bridge="bridge" in served,
            run_jobs=served != ["bridge"],
        ),
        host=settings.server.host,
        port=settings.server.port,
        forwarded_allow_ips=settings.server.forwarded_allow_ips,
        ssl_certfile=settings.server.tls_cert,
        ssl_keyfile=settings.server.tls_key,
        # Mutual TLS: a client without a certificate the CA signed fails the handshake, before any HTTP.
        ssl_ca_certs=str(settings.server.tls_client_ca) if settings.server.tls_client_ca is not None else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if settings.server.tls_client_ca is not None else ssl.CERT_NONE,
        log_level="warning",
        log_config=None,  # uvicorn's loggers through ours: on stderr, in the same format
        access_log=False,  # uvicorn's would log the query string: ours (infra/web.py) logs the route template
    )


def check_token_keys(settings: Settings) -> None:
    """End the command (:attr:`ExitCode.USAGE`, one line naming the setting and the file) when a key file of
    the edge's tokens is missing, unreadable or not a key of its algorithm: before anything is started,
    rather than as a traceback when the VTN is mounted."""
    from derbridge.edge.auth import TokenKeyError, TokenKeys

    try:
        TokenKeys.from_settings(settings)
    except TokenKeyError as error:
        fail(f"{error} (environment or --config file)", ExitCode.USAGE)


def require_at_head(settings: Settings, systems: list[str]) -> None:
    """End the command (:attr:`ExitCode.CONFLICT`) unless every database of ``systems`` is at the newest
    schema this derbridge knows: one query each, no Alembic."""
    from derbridge.infra.db import is_sqlite
    from derbridge.migrations.runner import current_revisions, head_revisions, known_revisions

    for system in systems:
        url = settings.database_url(system)
        head = head_revisions(system)
        current = current_revisions(url)
        if current == head:
            continue
        where = f"the {system} database"
        if is_sqlite(url):
            where += f" ({url.removeprefix('sqlite:///')})"
        if current is None:
            fail(f"{where} has no schema yet: run `derbridge db upgrade` first (or serve --migrate)", ExitCode.CONFLICT)
        if current - known_revisions(system):  # type: ignore[arg-type]
            fail(
                f"{where} is at {', '.join(sorted(current))}, a schema this derbridge does not know: it was "
                "migrated by a newer derbridge; run that one",
                ExitCode.CONFLICT,
            )
        fail(
            f"{where} is at {', '.join(sorted(current))}, behind {', '.join(sorted(head))}: run "
            "`derbridge db upgrade` first",
            ExitCode.CONFLICT,
        )
