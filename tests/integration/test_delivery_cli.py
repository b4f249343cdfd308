"""The delivery commands as an operator runs them: real processes, a real workspace, the
capture server as a real process, on every database."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from carepost.config import Settings
from cli_runner import CarepostCli
from smtp_sink import free_port

TEMPLATE = """
name = "visit-reminder"
message_class = "treatment"
subject = "Your upcoming visit"
phi_fields = ["first_name"]
html = '''<p>Dear {{ first_name }},</p>
<p>Please <a href="https://clinic.example/checkin">check in online</a> before your visit.</p>'''
"""

BAD_TEMPLATE = """
name = "bad"
message_class = "marketing"
subject = "Hello {{ first_name }}"
phi_fields = ["first_name"]
html = '''<p>Hi {{ first_name }}</p>
<p>{{ last_name }}</p>'''
"""


def _clinic(cli: CarepostCli, contacts: int, *sender_options: str) -> None:
    """A workspace with synthetic contacts, an adults segment and the clinic's sender
    (with a DKIM key made first when `--dkim-selector` is among the options)."""
    cli("init")
    cli("demo-data", "--contacts", str(contacts), "--seed", "4")
    cli("segment", "save", "adults", "age >= 18")
    if "--dkim-selector" in sender_options:
        selector = sender_options[sender_options.index("--dkim-selector") + 1]
        cli("dkim", "keygen", "--domain", "clinic.example", "--selector", selector)
    cli(
        "sender",
        "add",
        "clinic",
        "--from-name",
        "Example Clinic",
        "--from-address",
        "care@clinic.example",
        "--postal-address",
        "1 Example Way, Springfield MA",
        "--organization",
        "Example Clinic",
        *sender_options,
    )


def test_operator_runs_a_campaign_from_the_command_line(
    carepost: CarepostCli, settings: Settings, tmp_path: Path
) -> None:
    cli = carepost
    port = free_port()
    cli.env["CAREPOST_PUBLIC_URL"] = "https://mail.clinic.example"
    cli.env["CAREPOST_CAPTURE_PORT"] = str(port)
    _clinic(cli, 150, "--dkim-domain", "clinic.example", "--dkim-selector", "s1")

    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_TEMPLATE)
    refused = cli("template", "check", str(bad), "--json", check=False)
    assert refused.returncode == 1
    problems = json.loads(refused.stdout)["problems"]
    found = {(p["part"], p["line"], p["field"]) for p in problems}
    assert ("subject", 1, "first_name") in found  # PHI in a subject
    assert ("html", 2, "last_name") in found  # undeclared, with its line
    assert ("html", None, "unsubscribe_url") in found  # CAN-SPAM
    good = tmp_path / "good.toml"
    good.write_text(TEMPLATE)
    template = json.loads(cli("template", "add", str(good), "--json").stdout)
    assert template["version"] == 1

    created = json.loads(
        cli(
            "campaign",
            "create",
            "--name",
            "Reminders",
            "--segment",
            "adults",
            "--template",
            "visit-reminder",
            "--sender",
            "clinic",
            "--topic",
            "reminders",
            "--json",
        ).stdout
    )
    started = json.loads(cli("campaign", "start", created["id"], "--json").stdout)
    assert started["status"] == "running"
    recipients = started["recipients"]
    assert recipients > 50

    server = cli.popen("capture", "serve")
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        ran = json.loads(cli("worker", "--until-idle", "--json").stdout)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert ran["results"] == {"sent": recipients}
    captured = json.loads(cli("capture", "list", "--json").stdout)
    assert len(captured) == recipients

    status = json.loads(cli("campaign", "status", created["id"], "--json").stdout)
    assert status["status"] == "done"
    assert status["states"] == {"sent": recipients}
    [sent] = json.loads(cli("outbox", "list", "--state", "sent", "--limit", "1", "--json").stdout)
    proof = json.loads(cli("message", "evidence", sent["id"], "--json").stdout)
    attempt = proof["attempts"][0]
    assert attempt["status"] == "sent"
    assert attempt["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert attempt["relay_reply"].startswith("250 2.0.0 Ok: captured as")
    assert attempt["dkim_signature"].startswith("v=1; a=rsa-sha256")
    assert proof["campaign"]["membership"]["members"] == recipients
    assert [s["state"] for s in proof["timeline"]] == [
        "queued",
        "claimed",
        "attempt_started",
        "sent",
    ]
    assert proof["consent_decisions"][0]["reasons"] == ["exempt_class"]
    text = json.dumps(proof)
    assert "@example.org" not in text  # no recipient address anywhere in the evidence

    shown = json.loads(
        cli("outbox", "show", sent["id"], "--purpose", "patient asked for a copy", "--json").stdout
    )
    assert "Subject: Your upcoming visit" in shown["sent_message"]
    assert json.loads(cli("audit", "verify", "--json").stdout)["ok"]
    no_purpose = json.loads(cli("outbox", "show", sent["id"], "--json").stdout)
    assert no_purpose["sent_message"] is None


def test_worker_refuses_to_start_without_a_public_url(carepost: CarepostCli) -> None:
    cli = carepost
    cli.env.pop("CAREPOST_PUBLIC_URL", None)
    cli("init")
    run = cli("worker", "--until-idle", check=False)
    assert run.returncode == 2
    assert "CAREPOST_PUBLIC_URL" in run.stderr


def test_every_delivery_command_prints_json_and_nothing_else(
    carepost: CarepostCli, tmp_path: Path
) -> None:
    """Issue 5's commands with --json: stdout is one JSON document (json.loads fails on
    anything printed beside it), bars and messages go to stderr. Several worker processes
    share the queue through the null transport."""
    cli = carepost
    cli.env["CAREPOST_PUBLIC_URL"] = "https://mail.clinic.example"
    cli.env["CAREPOST_TRANSPORT"] = "null"
    cli.env["CAREPOST_WORKER_BATCH_SIZE"] = "10"
    _clinic(cli, 60)

    def run(*args: str) -> Any:
        return json.loads(cli(*args, "--json").stdout)

    good = tmp_path / "good.toml"
    good.write_text(TEMPLATE)
    assert run("template", "check", str(good)) == {"ok": True, "problems": []}
    assert run("template", "add", str(good))["name"] == "visit-reminder"
    created = run(
        "campaign",
        "create",
        "--name",
        "Reminders",
        "--segment",
        "adults",
        "--template",
        "visit-reminder",
        "--sender",
        "clinic",
        "--topic",
        "reminders",
    )
    assert created["status"] == "draft"
    campaign = created["id"]
    recipients = run("campaign", "start", campaign)["recipients"]
    assert recipients > 20
    assert run("campaign", "pause", campaign) == {"id": campaign, "status": "paused"}
    paused = run("worker", "--until-idle")
    assert paused["claimed"] == 0  # a paused campaign's messages stay queued
    assert run("campaign", "resume", campaign) == {"id": campaign, "status": "running"}
    ran = run("worker", "--processes", "2", "--until-idle")
    assert ran["claimed"] == recipients
    assert ran["results"] == {"sent": recipients}
    status = run("campaign", "status", campaign)
    assert (status["status"], status["states"]) == ("done", {"sent": recipients})
    listed = run("outbox", "list", "--campaign", campaign, "--limit", "1000")
    assert len(listed) == recipients
    shown = run("outbox", "show", listed[0]["id"])
    assert (shown["state"], shown["sent_message"]) == ("sent", None)
    proof = run("message", "evidence", listed[0]["id"])
    assert proof["attempts"][0]["method"] == "null"
