"""The DERMS's ports: the hooks its flows call, in the inbox transaction, for whoever is wired to them.

The edge gateway (OpenADR 3.1 VTN) is the DERMS's gateway to the aggregators; the DERMS does not import it.
Instead the DERMS's composition root (:func:`derbridge.derms.system.build`) is given a :class:`DermsPorts`,
and the flows call each hook after they changed what an aggregator sees:

- F1 answers recorded → :attr:`DermsPorts.requests_answered` (the edge tells the resource's subscribers its
  enrollment status changed);
- F3 sync applied → :attr:`DermsPorts.enrollment_states_changed` (the same, for the new state);
- F2 status check answered from storage → :attr:`DermsPorts.fresh_readings` (the edge asks the aggregator
  for a fresh reading; when it arrives the DERMS answers the check a second time).

Every hook runs inside the transaction of the message that caused it, so its writes (a notification queued,
a request recorded) commit or roll back with that message. A DERMS built with :data:`NO_PORTS` (a DERMS
without its edge) simply tells no one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts import device_status_check
from derbridge.contracts.envelope import Envelope


class AnswersListener(Protocol):
    """Told which requests of a head-end just took Asset Hub's answer (F1)."""

    async def __call__(
        self, connection: AsyncConnection, head_end_system: str, request_ids: Sequence[str], now: datetime
    ) -> None: ...


class StatesListener(Protocol):
    """Told which enrollments just took a new state from an applied sync (F3)."""

    async def __call__(self, connection: AsyncConnection, enrollment_ids: Sequence[str], now: datetime) -> None: ...


class FreshReadingRequester(Protocol):
    """Asks the devices' aggregators for fresh readings after status checks were answered from storage (F2):
    ``checks`` are ``(message, check)`` in delivery order (one, or a batch handler's whole run)."""

    async def __call__(
        self,
        connection: AsyncConnection,
        checks: Sequence[tuple[Envelope, device_status_check.StatusCheckRequest]],
        now: datetime,
    ) -> None: ...


@dataclass(frozen=True)
class DermsPorts:
    """The hooks of one DERMS, each called in order (see the module docstring)."""

    requests_answered: Sequence[AnswersListener] = ()
    enrollment_states_changed: Sequence[StatesListener] = ()
    fresh_readings: Sequence[FreshReadingRequester] = ()


NO_PORTS = DermsPorts()
"""A DERMS wired to no gateway."""
