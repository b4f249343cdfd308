"""The `carepost` command as a user runs it: a real process, a real workspace."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from carepost.config import Settings

Run = subprocess.CompletedProcess[str]


@pytest.fixture
def cli(settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "CAREPOST_DATA_DIR": str(settings.data_dir),
        "CAREPOST_DATABASE_URL": settings.database_url,
        "CAREPOST_ACTOR": "cli:test-user",
    }

    def run(*args: str, check: bool = True) -> Run:
        proc = subprocess.run(
            [sys.executable, "-m", "carepost.cli", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"carepost {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    return run


def test_init_then_refuses_to_overwrite_the_key(cli, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    cli("init")
    key = settings.data_dir / "keys.json"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    again = cli("init", check=False)
    assert again.returncode == 1
    assert "never overwrites" in again.stderr
    assert key.read_bytes() == before
    assert "models and database agree" in cli("db", "check").stdout


def test_commands_before_init_explain_what_to_do(cli) -> None:  # type: ignore[no-untyped-def]
    proc = cli("contacts", "list", check=False)
    assert proc.returncode == 1
    assert "carepost db upgrade" in proc.stderr or "carepost init" in proc.stderr


def test_import_list_show_audit_round_trip(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli("init")
    csv_path = tmp_path / "people.csv"
    csv_path.write_text(
        "external_id,first_name,email,dob\n1,Ann,ann@example.org,1970-02-03\n"
        "2,Bob,bob@example.org,1980-12-31\n"
    )
    summary = json.loads(cli("import", "csv", str(csv_path), "--json").stdout)
    assert summary["counts"]["Contact"]["created"] == 2

    listing = cli("contacts", "list", "--json").stdout
    rows = json.loads(listing)
    assert len(rows) == 2
    assert "Ann" not in listing
    assert "ann@example.org" not in listing

    missing_purpose = cli("contacts", "show", rows[0]["id"], check=False)
    assert missing_purpose.returncode == 2
    shown = json.loads(
        cli("contacts", "show", rows[0]["id"], "--purpose", "care coordination", "--json").stdout
    )
    assert shown["record"]["name"]["given"] == ["Ann"]

    checkpoint = tmp_path / "cp.json"
    cli("audit", "checkpoint", "--out", str(checkpoint))
    verdict = json.loads(cli("audit", "verify", "--checkpoint", str(checkpoint), "--json").stdout)
    assert verdict["ok"] is True
    assert verdict["entries"] == 2  # the import and the PHI read


def test_rejected_import_exits_nonzero_and_writes_nothing(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli("init")
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("external_id,email\n1,ann@example.org\n2,not-an-email\n")
    report = tmp_path / "report.json"
    proc = cli("import", "csv", str(csv_path), "--report", str(report), check=False)
    assert proc.returncode == 1
    assert "line 3, column 2 'email'" in proc.stderr
    assert "nothing was written" in proc.stderr
    assert json.loads(report.read_text())["written"] is False
    assert json.loads(cli("contacts", "list", "--json").stdout) == []
    skipped = json.loads(cli("import", "csv", str(csv_path), "--skip-invalid", "--json").stdout)
    assert skipped["counts"]["Contact"]["created"] == 1
    assert skipped["invalid"][0]["where"] == "line 3, column 2 'email'"


def test_keys_rotate_and_status(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli("init")
    csv_path = tmp_path / "people.csv"
    csv_path.write_text("external_id,email\n1,ann@example.org\n")
    cli("import", "csv", str(csv_path))
    rotated = json.loads(cli("keys", "rotate", "--json").stdout)
    assert rotated["primary_version"] == 2
    assert rotated["rewrapped"] == 1
    status = json.loads(cli("keys", "status", "--json").stdout)
    assert status["data_keys_by_version"] == {"2": 1}
    contact_id = json.loads(cli("contacts", "list", "--json").stdout)[0]["id"]
    assert cli("contacts", "show", contact_id, "--purpose", "check").returncode == 0


def test_tampered_audit_log_fails_verify(cli, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("tampering through the SQLite file; the service tests cover PostgreSQL")
    import sqlite3

    cli("init")
    cli("keys", "rotate")  # writes one audit entry
    db = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"))
    db.execute("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 1")
    db.commit()
    db.close()
    proc = cli("audit", "verify", "--json", check=False)
    assert proc.returncode == 1
    verdict = json.loads(proc.stdout)
    assert (verdict["first_bad_seq"], verdict["problem"]) == (1, "hash_mismatch")


def test_dkim_keygen_prints_a_record_that_verifies(cli, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    import dkim as dkimpy

    from carepost.delivery.dkim import DkimSigner, load_private_key

    cli("init")
    made = json.loads(cli("dkim", "keygen", "--domain", "clinic.example", "--json").stdout)
    key_file = Path(made["key_file"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert made["dns_name"] == "carepost._domainkey.clinic.example."
    message = b"From: a@clinic.example\r\nTo: b@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    signed = DkimSigner("clinic.example", "carepost", load_private_key(key_file)).sign(message)
    txt = made["dns_txt"].encode()
    assert dkimpy.verify(signed, dnsfunc=lambda name, timeout=5: txt)
    again = cli("dkim", "keygen", "--domain", "clinic.example", check=False)
    assert again.returncode == 1
    assert "exists" in again.stderr
    ed = cli(
        "dkim",
        "keygen",
        "--domain",
        "clinic.example",
        "--selector",
        "ed1",
        "--algorithm",
        "ed25519",
    )
    assert "k=ed25519" in ed.stdout
    bad = cli("dkim", "keygen", "--domain", "not_a_domain", check=False)
    assert bad.returncode == 2
