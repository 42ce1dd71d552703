"""The DERMS's part of each flow: importing these modules registers their message handlers (on
:data:`derbridge.derms.messages.inbox`), their jobs (on :data:`derbridge.derms.jobs.jobs`), and gives their
HTTP routers (a module-level ``router``) to mount under ``/derms/v1``."""

from __future__ import annotations

import importlib
from types import ModuleType

from fastapi import APIRouter

MODULES = (
    "derbridge.derms.services.enrollment_requests",  # F1
    "derbridge.derms.services.status_checks",  # F2
    "derbridge.derms.services.enrollment_sync",  # F3
    "derbridge.derms.services.score_snapshots",  # F4
    "derbridge.derms.services.event_messages",  # F5, F6, F7 messages and lifecycle
    "derbridge.derms.services.outcomes",  # F7
    "derbridge.derms.services.program_sync",  # F8
    "derbridge.derms.api.enrollment_routes",
    "derbridge.derms.api.outcome_routes",
)


def load() -> list[ModuleType]:
    """Import every flow module (idempotent)."""
    return [importlib.import_module(name) for name in MODULES]


def routers() -> list[APIRouter]:
    """The routers the flow modules define."""
    return [m.router for m in load() if isinstance(getattr(m, "router", None), APIRouter)]
