"""Program sync (Asset Hub → DERMS), acknowledged by the DERMS: a program as the DERMS needs it to dispatch.

Programs are Asset Hub's master data; the DERMS keeps a copy it may not change. Each message is a complete
statement of the program at one ``version`` (the envelope's ``sequence``, per ``business_key`` = program
code), so the highest version applied wins whatever order the messages arrive in.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from derbridge.contracts.common import Contract, ProgramCode

TYPE = "program-sync.v1"
ACK_TYPE = "program-sync-ack.v1"


class ProgramStatus(StrEnum):
    """A program's status, as Asset Hub's program lifecycle has it. The DERMS creates events only in an
    ACTIVE program; a CLOSED one is over for good (its existing events run their course)."""

    DRAFT = "DRAFT"
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    CLOSED = "CLOSED"


class ProgramSync(Contract):
    """The whole of a program at one version: what the DERMS needs to create and dispatch its events. The
    envelope's ``sequence`` equals ``version`` and its ``business_key`` equals ``program_code``."""

    program_code: ProgramCode
    version: int = Field(ge=1, description="One more at each change of the program in Asset Hub (1 when created).")
    name: str = Field(min_length=1, max_length=200)
    status: ProgramStatus
    expected_shed_kw: float = Field(gt=0, le=1000, description="Expected shed per device, for events' kW targets.")
    outcome_grace_hours: float = Field(
        ge=0,
        le=24 * 14,
        description="Hours after an event's end that outcomes are awaited before silent devices are NON_RESPONSIVE.",
    )
