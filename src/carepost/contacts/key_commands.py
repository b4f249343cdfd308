"""`carepost contacts key add|list|remove`: a contact's S/MIME certificate or OpenPGP
public key for end-to-end encrypted mail. Output shows ids, kinds, fingerprints and
dates only: never the certificate's names or addresses."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from carepost.cli_support import DataDir, JsonFlag, actor_of, emit_json, fail, out, workspace
from carepost.contacts import key_service
from carepost.contacts.recipient_keys import PGP, SMIME, KeyRejected
from carepost.db import transaction

key_app = typer.Typer(
    no_args_is_help=True, help="A contact's S/MIME certificates and OpenPGP keys (end to end)."
)

Contact = Annotated[str, typer.Option("--contact", help="Contact id.")]


def _day(listing: key_service.KeyListing) -> str:
    return listing.not_after.strftime("%Y-%m-%d") if listing.not_after else "never"


@key_app.command("add")
def key_add(
    contact: Contact,
    smime: Annotated[
        Path | None, typer.Option("--smime", help="An X.509 certificate (PEM or DER).")
    ] = None,
    pgp: Annotated[
        Path | None, typer.Option("--pgp", help="An OpenPGP public key (armored or binary).")
    ] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Validate a key (parsable, unexpired, able to encrypt, naming one of the contact's
    addresses) and store it sealed under the contact's key. Audited."""
    if (smime is None) == (pgp is None):
        fail("give exactly one of --smime FILE or --pgp FILE", 2)
    kind, path = (SMIME, smime) if smime is not None else (PGP, pgp)
    assert path is not None
    try:
        data = path.read_bytes()
    except OSError as exc:
        fail(f"{path}: cannot read ({exc.strerror})", 2)
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                listing = key_service.add_key(
                    session,
                    ws.keyring,
                    contact_id=contact,
                    kind=kind,
                    data=data,
                    where=str(path),
                    actor=actor_of(ws),
                )
        except KeyRejected as exc:
            fail(str(exc), 2)
        except key_service.KeyNotFound as exc:
            fail(str(exc))
    if json_out:
        emit_json(listing.as_dict())
    else:
        out.print(
            f"{listing.kind} key {listing.fingerprint} added to contact {contact}"
            f" (id {listing.id}, valid until {_day(listing)})"
        )


@key_app.command("list")
def key_list(contact: Contact, json_out: JsonFlag = False, data_dir: DataDir = None) -> None:
    """Kinds, fingerprints and dates of a contact's keys (nothing is decrypted)."""
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                rows = key_service.list_keys(session, contact)
        except key_service.KeyNotFound as exc:
            fail(str(exc))
    if json_out:
        emit_json([r.as_dict() for r in rows])
        return
    table = Table("id", "kind", "fingerprint", "valid until", "added")
    for r in rows:
        table.add_row(r.id, r.kind, r.fingerprint, _day(r), r.added_at.strftime("%Y-%m-%d %H:%M"))
    out.print(table)


@key_app.command("remove")
def key_remove(
    contact: Contact,
    key: Annotated[str, typer.Argument(help="The key's id or fingerprint.")],
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Remove one key from a contact. Audited."""
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                listing = key_service.remove_key(
                    session, contact_id=contact, key=key, actor=actor_of(ws)
                )
        except key_service.KeyNotFound as exc:
            fail(str(exc))
    if json_out:
        emit_json(listing.as_dict())
    else:
        out.print(f"{listing.kind} key {listing.fingerprint} removed from contact {contact}")
