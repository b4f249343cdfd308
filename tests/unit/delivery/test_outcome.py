"""The delivery outcome core, exhaustively over reply classes and phases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.delivery.outcome import (
    REASONS,
    bounce_kind,
    classify_error,
    classify_reply,
    enhanced_status,
    tls_unavailable,
)

PHASES = ["connect", "tls", "mail", "rcpt", "data"]


@given(st.sampled_from(PHASES), st.integers(200, 599), st.text(max_size=40))
def test_reply_class_decides_status(phase, code, text) -> None:  # type: ignore[no-untyped-def]
    outcome = classify_reply(phase, code, text)
    expected = {2: "sent", 4: "deferred", 5: "failed"}.get(code // 100, "deferred")
    assert outcome.status == expected
    assert outcome.reason in REASONS
    assert (outcome.bounce is not None) == (code >= 400 and code // 100 in (4, 5))


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (550, "5.1.1 User unknown", "hard"),
        (550, "5.7.1 Message rejected as spam", "policy"),
        (550, "no enhanced code", "hard"),
        (553, "mailbox name not allowed", "hard"),
        (551, "user not local", "hard"),
        (552, "5.2.2 Mailbox full", "soft"),
        (552, "no enhanced code", "soft"),
        (554, "5.7.1 Transaction failed", "policy"),
        (554, "no enhanced code", "policy"),
        (550, "5.1.10 Null MX", "hard"),
        (521, "5.3.2 does not accept mail", "policy"),
    ],
)
def test_bounce_kinds(code: int, text: str, kind: str) -> None:
    assert bounce_kind(code, enhanced_status(text)) == kind
    assert classify_reply("rcpt", code, text).bounce == kind


@pytest.mark.parametrize("kind", ["timeout", "lost", "connect", "tls"])
def test_anything_after_the_body_is_unknown(kind) -> None:  # type: ignore[no-untyped-def]
    assert classify_error("after_data", kind).status == "unknown"


@pytest.mark.parametrize("phase", ["connect", "tls", "mail", "rcpt", "data"])
@pytest.mark.parametrize("kind", ["timeout", "lost", "connect", "tls"])
def test_anything_before_the_body_is_deferred(phase, kind) -> None:  # type: ignore[no-untyped-def]
    outcome = classify_error(phase, kind)
    assert outcome.status == "deferred"
    assert outcome.reason in REASONS
    assert outcome.tls_alert == (kind == "tls")


def test_tls_unavailable_alerts() -> None:
    outcome = tls_unavailable()
    assert (outcome.status, outcome.reason, outcome.tls_alert) == (
        "deferred",
        "tls_unavailable",
        True,
    )


def test_enhanced_status_parsing() -> None:
    assert enhanced_status("2.0.0 Ok") == "2.0.0"
    assert enhanced_status(" 5.1.1 <x>: unknown") == "5.1.1"
    assert enhanced_status("Ok queued") is None
    assert enhanced_status("9.9.9 nope") is None
