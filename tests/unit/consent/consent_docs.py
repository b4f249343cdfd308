"""A complete authorization document (synthetic) for tests."""

from __future__ import annotations

import copy
from typing import Any

SIGNED_TEXT = "I authorize Example Clinic to use my name and email for refill offers. [synthetic]"

VALID: dict[str, Any] = {
    "phi_description": "Name, email address and prescription refill dates",
    "disclosers": ["Example Clinic"],
    "recipients": [
        {"id": "self", "name": "Example Clinic"},
        {"id": "acme-pharmacy", "name": "Acme Pharmacy"},
    ],
    "purposes": [{"code": "marketing", "description": "Offers about refill services"}],
    "expires_at": "2027-12-31T00:00:00Z",
    "signature": {
        "signer_name": "Pat Example",
        "signed_at": "2026-05-01T10:00:00Z",
        "method": "electronic",
        "source_address": "203.0.113.7",
        "signed_text": SIGNED_TEXT,
    },
    "statements": {
        "right_to_revoke": True,
        "revocation_instructions": "Write to Privacy Office, 1 Example Way, or use the portal",
        "conditioning": True,
        "redisclosure": True,
    },
}


def valid_doc(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    doc.update(changes)
    return doc
