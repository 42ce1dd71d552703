"""Structured logs (structlog) on stderr: JSON lines for machines, readable lines for a person at a terminal.

Logs never go to stdout: a command's stdout is its result (a table, a line, or ``--json``). Both structlog's
own loggers and the standard library's (uvicorn, alembic…) go through the same renderer, so a log is all
JSON or all readable lines.

Log events carry ids (message_id, correlation_id, enrollment_id…), never personal data: callers pass ids,
not names, e-mails or addresses.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def wants_json(json: bool | None, stream: TextIO | None = None) -> bool:
    """JSON when asked, readable when asked; unset, JSON unless the stream (stderr) is a terminal."""
    if json is not None:
        return json
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """Route structlog and stdlib logs at ``level`` to stderr, as JSON or readable lines (see :func:`wants_json`)."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    as_json = wants_json(json)
    renderer: structlog.typing.Processor
    # ConsoleRenderer formats exceptions itself (format_exc_info before it would only flatten them, with a
    # warning); JSON needs the traceback as a string field.
    tail: list[structlog.typing.Processor]
    if as_json:
        renderer = structlog.processors.JSONRenderer()
        tail = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=not wants_json(None))
        tail = [renderer]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # A uvicorn started with its own log config (anywhere in this process, earlier) gave its loggers their
    # own handlers and stopped them propagating: they would write past this renderer. Ours own them.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        server_logger = logging.getLogger(name)
        for old in list(server_logger.handlers):
            server_logger.removeHandler(old)
        server_logger.propagate = True
    # Alembic's steps and httpx's per-request lines are noise at INFO for an operator running a command.
    for noisy in ("alembic", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
