"""`carepost dkim ...`: signing keys for the sender domains."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from carepost.audit import service as audit
from carepost.cli_support import DataDir, JsonFlag, actor_of, emit_json, fail, out, workspace
from carepost.db import transaction
from carepost.delivery import dkim

dkim_app = typer.Typer(no_args_is_help=True, help="DKIM signing keys.")


def key_path(data_dir: Path, domain: str, selector: str) -> Path:
    return data_dir / "dkim" / f"{selector}._domainkey.{domain}.pem"


@dkim_app.command("keygen")
def keygen(
    domain: Annotated[str, typer.Option(help="The signing domain (d=), e.g. clinic.example")],
    selector: Annotated[str, typer.Option(help="The selector (s=), e.g. cp2026")] = "carepost",
    algorithm: Annotated[
        str, typer.Option(help="rsa (RSA-2048, read by every receiver) or ed25519")
    ] = "rsa",
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Make a signing key (owner-only file in the workspace) and print its DNS TXT record."""
    algo: dkim.Algorithm
    if algorithm == "rsa":
        algo = "rsa-sha256"
    elif algorithm == "ed25519":
        algo = "ed25519-sha256"
    else:
        fail("--algorithm must be rsa or ed25519", 2)
    with workspace(data_dir) as ws:
        key = dkim.generate_key(algo)
        try:
            dkim.DkimSigner(domain, selector, key)
        except dkim.DkimError as exc:
            fail(str(exc), 2)
        path = key_path(ws.settings.data_dir, domain, selector)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        try:
            # O_EXCL: a key that DNS already publishes is never replaced by accident.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fail(f"{path} exists; choose a new selector to rotate keys")
        with os.fdopen(fd, "wb") as fh:
            fh.write(dkim.private_pem(key))
        record = dkim.dns_record_value(key)
        with transaction(ws.engine) as session:
            audit.append(
                session,
                actor=actor_of(ws),
                action="delivery.dkim_key_created",
                details={"domain": domain, "selector": selector, "algorithm": algo},
            )
    name = f"{selector}._domainkey.{domain}."
    if json_out:
        emit_json(
            {
                "domain": domain,
                "selector": selector,
                "algorithm": algo,
                "key_file": str(path),
                "dns_name": name,
                "dns_txt": record,
            }
        )
        return
    out.print(f"private key written to {path} (mode 600; back it up with the key file)")
    out.print("publish this TXT record, then sign with it:")
    out.print(f"{name} IN TXT {dkim.dns_txt_strings(record)}")
