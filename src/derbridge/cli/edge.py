"""``derbridge edge client add|list|revoke``: the edge gateway's OAuth2 clients, managed by operators."""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from derbridge.cli.common import ExitCode, fail
from derbridge.edge.roles import Role

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

edge_app = typer.Typer(help="The edge gateway (OpenADR 3.1 VTN) for aggregators.", no_args_is_help=True)
client_app = typer.Typer(help="OAuth2 clients of the VTN: aggregators' VENs and business logic.", no_args_is_help=True)
edge_app.add_typer(client_app, name="client")

err = Console(stderr=True, soft_wrap=True)
_HEAD_END = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,63}$")


def _engine() -> Engine:
    """The sync engine of the DERMS database (where the edge's tables are), migrated if behind."""
    from derbridge.cli.common import load_settings
    from derbridge.runtime import Runtime, ensure_migrated

    settings = load_settings()
    ensure_migrated(settings, ["derms"])
    return Runtime(settings).sync_engine("derms")


@client_app.command("add")
def client_add(
    name: Annotated[str, typer.Option(help="Who the client is, e.g. 'ecobee VEN'.")],
    head_end: Annotated[str, typer.Option("--head-end", help="The head-end system it speaks for, e.g. ECOBEE.")],
    role: Annotated[Role, typer.Option(help="ven: an aggregator's VEN; bl: business logic.")] = Role.VEN,
    as_json: Annotated[bool, typer.Option("--json", help="Print {client_id, client_secret} as JSON.")] = False,
) -> None:
    """Create a client. The secret is printed once and only its hash is kept: store it now."""
    from derbridge.edge.auth import add_client

    if not _HEAD_END.match(head_end):
        fail("--head-end must be upper-case letters, digits, '_' or '-' (e.g. ECOBEE)", ExitCode.USAGE)
    if not name.strip() or len(name) > 200:
        fail("--name must be 1 to 200 characters", ExitCode.USAGE)
    made = add_client(_engine(), name.strip(), head_end, role)
    if as_json:
        sys.stdout.write(json.dumps({"client_id": made.client_id, "client_secret": made.client_secret}) + "\n")
        return
    err.print(f"client [bold]{made.client_id}[/] ({made.role.value}, {made.head_end_system}) created")
    err.print("its secret (shown once; only its hash is kept):")
    sys.stdout.write(made.client_secret + "\n")


@client_app.command("list")
def client_list(as_json: Annotated[bool, typer.Option("--json", help="Print the clients as JSON.")] = False) -> None:
    """Every client (never a secret)."""
    from rich.table import Table

    from derbridge.edge.auth import list_clients

    clients = list_clients(_engine())
    if as_json:
        sys.stdout.write(json.dumps(clients, default=str) + "\n")
        return
    table = Table("client_id", "name", "role", "head-end", "created", "revoked")
    for c in clients:
        table.add_row(
            *(str(c[k] or "") for k in ("client_id", "name", "role", "head_end_system", "created_at", "revoked_at"))
        )
    err.print(table)


@client_app.command("revoke")
def client_revoke(client_id: Annotated[str, typer.Argument(help="The client to revoke.")]) -> None:
    """Revoke a client: its tokens stop working at once, and it gets no new ones."""
    from derbridge.edge.auth import revoke_client

    if not revoke_client(_engine(), client_id):
        fail(f"no live client {client_id}: list them with derbridge edge client list", ExitCode.NOT_FOUND)
    err.print(f"client {client_id} revoked")
