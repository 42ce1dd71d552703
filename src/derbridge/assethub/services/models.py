"""What Asset Hub's services take: the validated commands of its use cases (the API's request bodies are
these models, re-exported by :mod:`derbridge.assethub.api.schemas`; a service imports no API module)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from derbridge.assethub.domain.program import DeviceType, ProgramRules, ProgramStatus
from derbridge.infra.web import NO_NUL, UtcDateTime

ProgramCode = Annotated[
    str,
    Field(
        pattern=r"^[A-Z0-9][A-Z0-9_-]{1,63}$",
        description="Upper-case letters, digits, '-' and '_', e.g. SUMMER-BYOT.",
        examples=["SUMMER-BYOT"],
    ),
]


class ProgramIn(BaseModel):
    """A new program."""

    model_config = ConfigDict(extra="forbid")

    program_code: ProgramCode
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    status: ProgramStatus = ProgramStatus.DRAFT
    enrollment_opens_at: UtcDateTime | None = None
    enrollment_closes_at: UtcDateTime | None = None
    eligible_device_types: list[DeviceType] = Field(default=[DeviceType.THERMOSTAT], min_length=1)
    excluded_program_codes: list[ProgramCode] = Field(default_factory=list)
    rules: ProgramRules = Field(default_factory=ProgramRules)


class ProgramPatch(BaseModel):
    """Changes to a program; fields left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    status: ProgramStatus | None = None
    enrollment_opens_at: UtcDateTime | None = None
    enrollment_closes_at: UtcDateTime | None = None
    eligible_device_types: list[DeviceType] | None = Field(None, min_length=1)
    excluded_program_codes: list[ProgramCode] | None = None
    rules: ProgramRules | None = None
