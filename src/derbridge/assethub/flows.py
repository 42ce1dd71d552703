"""Asset Hub's part of each flow: importing these modules registers their message handlers (on
:data:`derbridge.assethub.messages.inbox`), their jobs (on :data:`derbridge.assethub.jobs.jobs`), and
gives their HTTP routers (a module-level ``router``) to mount under ``/assethub/v1``."""

from __future__ import annotations

import importlib
from types import ModuleType

from fastapi import APIRouter

MODULES = (
    "derbridge.assethub.services.enrollment_requests",  # F1
    "derbridge.assethub.services.status_checks",  # F2
    "derbridge.assethub.services.enrollment_sync",  # F3
    "derbridge.assethub.services.score_transfer",  # F4
    "derbridge.assethub.services.events",  # F5, F6, F7
    "derbridge.assethub.services.program_sync",  # F8
    "derbridge.assethub.api.enrollment_routes",
    "derbridge.assethub.api.status_check_routes",
    "derbridge.assethub.api.score_routes",
)


def load() -> list[ModuleType]:
    """Import every flow module (idempotent)."""
    return [importlib.import_module(name) for name in MODULES]


def routers() -> list[APIRouter]:
    """The routers the flow modules define."""
    return [m.router for m in load() if isinstance(getattr(m, "router", None), APIRouter)]
