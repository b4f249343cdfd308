"""`carepost doctor dns --domain D`: is the sending domain's DNS ready for mail?

Real DNS (dnspython) and real HTTPS for the MTA-STS policy. The one seam is the
setting `CAREPOST_DEV_INSECURE_STATIC_DNS`: a JSON file of answers (delivery/static_dns.py)
that local development and the tests use instead of the network; a banner says so.
A workspace is opened only for --sender (the profile's domains and DKIM key).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from carepost.campaigns.models import SenderProfile
from carepost.cli_support import DataDir, JsonFlag, chosen_data_dir, emit_json, err, fail, out
from carepost.cli_support import workspace as open_checked_workspace
from carepost.config import load_settings
from carepost.db import transaction
from carepost.delivery import dkim as signing
from carepost.delivery.mta_sts_fetch import HttpsPolicyFetcher, default_tls_context
from carepost.delivery.resolver import DnsResolver, Resolver
from carepost.delivery.static_dns import StaticDnsError, load_static_dns
from carepost.doctor.result import Check, exit_code, worst
from carepost.doctor.runner import SenderFacts, diagnose, domain_of

doctor_app = typer.Typer(no_args_is_help=True, help="Sender health checks.")

_MARK = {"ok": "[green]ok   [/]", "warn": "[yellow]warn [/]", "fail": "[bold red]fail [/]"}


def _sender_facts(data_dir: Path | None, profile_id: str) -> SenderFacts:
    with open_checked_workspace(data_dir) as ws, transaction(ws.engine) as s:
        profile = s.get(SenderProfile, profile_id)
        if profile is None:
            fail(f"no sender profile {profile_id!r}")
        record: str | None = None
        problem: str | None = None
        if profile.dkim_domain and profile.dkim_key_file:
            try:
                record = signing.dns_record_value(
                    signing.load_private_key(Path(profile.dkim_key_file))
                )
            except OSError as exc:
                problem = f"cannot read the key file ({exc.strerror or type(exc).__name__})"
            except (ValueError, TypeError):
                problem = "the key file is not an unencrypted RSA or Ed25519 private key (PEM)"
        return SenderFacts(
            profile_id=profile.id,
            from_domain=domain_of(profile.from_address),
            return_path_domain=domain_of(profile.return_path),
            dkim_domain=profile.dkim_domain.lower() if profile.dkim_domain else None,
            dkim_selector=profile.dkim_selector,
            dkim_record=record,
            dkim_problem=problem,
        )


def _network(data_dir: Path | None) -> tuple[Resolver, HttpsPolicyFetcher]:
    static_file = load_settings(chosen_data_dir(data_dir)).dev_insecure_static_dns
    if not static_file:
        return DnsResolver(), HttpsPolicyFetcher()
    err.print(
        "[bold yellow]DEV_INSECURE:[/] answers come from the static DNS file named by "
        "CAREPOST_DEV_INSECURE_STATIC_DNS, not from DNS"
    )
    try:
        static = load_static_dns(Path(static_file))
    except StaticDnsError as exc:
        fail(escape(str(exc)))
    tls = default_tls_context(static.ca_file)
    return static.resolver, HttpsPolicyFetcher(tls=tls, connect_to=static.connect_to)


@doctor_app.command("dns")
def dns_cmd(
    domain: Annotated[str, typer.Option("--domain", help="The sending (From) domain.")],
    sender: Annotated[
        str | None,
        typer.Option("--sender", help="A sender profile id: check its DKIM key and alignment."),
    ] = None,
    selector: Annotated[
        str | None, typer.Option("--selector", help="The DKIM selector to look up.")
    ] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Check SPF, DKIM, DMARC (policy and alignment), MX and MTA-STS for a domain and say
    in plain words what is wrong and what to publish. Exit code 1 when a check fails,
    2 when one could not be run (DNS failure), 0 otherwise."""
    domain = domain.strip().rstrip(".").lower()
    if not domain or " " in domain or "." not in domain:
        fail("--domain must be a domain name such as example.org")
    facts = _sender_facts(data_dir, sender) if sender else None
    resolver, fetcher = _network(data_dir)
    checks = asyncio.run(
        diagnose(domain, resolver=resolver, fetcher=fetcher, sender=facts, selector=selector)
    )
    if json_out:
        emit_json(
            {
                "domain": domain,
                "sender": sender,
                "status": worst(c.status for c in checks),
                "checks": [c.as_dict() for c in checks],
            }
        )
    else:
        for check in checks:
            _print(check)
    raise typer.Exit(exit_code(checks))


def _print(check: Check) -> None:
    mark = _MARK.get(check.status, "[magenta]error[/]")
    out.print(f"{mark}  {check.name:<9} {escape(check.domain)}: {escape(check.summary)}")
    for line in check.details:
        out.print(f"      {escape(line)}")
    if check.fix:
        out.print(f"      [bold]fix:[/] {escape(check.fix)}")
