"""Domain errors: what the business refuses, and why, with no HTTP in them.

Domain code, services, the VTN and use cases raise these; they never name a status code. Each carries what
a caller needs to correct the request: ``kind`` (the problem type's slug, appended to
``https://derbridge.dev/problems/``), a short ``title``, a ``detail`` saying what to do, and ``errors`` naming
the fields at fault. The APIs turn them into problem details through one table, class → status
(:data:`derbridge.infra.problems.PROBLEM_STATUS`); the inbox turns them into per-message answers through the
same table, and the CLI into an exit code.

Pick the class by what the refusal means: the thing named does not exist (:class:`NotFound`); the request
or message is wrong in itself and will stay wrong (:class:`Invalid`); it conflicts with the state things are
in now (:class:`Conflict`); this caller may not do it (:class:`NotPermitted`); it needs something that has
not arrived yet (:class:`MissingPrerequisite`); or it cannot be done right now and will succeed later as it
is (:class:`Unavailable`). A subclass inherits its parent's status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One field that was wrong, and why: ``field`` a dotted path into the request or message (e.g.
    ``body.rules.fatigue_cap``)."""

    field: str
    message: str


class DomainError(Exception):
    """A refusal of the business: ``kind`` names it (a stable slug), ``title`` says it in a few words,
    ``detail`` says what to do, ``errors`` names the fields at fault."""

    def __init__(self, kind: str, title: str, detail: str, *, errors: Sequence[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.title = title
        self.detail = detail
        self.errors: tuple[FieldError, ...] = tuple(errors or ())
        self.extensions: dict[str, Any] = {}
        """Members the problem carries beside the standard ones (e.g. ``wake_on``)."""


class NotFound(DomainError):
    """The thing named does not exist (or the caller may not see it)."""


class Invalid(DomainError):
    """The request or message is wrong in itself (a value breaks a rule): sent again unchanged, it is
    refused again."""


class Conflict(DomainError):
    """The request conflicts with the state things are in now (an event that has started, a name taken)."""


class NotPermitted(DomainError):
    """This caller may not do this."""


class Unavailable(DomainError):
    """It cannot be done right now (a file not in the store yet, a store that failed); the same request
    later may succeed."""


class MissingPrerequisite(DomainError):
    """A message needs something that has not arrived yet (e.g. the CIS customer): the bridge parks it and
    delivers it again when ``wake_on`` is announced."""

    def __init__(self, wake_on: str, detail: str) -> None:
        super().__init__("missing-prerequisite", "A prerequisite has not arrived yet", detail)
        self.wake_on = wake_on
        self.extensions = {"wake_on": wake_on}


def not_found(what: str, key: str) -> NotFound:
    """The refusal for ``what`` identified by ``key`` that does not exist."""
    return NotFound("not-found", f"{what} not found", f"No {what} has the id {key!r}. Check the id, or list them.")
