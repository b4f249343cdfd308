"""HIPAA authorization validation (45 CFR 164.508(c)).

`validate_authorization(raw)` checks an authorization document (the JSON a user gives
`carepost consent authorize --file`) and returns it typed, or raises
`AuthorizationInvalid` naming EVERY missing element and every invalid one by its JSON
path. Messages never repeat the values: they are PHI.

Elements (path: rule):

* `phi_description`: a specific description of the information (c)(1)(i)
* `disclosers`: who may use or disclose it (c)(1)(ii)
* `recipients[]` `{id, name}`: who may receive it (c)(1)(iii); `id` is the sender id
  the gate matches
* `purposes[]` `{code, description}`: each purpose (c)(1)(iv)
* `expires_at` or `expiry_event`: an expiration date or event (c)(1)(v)
* `signature.signer_name`, `signature.signed_at`: signature and date (c)(1)(vi)
* `representative.name`, `representative.authority`: when a representative signs
  (`signature.signed_by` = "representative") (c)(1)(vi)
* `statements.right_to_revoke` + `statements.revocation_instructions`: the right to revoke
  in writing and how (c)(2)(i)
* `statements.conditioning`: whether treatment, payment, enrollment or eligibility is
  conditioned on signing (c)(2)(ii)
* `statements.redisclosure`: that redisclosed information may lose protection (c)(2)(iii)
* `statements.remuneration` + `statements.remuneration_from`: for paid marketing, that the
  covered entity receives remuneration and from whom (a)(3)(ii); required together when
  either is given, and required for the purpose code `marketing_paid`
* evidence of signature: `signature.method`, `signature.source_address`,
  `signature.signed_text` (its SHA-256 is computed; `signature.signed_text_sha256`, if
  given, must match)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from carepost.consent.records import PURPOSE_CODES, valid_topic

SIGNATURE_METHODS = ("wet_ink", "electronic", "e_signature_service")
PAID_PURPOSE = "marketing_paid"  # accepted in purposes[] as marketing that a third party pays
_PURPOSES = (*PURPOSE_CODES, PAID_PURPOSE)


class AuthorizationInvalid(ValueError):
    """Lists every missing and invalid element by name; never the values."""

    def __init__(self, missing: list[str], invalid: list[tuple[str, str]]) -> None:
        self.missing = missing
        self.invalid = invalid
        parts = []
        if missing:
            parts.append("missing required elements: " + ", ".join(missing))
        if invalid:
            parts.append("invalid elements: " + ", ".join(f"{p} ({why})" for p, why in invalid))
        super().__init__("authorization cannot be saved; " + "; ".join(parts))

    def as_dict(self) -> dict[str, Any]:
        return {
            "missing": self.missing,
            "invalid": [{"element": p, "problem": why} for p, why in self.invalid],
        }


@dataclass(frozen=True)
class Recipient:
    id: str
    name: str


@dataclass(frozen=True)
class Purpose:
    code: str
    description: str


@dataclass(frozen=True)
class AuthorizationDocument:
    phi_description: str
    disclosers: tuple[str, ...]
    recipients: tuple[Recipient, ...]
    purposes: tuple[Purpose, ...]
    expires_at: datetime | None
    expiry_event: str | None
    signer_name: str
    signed_at: datetime
    signed_by: str  # individual | representative
    signature_method: str
    signature_source_address: str
    signed_text: str
    signed_text_sha256: str
    representative_name: str | None
    representative_authority: str | None
    revocation_instructions: str
    remuneration_from: str | None

    @property
    def purpose_codes(self) -> frozenset[str]:
        codes = {p.code for p in self.purposes}
        if PAID_PURPOSE in codes:
            codes.add("marketing")
        return frozenset(codes)

    @property
    def recipient_ids(self) -> frozenset[str]:
        return frozenset(r.id for r in self.recipients)

    @property
    def remuneration_statement(self) -> bool:
        return bool(self.remuneration_from)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("expires_at", "signed_at"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        return data


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _time(value: Any, path: str, invalid: list[tuple[str, str]]) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        invalid.append((path, "not an ISO 8601 date-time"))
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        invalid.append((path, "not an ISO 8601 date-time"))
        return None
    if parsed.tzinfo is None:
        invalid.append((path, "needs a UTC offset (e.g. Z)"))
        return None
    return parsed


def validate_authorization(raw: Any) -> AuthorizationDocument:
    if not isinstance(raw, Mapping):
        raise AuthorizationInvalid([], [("(document)", "must be a JSON object")])
    missing: list[str] = []
    invalid: list[tuple[str, str]] = []

    phi_description = _text(raw, "phi_description")
    if phi_description is None:
        missing.append("phi_description")

    disclosers: list[str] = []
    raw_disclosers = raw.get("disclosers")
    if isinstance(raw_disclosers, list):
        for i, d in enumerate(raw_disclosers):
            if isinstance(d, str) and d.strip():
                disclosers.append(d.strip())
            else:
                invalid.append((f"disclosers[{i}]", "must be a non-empty text"))
    if not disclosers:
        missing.append("disclosers")

    recipients: list[Recipient] = []
    raw_recipients = raw.get("recipients")
    if isinstance(raw_recipients, list):
        for i, r in enumerate(raw_recipients):
            if not isinstance(r, Mapping):
                invalid.append((f"recipients[{i}]", "must be an object with id and name"))
                continue
            rid, name = _text(r, "id"), _text(r, "name")
            if rid is None:
                missing.append(f"recipients[{i}].id")
            elif not valid_topic(rid):
                invalid.append((f"recipients[{i}].id", "must be a sender id slug [a-z0-9-_.]"))
                rid = None
            if name is None:
                missing.append(f"recipients[{i}].name")
            if rid and name:
                recipients.append(Recipient(rid, name))
    if not recipients and not any(m.startswith("recipients[") for m in missing):
        missing.append("recipients")

    purposes: list[Purpose] = []
    raw_purposes = raw.get("purposes")
    if isinstance(raw_purposes, list):
        for i, p in enumerate(raw_purposes):
            if not isinstance(p, Mapping):
                invalid.append((f"purposes[{i}]", "must be an object with code and description"))
                continue
            code, description = _text(p, "code"), _text(p, "description")
            if code is None:
                missing.append(f"purposes[{i}].code")
            elif code not in _PURPOSES:
                invalid.append((f"purposes[{i}].code", "one of " + ", ".join(_PURPOSES)))
                code = None
            if description is None:
                missing.append(f"purposes[{i}].description")
            if code and description:
                purposes.append(Purpose(code, description))
    if not purposes and not any(m.startswith("purposes[") for m in missing):
        missing.append("purposes")

    expires_at = None
    if raw.get("expires_at") not in (None, ""):
        expires_at = _time(raw.get("expires_at"), "expires_at", invalid)
    expiry_event = _text(raw, "expiry_event")
    if raw.get("expires_at") in (None, "") and expiry_event is None:
        missing.append("expires_at or expiry_event")

    sig = raw.get("signature")
    sig = sig if isinstance(sig, Mapping) else {}
    signer_name = _text(sig, "signer_name")
    if signer_name is None:
        missing.append("signature.signer_name")
    signed_at = None
    if sig.get("signed_at") in (None, ""):
        missing.append("signature.signed_at")
    else:
        signed_at = _time(sig.get("signed_at"), "signature.signed_at", invalid)
    method = _text(sig, "method")
    if method is None:
        missing.append("signature.method")
    elif method not in SIGNATURE_METHODS:
        invalid.append(("signature.method", "one of " + ", ".join(SIGNATURE_METHODS)))
    source_address = _text(sig, "source_address")
    if source_address is None:
        missing.append("signature.source_address")
    signed_text = sig.get("signed_text")
    digest = ""
    if not isinstance(signed_text, str) or not signed_text.strip():
        missing.append("signature.signed_text")
        signed_text = ""
    else:
        digest = hashlib.sha256(signed_text.encode("utf-8")).hexdigest()
        given = sig.get("signed_text_sha256")
        if given not in (None, "") and str(given).lower() != digest:
            invalid.append(("signature.signed_text_sha256", "does not match signed_text"))
    signed_by = _text(sig, "signed_by") or "individual"
    if signed_by not in ("individual", "representative"):
        invalid.append(("signature.signed_by", "individual or representative"))

    rep = raw.get("representative")
    rep_name = rep_authority = None
    if signed_by == "representative" or (isinstance(rep, Mapping) and rep):
        rep = rep if isinstance(rep, Mapping) else {}
        rep_name, rep_authority = _text(rep, "name"), _text(rep, "authority")
        if rep_name is None:
            missing.append("representative.name")
        if rep_authority is None:
            missing.append("representative.authority")
        signed_by = "representative"

    st = raw.get("statements")
    st = st if isinstance(st, Mapping) else {}
    for flag in ("right_to_revoke", "conditioning", "redisclosure"):
        if st.get(flag) is not True:
            missing.append(f"statements.{flag}")
    revocation_instructions = _text(st, "revocation_instructions")
    if revocation_instructions is None:
        missing.append("statements.revocation_instructions")
    remuneration_from = _text(st, "remuneration_from")
    paid = any(p.code == PAID_PURPOSE for p in purposes)
    if st.get("remuneration") is True or remuneration_from is not None or paid:
        if st.get("remuneration") is not True:
            missing.append("statements.remuneration")
        if remuneration_from is None:
            missing.append("statements.remuneration_from")
    if signed_at is not None and expires_at is not None and expires_at <= signed_at:
        invalid.append(("expires_at", "must be after signature.signed_at"))

    if missing or invalid:
        raise AuthorizationInvalid(missing, invalid)
    assert phi_description is not None
    assert signer_name is not None
    assert signed_at is not None
    assert method is not None
    assert source_address is not None
    assert revocation_instructions is not None
    return AuthorizationDocument(
        phi_description=phi_description,
        disclosers=tuple(disclosers),
        recipients=tuple(recipients),
        purposes=tuple(purposes),
        expires_at=expires_at,
        expiry_event=expiry_event,
        signer_name=signer_name,
        signed_at=signed_at,
        signed_by=signed_by,
        signature_method=method,
        signature_source_address=source_address,
        signed_text=signed_text,
        signed_text_sha256=digest,
        representative_name=rep_name,
        representative_authority=rep_authority,
        revocation_instructions=revocation_instructions,
        remuneration_from=remuneration_from if st.get("remuneration") is True else None,
    )
