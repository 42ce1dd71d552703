"""``derbridge config``, ``db`` and ``contracts``: configuration, databases and message contracts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from derbridge import __version__
from derbridge.cli.common import (
    err,
    load_settings,
    out,
    working,
)

if TYPE_CHECKING:
    pass

config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)
db_app = typer.Typer(help="The systems' databases.", no_args_is_help=True)
contracts_app = typer.Typer(help="The message contracts between the systems.", no_args_is_help=True)


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration as JSON, secrets masked."""
    out.print_json(json.dumps(load_settings().masked()))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate every system's database to the newest schema."""
    from derbridge.runtime import migrate_all

    settings = load_settings()
    with working("migrating the databases"):
        migrate_all(settings)
    err.print("[green]databases are up to date[/]")


@contracts_app.command("asyncapi")
def contracts_asyncapi(
    out_file: Annotated[
        Path | None,
        typer.Option("--out", dir_okay=False, help="Write the document to this file instead of printing it."),
    ] = None,
) -> None:
    """The AsyncAPI 3.0 document of every bridge message (channels, messages, operations, schemas), as JSON."""
    from derbridge.contracts.asyncapi import build_asyncapi, render

    text = render(build_asyncapi(__version__))
    if out_file is None:
        sys.stdout.write(text)
        return
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text, encoding="utf-8")
    err.print(f"wrote {out_file}", markup=False, highlight=False)
