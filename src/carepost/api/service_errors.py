"""The feature packages' own errors as problems, in one table (problems.install
registers each row): which status and kind, and for the errors that carry places (a
rule's line and column, a template's part and line, a journey's step and field) the
`errors` list with a JSON pointer to the request field at fault.

Service messages are written without patient data; a rule error's message can still
quote the token it stopped at, which staff typed and might be anything, so quoted text
is dropped from it (the line and column say where)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from carepost.api.problems import Problem
from carepost.campaigns.service import CampaignError, CampaignNotFound, CampaignStateError
from carepost.contacts.phi import ContactNotFound, PurposeRequired
from carepost.content.template import TemplateRejected
from carepost.journeys.definition import DefinitionError
from carepost.journeys.service import JourneyError, JourneyNotFound
from carepost.messages.data import DataRejected
from carepost.messages.service import MessageError
from carepost.reports.service import ReportError
from carepost.segments.ast import RuleError
from carepost.segments.service import SegmentError, SegmentNotFound

_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def without_quotes(message: str) -> str:
    return _QUOTED.sub("(token)", message)


def _rule(exc: Exception) -> Problem:
    assert isinstance(exc, RuleError)
    error: dict[str, Any] = {
        "pointer": "/body/rule",
        "line": exc.line,
        "column": exc.column,
        "detail": without_quotes(exc.message),
    }
    if exc.expected:
        error["expected"] = list(exc.expected)
    if exc.suggestion:
        error["suggestion"] = exc.suggestion
    return Problem(
        422,
        "invalid-rule",
        f"the rule is not valid (line {exc.line}, column {exc.column})",
        errors=[error],
    )


def _template(exc: Exception) -> Problem:
    assert isinstance(exc, TemplateRejected)
    errors = [
        {"pointer": f"/body/{p.part}", "line": p.line, "field": p.field, "detail": p.message}
        for p in exc.problems
    ]
    return Problem(
        422, "template-rejected", f"{len(errors)} problem(s); nothing was saved", errors=errors
    )


def _definition(exc: Exception) -> Problem:
    assert isinstance(exc, DefinitionError)
    errors = [
        {"pointer": "/body/definition", "at": where, "detail": what} for where, what in exc.problems
    ]
    return Problem(
        422, "invalid-journey", f"{len(errors)} problem(s); nothing was published", errors=errors
    )


def _purpose(exc: Exception) -> Problem:
    return Problem(
        422,
        "purpose-required",
        "a PHI read needs a purpose",
        errors=[{"pointer": "/header/X-Purpose", "detail": "required for PHI reads"}],
    )


def _data(exc: Exception) -> Problem:
    assert isinstance(exc, DataRejected)
    errors = [
        {"pointer": "/body/data" + (f"/{key}" if key else ""), "detail": what}
        for key, what in exc.problems
    ]
    return Problem(
        422, "invalid-data", "the data does not fit the template's data fields", errors=errors
    )


def _message(exc: Exception) -> Problem:
    assert isinstance(exc, MessageError)
    kind = "not-found" if exc.status == 404 else "invalid-message"
    return Problem(
        exc.status, kind, str(exc), errors=[{"pointer": f"/body/{exc.field}", "detail": exc.detail}]
    )


def _plain(status: int, kind: str) -> Callable[[Exception], Problem]:
    def problem(exc: Exception) -> Problem:
        return Problem(status, kind, str(exc))

    return problem


# Most specific first is not needed (handlers are found along the exception's MRO),
# but it reads better.
TABLE: tuple[tuple[type[Exception], Callable[[Exception], Problem]], ...] = (
    (RuleError, _rule),
    (TemplateRejected, _template),
    (DefinitionError, _definition),
    (PurposeRequired, _purpose),
    (SegmentNotFound, _plain(404, "not-found")),
    (CampaignNotFound, _plain(404, "not-found")),
    (JourneyNotFound, _plain(404, "not-found")),
    (ContactNotFound, _plain(404, "not-found")),
    (CampaignStateError, _plain(409, "conflict")),
    (SegmentError, _plain(422, "invalid-segment")),
    (CampaignError, _plain(422, "invalid-campaign")),
    (JourneyError, _plain(422, "invalid-journey")),
    (ReportError, _plain(422, "invalid-report")),
    (DataRejected, _data),
    (MessageError, _message),
)
