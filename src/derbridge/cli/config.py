"""``derbridge config``, ``db`` and ``contracts``: configuration, databases and message contracts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from derbridge import __version__
from derbridge.cli.common import (
    ComponentChoice,
    ExitCode,
    err,
    load_settings,
    out,
    print_json,
    reaching_servers,
    schema_unknown_is_one_line,
)

if TYPE_CHECKING:
    from derbridge.migrations.runner import System

config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)
db_app = typer.Typer(help="The systems' databases.", no_args_is_help=True)
contracts_app = typer.Typer(help="The message contracts between the systems.", no_args_is_help=True)


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration as JSON, secrets masked."""
    out.print_json(json.dumps(load_settings().masked()))


SystemsOption = Annotated[
    list[ComponentChoice] | None,
    typer.Option(
        "--system",
        case_sensitive=False,
        help="A system whose database to work on (repeat for several).",
        show_default="every one: assethub, derms, bridge",
    ),
]


def _systems(chosen: list[ComponentChoice] | None) -> list[System]:
    """The systems named by ``--system``, in the order of ``SYSTEMS``, each once (all when none is named)."""
    from derbridge.migrations.runner import SYSTEMS

    return [s for s in SYSTEMS if not chosen or s in {c.value for c in chosen}]


def _revision(revisions: frozenset[str] | None) -> str:
    return "(new)" if revisions is None else ", ".join(sorted(revisions)) or "(empty)"


@db_app.command("upgrade")
def db_upgrade(
    system: SystemsOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print what was done as JSON.")] = False,
) -> None:
    """Create or migrate the systems' databases to the newest schema: the one migration step of a
    deployment, run before the servers start (they refuse a database that is behind).

    Each database migrates under a lock of its own (a PostgreSQL advisory lock, a file lock beside a SQLite
    file), so migration jobs or replicas that start together take turns, and the later ones find nothing to
    do. Prints each database's revision before and after."""
    from derbridge.runtime import migrate_all

    settings = load_settings()
    systems = _systems(system)

    def waiting(name: str) -> None:
        err.print(f"{name}: another process is migrating this database; waiting for it", markup=False)

    with reaching_servers(), schema_unknown_is_one_line():
        migrations = migrate_all(settings, systems, on_wait=waiting)
    if json_output:
        print_json(
            [
                {
                    "system": m.system,
                    "before": None if m.before is None else sorted(m.before),
                    "after": None if m.after is None else sorted(m.after),
                    "changed": m.changed,
                }
                for m in migrations
            ]
        )
        return
    for m in migrations:
        if m.changed:
            out.print(f"{m.system}: {_revision(m.before)} -> {_revision(m.after)}", markup=False, highlight=False)
        else:
            out.print(f"{m.system}: at {_revision(m.after)}, nothing to do", markup=False, highlight=False)
    err.print("databases are up to date", markup=False, highlight=False)


@db_app.command("status")
def db_status(
    system: SystemsOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the revisions as JSON.")] = False,
) -> None:
    """Each database's revision next to the newest this derbridge knows; changes nothing. Exits 0 when
    every one is at the newest, 1 when one is new, behind or ahead (run `derbridge db upgrade`)."""
    from sqlalchemy.engine import make_url

    from derbridge.infra.db import is_sqlite
    from derbridge.migrations.runner import current_revisions, head_revisions

    settings = load_settings()
    rows = []
    with reaching_servers():
        for name in _systems(system):
            url = settings.database_url(name)
            # A SQLite file that is not there is new: connecting would create it, and status changes nothing.
            missing = is_sqlite(url) and not Path(make_url(url).database or "").exists()
            rows.append((name, None if missing else current_revisions(url), head_revisions(name)))
    if json_output:
        print_json(
            [
                {
                    "system": name,
                    "current": None if current is None else sorted(current),
                    "head": sorted(head),
                    "at_head": current == head,
                }
                for name, current, head in rows
            ]
        )
    else:
        for name, current, head in rows:
            said = "at head" if current == head else f"head is {_revision(head)}: run derbridge db upgrade"
            out.print(f"{name}: {_revision(current)} ({said})", markup=False, highlight=False)
    if any(current != head for _, current, head in rows):
        raise typer.Exit(int(ExitCode.FAILED))


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
