"""`X-Purpose`: why a caller reads PHI. Every PHI read needs one of the vocabulary below
(HIPAA's minimum-necessary standard, 45 CFR 164.502(b), asks a reason of each use); it is
recorded in the read's audit entry (contacts/phi.py) next to the key or user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from carepost.api.problems import Problem

HEADER = "X-Purpose"

# purpose -> when it applies (documented in the OpenAPI document and architecture.md)
PURPOSES: dict[str, str] = {
    "treatment": "care of the patient (164.506(c)(1))",
    "payment": "billing and payment for care",
    "operations": "health care operations: quality, scheduling, customer service",
    "patient_request": "the patient asked for their own record (164.524)",
    "audit": "a compliance review or audit of access",
    "legal": "a legal obligation: a subpoena, court order or regulator",
}


def purpose(
    x_purpose: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="Why PHI is read (audited): one of " + ", ".join(PURPOSES) + ".",
            json_schema_extra={"enum": list(PURPOSES)},
        ),
    ] = None,
) -> str:
    if x_purpose is None or x_purpose not in PURPOSES:
        raise Problem(
            400,
            "purpose-required",
            f"reading PHI needs the {HEADER} header, one of {', '.join(PURPOSES)}",
            errors=[
                {
                    "pointer": f"/header/{HEADER}",
                    "detail": "missing" if x_purpose is None else "not a known purpose",
                }
            ],
        )
    return x_purpose


Purpose = Annotated[str, Depends(purpose)]
