"""``derbridge up`` and ``serve``: the embedded system in one process, or one component per process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from derbridge import __version__
from derbridge.cli.common import (
    ComponentChoice,
    check_port_free,
    err,
    load_settings,
    migrated,
    reaching_servers,
)

if TYPE_CHECKING:
    from derbridge.settings import Settings


def up(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port (default 8080).")] = None,
) -> None:
    """Serve both systems' APIs in one process, with /healthz, /readyz and /metrics."""
    settings = _bound(host, port)
    run_server(
        settings,
        f"derbridge {__version__} on http://{settings.server.host}:{settings.server.port} "
        f"(Asset Hub: /assethub/v1/docs, DERMS: /derms/v1/docs); service token in "
        f"{settings.data_dir / 'api-token'}",
    )


def serve(
    component: Annotated[
        ComponentChoice,
        typer.Argument(help="assethub or derms: that system's API; bridge: the bridge worker and its operations API."),
    ],
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port (default 8080).")] = None,
) -> None:
    """Serve one component (the distributed mode): a system's API, or the bridge worker with its
    operations API. Several processes of each may run against the same databases and broker."""
    settings = _bound(host, port)
    run_server(
        settings,
        f"derbridge {__version__}: {component.value} on http://{settings.server.host}:{settings.server.port}",
        components=[component.value],
    )


def _bound(host: str | None, port: int | None) -> Settings:
    """The settings, with ``--host`` and ``--port`` on top."""
    settings = load_settings()
    if host is not None:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    return settings


def run_server(settings: Settings, banner: str, *, components: list[str] | None = None) -> None:
    """Serve ``components`` (every one by default: the embedded system) until stopped: the port checked
    first, the databases brought to the newest schema, ``banner`` on stderr, then uvicorn. The bridge worker
    runs where the bridge is served, the systems' jobs where a system is."""
    import uvicorn

    from derbridge.api.app import ALL_COMPONENTS, create_asgi
    from derbridge.runtime import Runtime

    served = [c for c in ALL_COMPONENTS if components is None or c in components]
    check_port_free(settings.server.host, settings.server.port)
    with reaching_servers():
        # A system's process opens its own database; the bridge opens every one (it relays both outboxes).
        migrated(settings, ALL_COMPONENTS if "bridge" in served else served)
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
        log_level="warning",
        log_config=None,  # uvicorn's loggers through ours: on stderr, in the same format
        access_log=False,
    )
