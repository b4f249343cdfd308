"""Relays echo the recipient in replies; evidence keeps the reply without it."""

from __future__ import annotations

from carepost.delivery.smtp import redact_reply


def test_address_removed_in_any_case_and_every_occurrence() -> None:
    reply = "550 5.1.1 <Pat.Doe@Example.ORG>: unknown; pat.doe@example.org rejected"
    assert redact_reply(reply, ["pat.doe@example.org"]) == (
        "550 5.1.1 <<recipient>>: unknown; <recipient> rejected"
    )


def test_whitespace_folded_and_length_capped() -> None:
    assert redact_reply("250  2.0.0\r\n Ok", []) == "250 2.0.0 Ok"
    assert len(redact_reply("250 " + "x" * 2000, [])) == 512


def test_empty_address_is_ignored() -> None:
    assert redact_reply("250 ok", ["", "a@b.example"]) == "250 ok"
