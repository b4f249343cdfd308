"""`carepost doctor dns` end to end: the runner over a StaticResolver and the real
HTTPS fetcher, and the command as a process (--json) with a sender profile from the
database (both engines), its DNS from CAREPOST_DEV_INSECURE_STATIC_DNS and the MTA-STS
policy from a loopback HTTPS server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from carepost.campaigns.service import add_sender
from carepost.db import transaction
from carepost.delivery import dkim as signing
from carepost.delivery.mta_sts_fetch import HttpsPolicyFetcher, default_tls_context
from carepost.delivery.resolver import Address, StaticResolver
from carepost.doctor.runner import SenderFacts, diagnose
from carepost.workspace import Workspace
from policy_server import PolicyServer, Route, policy

D = "example.test"
GOOD_POLICY = policy(mx="*.example.test", max_age=1209600)


def zone(key_value: str, sts_port: int, ca_file: Path) -> dict[str, Any]:
    return {
        "mx": {D: [[10, "mx1.example.test"]], "bounce.example.test": [[10, "mx1.example.test"]]},
        "txt": {
            D: ["v=spf1 include:_spf.relay.test -all"],
            "bounce.example.test": ["v=spf1 include:_spf.relay.test -all"],
            "_spf.relay.test": ["v=spf1 ip4:192.0.2.0/24 -all"],
            f"s1._domainkey.{D}": [key_value],
            f"_dmarc.{D}": ["v=DMARC1; p=reject; rua=mailto:dmarc@example.test"],
            f"_mta-sts.{D}": ["v=STSv1; id=20261124"],
        },
        "hosts": {
            "mx1.example.test": ["192.0.2.10"],
            f"mta-sts.{D}": [f"127.0.0.1:{sts_port}"],
        },
        "mta_sts_ca_file": str(ca_file),
    }


def statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {f"{c['check']} {c['domain']}": c["status"] for c in doc["checks"]}


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, str]:
    private = signing.generate_key("rsa-sha256")
    path = tmp_path / "dkim.pem"
    path.write_bytes(signing.private_pem(private))
    return path, signing.dns_record_value(private)


def test_runner_over_static_resolver(
    policy_server: PolicyServer, ca_file: Path, key: tuple[Path, str]
) -> None:
    policy_server.serve(D, Route(GOOD_POLICY))
    z = zone(key[1], policy_server.port, ca_file)
    resolver = StaticResolver(
        mx_records=z["mx"],
        txt_records=z["txt"],
        hosts={"mx1.example.test": [Address("192.0.2.10")]},
    )
    fetcher = HttpsPolicyFetcher(
        tls=default_tls_context(str(ca_file)),
        connect_to={f"mta-sts.{D}": ("127.0.0.1", policy_server.port)},
    )
    sender = SenderFacts("clinic", D, "bounce.example.test", D, "s1", key[1])
    checks = asyncio.run(diagnose(D, resolver=resolver, fetcher=fetcher, sender=sender))
    assert [(c.name, c.domain, c.status) for c in checks] == [
        ("spf", D, "ok"),
        ("spf", "bounce.example.test", "ok"),
        ("dkim", f"s1._domainkey.{D}", "ok"),
        ("dmarc", f"_dmarc.{D}", "ok"),
        ("alignment", D, "ok"),
        ("mx", D, "ok"),
        ("mx", "bounce.example.test", "ok"),
        ("mta-sts", D, "ok"),
    ]

    # DNS failures become "error" (could not check), never an exception or a "missing".
    broken = StaticResolver(
        mx_records=z["mx"], txt_records=z["txt"], failing=frozenset({D, f"_dmarc.{D}"})
    )
    checks = asyncio.run(diagnose(D, resolver=broken, fetcher=fetcher))
    by_name = {c.name: c.status for c in checks}
    assert by_name["spf"] == by_name["dmarc"] == by_name["mx"] == "error"


def test_cli_json_good_then_broken(
    workspace: Workspace,
    actor: Any,
    carepost: Callable[..., Any],
    policy_server: PolicyServer,
    ca_file: Path,
    key: tuple[Path, str],
    tmp_path: Path,
) -> None:
    with transaction(workspace.engine) as s:
        add_sender(
            s,
            sender_id="clinic",
            from_name="Clinic",
            from_address=f"care@{D}",
            return_path=f"bounces@{D}",
            postal_address="1 Main St, Springfield",
            organization_name="Clinic",
            dkim_domain=D,
            dkim_selector="s1",
            dkim_key_file=str(key[0]),
            actor=actor,
        )
    policy_server.serve(D, Route(GOOD_POLICY))
    dns_file = tmp_path / "dns.json"
    z = zone(key[1], policy_server.port, ca_file)
    dns_file.write_bytes(orjson.dumps(z))
    carepost.env["CAREPOST_DEV_INSECURE_STATIC_DNS"] = str(dns_file)

    run = carepost("doctor", "dns", "--domain", D, "--sender", "clinic", "--json")
    doc = orjson.loads(run.stdout)
    assert doc["status"] == "ok", doc
    assert statuses(doc) == {
        f"spf {D}": "ok",
        f"dkim s1._domainkey.{D}": "ok",
        f"dmarc _dmarc.{D}": "ok",
        f"alignment {D}": "ok",
        f"mx {D}": "ok",
        f"mta-sts {D}": "ok",
    }
    assert "DEV_INSECURE" in run.stderr

    # Now break it: another key published, +all, p=none, an MX outside the policy.
    other = signing.dns_record_value(signing.generate_key("ed25519-sha256"))
    z["txt"][f"s1._domainkey.{D}"] = [other]
    z["txt"][D] = ["v=spf1 include:_spf.relay.test +all"]
    z["txt"][f"_dmarc.{D}"] = ["v=DMARC1; p=none; rua=mailto:dmarc@example.test"]
    z["mx"][D] = [[10, "mx1.example.test"], [20, "backup.elsewhere.test"]]
    z["hosts"]["backup.elsewhere.test"] = ["192.0.2.20"]
    dns_file.write_bytes(orjson.dumps(z))
    run = carepost("doctor", "dns", "--domain", D, "--sender", "clinic", "--json", check=False)
    assert run.returncode == 1
    doc = orjson.loads(run.stdout)
    got = statuses(doc)
    assert got[f"spf {D}"] == "fail"
    assert got[f"dkim s1._domainkey.{D}"] == "fail"
    assert got[f"dmarc _dmarc.{D}"] == "warn"
    assert got[f"mta-sts {D}"] == "fail"
    dkim_check = next(c for c in doc["checks"] if c["check"] == "dkim")
    assert key[1] in dkim_check["fix"]  # what to publish instead: our public key
    sts_check = next(c for c in doc["checks"] if c["check"] == "mta-sts")
    assert "backup.elsewhere.test" in sts_check["summary"]

    # Plain text output says the same in words.
    text = carepost("doctor", "dns", "--domain", D, "--sender", "clinic", check=False)
    assert text.returncode == 1
    assert "every server on the internet" in text.stdout
    assert "fix:" in text.stdout

    # The MTA-STS host serves the wrong media type; SPF and DMARC lookups fail: exit 1.
    policy_server.serve(D, Route(GOOD_POLICY, content_type="text/html"))
    z["failing"] = [f"_dmarc.{D}"]
    dns_file.write_bytes(orjson.dumps(z))
    doc = orjson.loads(carepost("doctor", "dns", "--domain", D, "--json", check=False).stdout)
    sts_check = next(c for c in doc["checks"] if c["check"] == "mta-sts")
    assert "media type text/html" in sts_check["summary"]
    assert statuses(doc)[f"dmarc _dmarc.{D}"] == "error"


def test_cli_errors_are_clear(
    workspace: Workspace, carepost: Callable[..., Any], tmp_path: Path
) -> None:
    dns_file = tmp_path / "dns.json"
    dns_file.write_text('{"txt": {"example.test": "v=spf1 -all"}}')
    carepost.env["CAREPOST_DEV_INSECURE_STATIC_DNS"] = str(dns_file)
    run = carepost("doctor", "dns", "--domain", D, check=False)
    assert run.returncode == 1
    assert "txt.example.test: must be a list of strings" in run.stderr
    run = carepost("doctor", "dns", "--domain", D, "--sender", "nobody", check=False)
    assert run.returncode == 1
    assert "no sender profile 'nobody'" in run.stderr
    run = carepost("doctor", "dns", "--domain", "not a domain", check=False)
    assert "--domain must be a domain name" in run.stderr

    # Only DNS failures: nothing failed, something could not be checked: exit 2.
    dns_file.write_text(orjson.dumps({"failing": [D, f"_dmarc.{D}", f"_mta-sts.{D}"]}).decode())
    run = carepost("doctor", "dns", "--domain", D, "--json", check=False)
    assert run.returncode == 2
    assert orjson.loads(run.stdout)["status"] == "error"
