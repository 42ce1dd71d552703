"""The ``derbridge`` command line: one entry point for every component.

Each command group is a module of this package; this file is the one place that puts them together, so the
whole command tree reads top to bottom here. A command imports what it works with inside its body: the
command tree itself (``--help``, ``--version``) loads no system.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from derbridge import __version__
from derbridge.cli import bench, demo, generate, serving, smoke
from derbridge.cli.assethub import assethub_app
from derbridge.cli.cis import cis_app
from derbridge.cli.common import LogLevel, load_settings, log_level_for, out, state
from derbridge.cli.config import config_app, contracts_app, db_app
from derbridge.cli.derms import derms_app
from derbridge.cli.devices import devices_app
from derbridge.cli.edge import edge_app
from derbridge.cli.enrollments import enrollments_app
from derbridge.cli.events import events_app
from derbridge.cli.messages import messages_app
from derbridge.cli.program import program_app
from derbridge.cli.score import score_app
from derbridge.cli.sim import sim_app
from derbridge.cli.wait import wait_app

HELP_ONLY = "derbridge.help_only"
"""``ctx.meta`` key: True when the command line asks only for a subcommand's help."""


class _CommandTree(TyperGroup):
    """The top command group. It notes whether the words after the subcommand's name ask only for help, so
    that :func:`main_options` (which runs before they are parsed) builds no settings and configures no
    logging for ``derbridge GROUP --help`` — the heaviest imports of a command's start."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta[HELP_ONLY] = asks_for_help(rest, ctx.help_option_names, command)
        return name, command, rest


def asks_for_help(rest: list[str], help_options: list[str], command: Any) -> bool:
    """True when a subcommand given ``rest`` will print its help and stop: a help option before any ``--``,
    or nothing at all after a group that shows its help when called bare."""
    if not rest:
        return isinstance(command, TyperGroup) and command.no_args_is_help
    words = rest[: rest.index("--")] if "--" in rest else rest
    return any(word in help_options for word in words)


app = typer.Typer(
    name="derbridge",
    cls=_CommandTree,
    help="Demand response between Asset Hub and a DERMS: both systems, the edge and the bridge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Markdown: a docstring's paragraph flows to the terminal's width, whatever its line breaks in the
    # source (Rich's mode kept them, breaking sentences mid-line). Sub-groups inherit the root's mode.
    rich_markup_mode="markdown",
)


def _flags_take_no_value() -> None:
    """Typer's Rich help shows ``<bool>`` as the value of a flag (``--json <bool>``), which takes none: show
    no value for flags, as click's plain help does."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag or self.count else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()


def _version(value: bool) -> None:
    if value:
        out.print(f"derbridge {__version__}")
        raise typer.Exit


@app.callback()
def main_options(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Where the embedded databases and files live (DERBRIDGE_DATA_DIR).", show_default="./var"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="A TOML settings file (DERBRIDGE_CONFIG).", exists=True, dir_okay=False),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(
            "--log-level",
            case_sensitive=False,
            help="How much to log, on stderr (DERBRIDGE_LOG_LEVEL).",
            show_default="INFO for up and serve, WARNING for other commands",
        ),
    ] = None,
) -> None:
    """Global options."""
    state.data_dir = data_dir
    if config is not None:
        os.environ["DERBRIDGE_CONFIG"] = str(config)
    if ctx.meta.get(HELP_ONLY):
        return  # help needs neither settings nor logging (``--version`` and ``--help`` exit before this)
    from derbridge.infra.logging import configure_logging

    settings = load_settings()
    configure_logging(log_level_for(ctx.invoked_subcommand, log_level, settings), json=settings.log_json)


# The command tree, in the order `derbridge --help` lists it.
app.command()(generate.generate)
app.add_typer(cis_app, name="cis")
app.command()(serving.up)
app.command()(serving.serve)
app.command()(demo.demo)
app.add_typer(program_app, name="program")
app.add_typer(assethub_app, name="assethub")
app.add_typer(derms_app, name="derms")
app.add_typer(enrollments_app, name="enrollments")
app.add_typer(devices_app, name="devices")
app.add_typer(events_app, name="events")
app.add_typer(score_app, name="score")
app.add_typer(messages_app, name="messages")
app.add_typer(wait_app, name="wait")
app.command()(smoke.smoke)
app.add_typer(edge_app, name="edge")
app.add_typer(sim_app, name="sim")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(contracts_app, name="contracts")
app.command()(bench.bench)


def main() -> None:
    """Console-script entry point. A database or broker that cannot be reached, in any command, is one line
    and exit status 5, not a traceback."""
    try:
        app()
    except Exception as error:
        from derbridge.cli.common import ExitCode, err, unreachable

        what = unreachable(error)
        if what is None:
            raise
        err.print(
            f"error: cannot reach {what}: is it running, and is its URL right (derbridge config show)?",
            markup=False,
            highlight=False,
        )
        raise SystemExit(ExitCode.UNREACHABLE) from None
