"""The sender profile's portal settings and the PHI-free classes setting, from the
command line as an operator runs it."""

from __future__ import annotations

from sqlalchemy import select

from carepost.campaigns.models import SenderProfile
from carepost.config import Settings
from carepost.db import make_engine
from cli_runner import CarepostCli

SENDER = (
    "--from-name",
    "Example Clinic",
    "--from-address",
    "care@clinic.example",
    "--postal-address",
    "1 Example Way, Springfield MA",
    "--organization",
    "Example Clinic",
)


def _profiles(settings: Settings) -> dict[str, tuple[str, str]]:
    engine = make_engine(settings.resolved_database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    SenderProfile.id, SenderProfile.tls_fallback, SenderProfile.portal_verification
                )
            ).all()
    finally:
        engine.dispose()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_sender_portal_options(carepost: CarepostCli, settings: Settings) -> None:
    cli = carepost
    cli("init")
    cli("sender", "add", "plain", *SENDER)
    cli(
        "sender",
        "add",
        "strict",
        *SENDER,
        "--tls-fallback",
        "fail",
        "--portal-verification",
        "dob",
    )
    bad = cli("sender", "add", "bad", *SENDER, "--tls-fallback", "plaintext", check=False)
    assert bad.returncode == 2
    assert "tls fallback: one of portal, fail" in bad.stderr
    assert _profiles(settings) == {"plain": ("portal", "code"), "strict": ("fail", "dob")}


def test_worker_refuses_an_unknown_phi_free_class(carepost: CarepostCli) -> None:
    cli = carepost
    cli.env["CAREPOST_PUBLIC_URL"] = "https://mail.clinic.example"
    cli.env["CAREPOST_PHI_FREE_CLASSES"] = "marketing,newsletters"
    cli("init")
    run = cli("worker", "--until-idle", check=False)
    assert run.returncode == 2
    assert "CAREPOST_PHI_FREE_CLASSES" in run.stderr
    assert "'newsletters'" in run.stderr
