"""The one table from domain errors to problem details: every class has a status, a subclass takes its
parent's, and the problem carries exactly what the error said."""

from __future__ import annotations

import ast
import inspect

import pytest

from derbridge import errors
from derbridge.errors import (
    Conflict,
    DomainError,
    FieldError,
    Invalid,
    MissingPrerequisite,
    NotFound,
    NotPermitted,
    Unavailable,
    not_found,
)
from derbridge.infra.problems import PROBLEM_STATUS, as_problem, status_for


def _domain_error_classes() -> list[type[DomainError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, DomainError) and cls.__module__ == errors.__name__
    ]


@pytest.mark.parametrize("cls", _domain_error_classes(), ids=lambda cls: cls.__name__)
def test_every_domain_error_class_has_its_status_in_the_table(cls: type[DomainError]) -> None:
    assert cls in PROBLEM_STATUS


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFound("not-found", "event not found", "No event."), 404),
        (Invalid("validation-error", "The request is not valid", "Fix it."), 422),
        (Conflict("event-started", "The event has started", "Too late."), 409),
        (NotPermitted("forbidden", "Forbidden", "Not yours."), 403),
        (Unavailable("score-file-not-ready", "Not yet", "Retry."), 503),
        (MissingPrerequisite("cis-account:A1", "The customer has not arrived."), 409),
        (DomainError("refused", "Refused", "No."), 422),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, DomainError) else str(value),
)
def test_each_class_maps_to_its_status(error: DomainError, status: int) -> None:
    assert status_for(error) == status
    assert as_problem(error).status == status


def test_an_unlisted_subclass_takes_its_nearest_listed_ancestors_status() -> None:
    class EventStarted(Conflict):
        pass

    class Refusal(DomainError):
        pass

    class Deeper(EventStarted):
        pass

    assert status_for(EventStarted("event-started", "The event has started", "Too late.")) == 409
    assert status_for(Deeper("event-started", "The event has started", "Too late.")) == 409
    assert status_for(Refusal("refused", "Refused", "No.")) == PROBLEM_STATUS[DomainError]


def test_the_problem_carries_the_errors_kind_title_detail_and_fields() -> None:
    error = Invalid(
        "program-rule",
        "The program change is not allowed",
        "The window closes before it opens.",
        errors=[FieldError(field="body.enrollment_closes_at", message="before enrollment_opens_at")],
    )
    problem = as_problem(error)
    assert (problem.status, problem.kind, problem.title, problem.detail) == (
        422,
        "program-rule",
        "The program change is not allowed",
        "The window closes before it opens.",
    )
    assert [e.model_dump() for e in problem.errors or []] == [
        {"field": "body.enrollment_closes_at", "message": "before enrollment_opens_at"}
    ]
    assert problem.extensions == {}
    assert problem.headers is None


def test_a_missing_prerequisite_is_the_409_that_parks_with_its_wake_on() -> None:
    problem = as_problem(MissingPrerequisite("program:P1", "The program has not arrived."))
    assert (problem.status, problem.kind, problem.title) == (
        409,
        "missing-prerequisite",
        "A prerequisite has not arrived yet",
    )
    assert problem.detail == "The program has not arrived."
    assert problem.extensions == {"wake_on": "program:P1"}
    assert problem.errors is None


def test_not_found_names_what_and_its_key() -> None:
    problem = as_problem(not_found("event", "E1"))
    assert (problem.status, problem.kind, problem.title) == (404, "not-found", "event not found")
    assert problem.detail == "No event has the id 'E1'. Check the id, or list them."


def test_the_domain_errors_module_imports_no_web_framework_nor_infra() -> None:
    tree = ast.parse(inspect.getsource(errors))
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.split(".")[0] in ("fastapi", "starlette", "pydantic")]
    assert not [name for name in imported if name.startswith("derbridge")]
