"""164.508(c) validation: every missing element is named; values are never echoed."""

from __future__ import annotations

import hashlib

import pytest
from consent_docs import SIGNED_TEXT, VALID, valid_doc

from carepost.consent.authorization import AuthorizationInvalid, validate_authorization


def missing_of(doc: object) -> list[str]:
    with pytest.raises(AuthorizationInvalid) as info:
        validate_authorization(doc)
    return info.value.missing


def test_a_complete_document_validates() -> None:
    doc = validate_authorization(VALID)
    assert doc.purpose_codes == frozenset({"marketing"})
    assert doc.recipient_ids == frozenset({"self", "acme-pharmacy"})
    assert doc.signed_text_sha256 == hashlib.sha256(SIGNED_TEXT.encode()).hexdigest()
    assert not doc.remuneration_statement
    assert doc.signed_by == "individual"


def test_an_empty_document_lists_every_element() -> None:
    assert missing_of({}) == [
        "phi_description",
        "disclosers",
        "recipients",
        "purposes",
        "expires_at or expiry_event",
        "signature.signer_name",
        "signature.signed_at",
        "signature.method",
        "signature.source_address",
        "signature.signed_text",
        "statements.right_to_revoke",
        "statements.conditioning",
        "statements.redisclosure",
        "statements.revocation_instructions",
    ]


@pytest.mark.parametrize(
    ("path", "element"),
    [
        (("phi_description",), "phi_description"),  # (c)(1)(i)
        (("disclosers",), "disclosers"),  # (c)(1)(ii)
        (("recipients",), "recipients"),  # (c)(1)(iii)
        (("purposes",), "purposes"),  # (c)(1)(iv)
        (("expires_at",), "expires_at or expiry_event"),  # (c)(1)(v)
        (("signature", "signer_name"), "signature.signer_name"),  # (c)(1)(vi)
        (("signature", "signed_at"), "signature.signed_at"),  # (c)(1)(vi) date
        (("signature", "signed_text"), "signature.signed_text"),  # evidence
        (("signature", "source_address"), "signature.source_address"),  # evidence
        (("signature", "method"), "signature.method"),  # evidence
        (("statements", "right_to_revoke"), "statements.right_to_revoke"),  # (c)(2)(i)
        (("statements", "revocation_instructions"), "statements.revocation_instructions"),
        (("statements", "conditioning"), "statements.conditioning"),  # (c)(2)(ii)
        (("statements", "redisclosure"), "statements.redisclosure"),  # (c)(2)(iii)
    ],
)
def test_each_missing_element_is_named(path: tuple[str, ...], element: str) -> None:
    doc = valid_doc()
    target = doc
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    assert missing_of(doc) == [element]


def test_expiry_event_instead_of_date() -> None:
    doc = valid_doc(expiry_event="end of the refill program")
    del doc["expires_at"]
    parsed = validate_authorization(doc)
    assert parsed.expires_at is None
    assert parsed.expiry_event == "end of the refill program"


def test_statement_flag_false_counts_as_missing() -> None:
    doc = valid_doc()
    doc["statements"]["redisclosure"] = False
    assert missing_of(doc) == ["statements.redisclosure"]


def test_paid_marketing_needs_remuneration_statement_and_payer() -> None:
    # 164.508(a)(3)(ii): remuneration statement and from whom.
    doc = valid_doc(purposes=[{"code": "marketing_paid", "description": "sponsored offers"}])
    assert missing_of(doc) == ["statements.remuneration", "statements.remuneration_from"]
    doc["statements"].update(remuneration=True, remuneration_from="Pharma Co")
    parsed = validate_authorization(doc)
    assert parsed.remuneration_statement
    assert "marketing" in parsed.purpose_codes


def test_remuneration_without_payer() -> None:
    doc = valid_doc()
    doc["statements"]["remuneration"] = True
    assert missing_of(doc) == ["statements.remuneration_from"]


def test_representative_needs_authority() -> None:
    # 164.508(c)(1)(vi): a representative's signature with a description of authority.
    doc = valid_doc()
    doc["signature"]["signed_by"] = "representative"
    assert missing_of(doc) == ["representative.name", "representative.authority"]
    doc["representative"] = {"name": "Sam Example", "authority": "parent of a minor"}
    assert validate_authorization(doc).signed_by == "representative"


def test_per_item_elements_are_named() -> None:
    doc = valid_doc(
        recipients=[{"id": "acme"}], purposes=[{"code": "marketing"}, {"description": "x"}]
    )
    assert missing_of(doc) == [
        "recipients[0].name",
        "purposes[0].description",
        "purposes[1].code",
    ]


def test_invalid_values_are_named_without_echoing_them() -> None:
    secret = "Jane-Q-Secret"
    doc = valid_doc(expires_at=secret, purposes=[{"code": secret, "description": "d"}])
    doc["signature"]["method"] = secret
    doc["signature"]["signed_text_sha256"] = "00" * 32
    with pytest.raises(AuthorizationInvalid) as info:
        validate_authorization(doc)
    message = str(info.value)
    assert secret not in message
    assert [p for p, _ in info.value.invalid] == [
        "purposes[0].code",
        "expires_at",
        "signature.method",
        "signature.signed_text_sha256",
    ]


def test_expiry_must_follow_signature_and_times_need_offsets() -> None:
    doc = valid_doc(expires_at="2026-04-01T00:00:00Z")
    with pytest.raises(AuthorizationInvalid) as info:
        validate_authorization(doc)
    assert info.value.invalid == [("expires_at", "must be after signature.signed_at")]
    doc = valid_doc(expires_at="2027-04-01T00:00:00")
    with pytest.raises(AuthorizationInvalid) as info:
        validate_authorization(doc)
    assert info.value.invalid == [("expires_at", "needs a UTC offset (e.g. Z)")]


def test_not_an_object() -> None:
    with pytest.raises(AuthorizationInvalid, match="JSON object"):
        validate_authorization(["x"])
