"""PHI canary for consent: an authorization whose every free-text element carries a marker,
a suppression of a marked address, an unsubscribe and a gate run; then the raw database
(SQLite file and WAL, or pg_dump) must hold none of the markers."""

from __future__ import annotations

import sys
from pathlib import Path

from consent_support import add_contacts
from test_canary import raw_database

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "consent"))
from consent_docs import valid_doc

from carepost.audit.actor import Actor
from carepost.consent import service
from carepost.db import transaction
from carepost.workspace import Workspace

MARKERS = [
    "qzxphidescription",
    "qzxdiscloser",
    "qzxrecipientname",
    "qzxpurposetext",
    "qzxexpiryevent",
    "qzxsigner",
    "qzxsourceaddr",
    "qzxsignedtext",
    "qzxrepname",
    "qzxauthority",
    "qzxrevokehow",
    "qzxpayer",
    "qzxsuppressed@qzx.example",
    "p0@example.org",
]


def test_no_consent_phi_in_the_raw_database(
    workspace: Workspace, actor: Actor, db_url: str, tmp_path: Path
) -> None:
    ws = workspace
    doc = valid_doc(
        phi_description="qzxphidescription",
        disclosers=["qzxdiscloser"],
        recipients=[{"id": "self", "name": "qzxrecipientname"}],
        purposes=[{"code": "marketing_paid", "description": "qzxpurposetext"}],
        expiry_event="qzxexpiryevent",
        representative={"name": "qzxrepname", "authority": "qzxauthority"},
    )
    del doc["expires_at"]
    doc["signature"].update(
        signer_name="qzxsigner", source_address="qzxsourceaddr", signed_text="qzxsignedtext"
    )
    doc["statements"].update(
        revocation_instructions="qzxrevokehow", remuneration=True, remuneration_from="qzxpayer"
    )
    with transaction(ws.engine) as s:
        [cid] = add_contacts(s, ws.keyring, 1)
        auth_id = service.add_authorization(
            s, ws.keyring, contact_id=cid, document=doc, actor=actor
        )
        service.add_suppression(
            s,
            channel="email",
            address_bis=[service.address_bi(ws.keyring, "email", "QZXsuppressed@qzx.example")],
            reason="spam_complaint",
            source="api",
            actor=actor,
        )
        service.unsubscribe_all(s, contact_id=cid, channel="email", actor=actor)
        service.revoke_authorization(s, authorization_id=auth_id, source="form", actor=actor)
        service.gate_batch(
            s,
            campaign_id="canary",
            contact_ids=[cid],
            message_class="marketing_paid",
            channel="email",
            topic="newsletter",
            sender="self",
            actor=actor,
        )
    raw = raw_database(ws, db_url, tmp_path).lower()
    assert [m for m in MARKERS if m.encode() in raw] == []
    # The document is there, sealed: the plain structure is readable without it.
    with transaction(ws.engine) as s:
        [row] = service.authorizations_of(s, cid)
    assert row["purposes"] == ["marketing", "marketing_paid"]
    assert row["signed_by_representative"] is True
    assert row["remuneration_statement"] is True
