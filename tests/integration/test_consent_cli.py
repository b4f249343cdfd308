"""`carepost consent …` and `carepost suppress …` as a user runs them (real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "consent"))
from consent_docs import valid_doc

from carepost.audit.actor import Actor
from carepost.config import Settings
from carepost.consent import service
from carepost.db import transaction
from carepost.workspace import open_workspace

Run = subprocess.CompletedProcess[str]


@pytest.fixture
def cli(settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "CAREPOST_DATA_DIR": str(settings.data_dir),
        "CAREPOST_DATABASE_URL": settings.database_url,
        "CAREPOST_ACTOR": "cli:test-user",
    }
    env.pop("CAREPOST_PUBLIC_URL", None)

    def run(*args: str, check: bool = True, extra: dict[str, str] | None = None) -> Run:
        proc = subprocess.run(
            [sys.executable, "-m", "carepost.cli", *args],
            env={**env, **(extra or {})},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"carepost {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    run("init")
    people = tmp_path / "people.csv"
    people.write_text(
        "external_id,first_name,email\n1,Ann,ann@example.org\n2,Bob,bob@example.org\n"
    )
    run("import", "csv", str(people))
    return run


def _ids(cli) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(r["id"] for r in json.loads(cli("contacts", "list", "--json").stdout))


def test_authorize_check_revoke_round_trip(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cid = _ids(cli)[0]
    incomplete = valid_doc()
    del incomplete["phi_description"]
    del incomplete["statements"]["conditioning"]
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps(incomplete))
    proc = cli("consent", "authorize", "--contact", cid, "--file", str(bad_file), check=False)
    assert proc.returncode == 1
    assert "missing: phi_description" in proc.stderr
    assert "missing: statements.conditioning" in proc.stderr
    proc = cli(
        "consent", "authorize", "--contact", cid, "--file", str(bad_file), "--json", check=False
    )
    assert json.loads(proc.stdout)["missing"] == ["phi_description", "statements.conditioning"]

    good = tmp_path / "auth.json"
    good.write_text(json.dumps(valid_doc()))
    saved = json.loads(
        cli("consent", "authorize", "--contact", cid, "--file", str(good), "--json").stdout
    )
    auth_id = saved["authorization_id"]

    def check(*extra: str) -> dict:  # type: ignore[type-arg]
        return json.loads(
            cli(
                "consent",
                "check",
                "--contact",
                cid,
                "--class",
                "marketing",
                "--channel",
                "email",
                "--topic",
                "newsletter",
                "--sender",
                "acme-pharmacy",
                "--json",
                *extra,
            ).stdout
        )

    assert check()["reasons"] == ["no_opt_in"]
    cli(
        "consent",
        "set",
        "--contact",
        cid,
        "--topic",
        "newsletter",
        "--status",
        "opted_in",
        "--at",
        "2026-01-01T00:00:00Z",
    )
    allowed = check()
    assert allowed["allowed"] is True
    assert allowed["authorization_id"] == auth_id
    # Before the signature date the authorization did not exist yet.
    assert "authorization_not_signed" in check("--at", "2026-04-01T00:00:00Z")["reasons"]
    human = cli(
        "consent", "check", "--contact", cid, "--class", "marketing_paid", "--topic", "newsletter"
    ).stdout
    assert "DENIED" in human
    assert "authorization_no_remuneration_statement" in human

    revoked = json.loads(cli("consent", "revoke", "--authorization", auth_id, "--json").stdout)
    assert revoked["revoked"][0]["authorization_id"] == auth_id
    assert check()["reasons"] == ["authorization_revoked"]
    shown = json.loads(cli("consent", "show", "--contact", cid, "--json").stdout)
    assert shown["authorizations"][0]["revoked_at"]
    assert [c["status"] for c in shown["consents"]] == ["opted_in"]
    assert "Pat Example" not in json.dumps(shown)
    assert "203.0.113.7" not in json.dumps(shown)


def test_bad_arguments_are_explained(cli) -> None:  # type: ignore[no-untyped-def]
    cid = _ids(cli)[0]
    proc = cli(
        "consent", "check", "--contact", cid, "--class", "promo", "--topic", "n", check=False
    )
    assert proc.returncode == 1
    assert "message class must be one of" in proc.stderr
    proc = cli(
        "consent",
        "check",
        "--contact",
        cid,
        "--class",
        "treatment",
        "--topic",
        "n",
        "--at",
        "yesterday",
        check=False,
    )
    assert proc.returncode == 2
    proc = cli(
        "consent", "set", "--contact", "0" * 32, "--topic", "n", "--status", "opted_in", check=False
    )
    assert "no contact" in proc.stderr


def test_suppress_add_list_remove(cli) -> None:  # type: ignore[no-untyped-def]
    cid = _ids(cli)[0]
    added = json.loads(
        cli(
            "suppress", "add", "--email", " ANN@example.org", "--reason", "hard_bounce", "--json"
        ).stdout
    )
    [sid] = added["suppression_ids"]
    again = json.loads(
        cli(
            "suppress", "add", "--email", "ann@example.org", "--reason", "hard_bounce", "--json"
        ).stdout
    )
    assert again["already_suppressed"] is True
    listing = cli("suppress", "list", "--json").stdout
    assert "ann@example.org" not in listing.lower()
    assert [r["id"] for r in json.loads(listing)] == [sid]
    decision = json.loads(
        cli(
            "consent", "check", "--contact", cid, "--class", "treatment", "--topic", "x", "--json"
        ).stdout
    )
    assert decision["reasons"] == ["suppressed_hard_bounce"]
    cli("suppress", "remove", sid)
    assert json.loads(cli("suppress", "list", "--json").stdout) == []
    assert len(json.loads(cli("suppress", "list", "--all", "--json").stdout)) == 1
    proc = cli("suppress", "add", "--reason", "manual", check=False)
    assert proc.returncode == 2


def test_explain_after_a_gate_run(cli, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    ids = _ids(cli)
    proc = cli("consent", "explain", "--contact", ids[0], "--campaign", "c-1", check=False)
    assert proc.returncode == 1
    ws = open_workspace(settings=settings)
    try:
        with transaction(ws.engine) as s:
            service.gate_batch(
                s,
                campaign_id="c-1",
                contact_ids=ids,
                message_class="marketing",
                channel="email",
                topic="newsletter",
                sender="self",
                actor=Actor("worker:test", "worker", "test"),
            )
    finally:
        ws.close()
    why = json.loads(
        cli("consent", "explain", "--contact", ids[0], "--campaign", "c-1", "--json").stdout
    )
    assert why["decisions"][0]["allowed"] is False
    assert why["decisions"][0]["reasons"] == ["no_opt_in", "no_authorization"]
    human = cli("consent", "explain", "--contact", ids[0], "--campaign", "c-1").stdout
    assert "DENIED" in human
    assert "no_authorization" in human


def test_csv_import_all_or_nothing(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ids = _ids(cli)
    bad = tmp_path / "consents.csv"
    bad.write_text(
        "contact_id,channel,topic,status,evidence_ref\n"
        f"{ids[0]},email,newsletter,opted_in,paper-form-17\n"
        f"{ids[1]},pigeon,newsletter,opted_in,\n"
        "Jane-Secret,email,newsletter,opted_in,\n"
    )
    proc = cli("consent", "import", str(bad), "--kind", "consents", check=False)
    assert proc.returncode == 1
    assert "line 3, column 2 'channel'" in proc.stderr
    assert "line 4, column 1 'contact_id': no such contact" in proc.stderr
    assert "pigeon" not in proc.stderr
    assert "Jane-Secret" not in proc.stderr
    assert (
        json.loads(cli("consent", "show", "--contact", ids[0], "--json").stdout)["consents"] == []
    )
    summary = json.loads(
        cli("consent", "import", str(bad), "--kind", "consents", "--skip-invalid", "--json").stdout
    )
    assert summary["written"] == 1
    assert len(summary["invalid"]) == 2
    by_external = tmp_path / "by_external.csv"
    by_external.write_text("external_id,channel,topic,status\n2,sms,refills,opted-out\n")
    cli("consent", "import", str(by_external), "--kind", "consents")
    shown = json.loads(cli("consent", "show", "--contact", ids[1], "--json").stdout)
    assert [(c["channel"], c["status"], c["source"]) for c in shown["consents"]] == [
        ("sms", "opted_out", "import")
    ]


def test_headers_need_an_https_public_url(cli) -> None:  # type: ignore[no-untyped-def]
    cid = _ids(cli)[0]
    proc = cli("consent", "headers", "--contact", cid, "--topic", "newsletter", check=False)
    assert proc.returncode == 1
    assert "CAREPOST_PUBLIC_URL" in proc.stderr
    proc = cli(
        "consent",
        "headers",
        "--contact",
        cid,
        "--topic",
        "newsletter",
        check=False,
        extra={"CAREPOST_PUBLIC_URL": "http://mail.example.org"},
    )
    assert "must be https" in proc.stderr
    headers = json.loads(
        cli(
            "consent",
            "headers",
            "--contact",
            cid,
            "--topic",
            "newsletter",
            "--json",
            extra={"CAREPOST_PUBLIC_URL": "https://mail.example.org"},
        ).stdout
    )
    assert headers["List-Unsubscribe"].startswith("<https://mail.example.org/u/")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
