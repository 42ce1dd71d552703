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
    reaching_servers,
)

if TYPE_CHECKING:
    pass


def up(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port (default 8080).")] = None,
) -> None:
    """Serve both systems' APIs in one process, with /healthz, /readyz and /metrics."""
    import uvicorn

    from derbridge.api.app import create_asgi
    from derbridge.runtime import Runtime, ensure_migrated

    settings = load_settings()
    if host is not None:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    check_port_free(settings.server.host, settings.server.port)
    with reaching_servers():
        ensure_migrated(settings)
    err.print(
        f"derbridge {__version__} on http://{settings.server.host}:{settings.server.port} "
        f"(Asset Hub: /assethub/v1/docs, DERMS: /derms/v1/docs); service token in "
        f"{settings.data_dir / 'api-token'}"
    )
    uvicorn.run(
        create_asgi(Runtime(settings), run_bridge=True, run_jobs=True),
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        log_config=None,  # uvicorn's loggers through ours: on stderr, in the same format
        access_log=False,
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
    import uvicorn

    from derbridge.api.app import create_asgi
    from derbridge.runtime import Runtime, ensure_migrated

    settings = load_settings()
    if host is not None:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    check_port_free(settings.server.host, settings.server.port)
    with reaching_servers():
        ensure_migrated(settings)
    err.print(f"derbridge {__version__}: {component.value} on http://{settings.server.host}:{settings.server.port}")
    uvicorn.run(
        create_asgi(
            Runtime(settings),
            components=[component.value],
            run_bridge=component is ComponentChoice.BRIDGE,
            run_jobs=component is not ComponentChoice.BRIDGE,
        ),
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        log_config=None,  # uvicorn's loggers through ours: on stderr, in the same format
        access_log=False,
    )
