"""The MTA-STS fetcher and policy cache against a real HTTPS server on loopback
(certificates from a trustme CA for mta-sts.<domain>), the cache on both engines."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from sqlalchemy import func, select

from carepost.db import transaction
from carepost.delivery.models import MtaStsPolicyCache
from carepost.delivery.mta_sts_fetch import FetchError, HttpsPolicyFetcher, default_tls_context
from carepost.delivery.mta_sts_policies import (
    DatabasePolicyCache,
    MemoryPolicyCache,
    MtaStsPolicies,
    PolicyCache,
)
from carepost.delivery.resolver import StaticResolver
from carepost.workspace import Workspace
from policy_server import PolicyServer, Route, policy

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def fetcher_for(
    server: PolicyServer, ca_file: Path, *domains: str, timeout: float = 5.0
) -> HttpsPolicyFetcher:
    return HttpsPolicyFetcher(
        tls=default_tls_context(str(ca_file)),
        timeout=timeout,
        connect_to={f"mta-sts.{d}": ("127.0.0.1", server.port) for d in domains},
    )


def fetch(fetcher: HttpsPolicyFetcher, domain: str) -> str:
    return asyncio.run(fetcher.fetch(domain))


# --- the fetcher -----------------------------------------------------------------------
def test_fetch_good_policy(policy_server: PolicyServer, ca_file: Path) -> None:
    policy_server.serve("a.test", Route(policy(), content_type="text/plain; charset=utf-8"))
    text = fetch(fetcher_for(policy_server, ca_file, "a.test"), "a.test")
    assert text.startswith("version: STSv1\r\nmode: enforce")


@pytest.mark.parametrize(
    ("route", "words"),
    [
        (Route(policy(), content_type="text/html"), "media type text/html, expected text/plain"),
        (Route(policy(), content_type=""), "media type none"),
        (Route(b"x" * 70_000), "larger than 65536 bytes"),
        (Route(b"x" * 70_000, send_length=False), "larger than 65536 bytes"),
        (
            Route(b"", status=301, headers={"Location": "https://elsewhere.test/p.txt"}),
            "status 301 \\(redirects are not followed\\)",
        ),
        (Route(b"gone", status=404), "status 404, expected 200"),
        (Route(b"\xff\xfe bad", content_type="text/plain"), "not UTF-8"),
        (Route(policy(), headers={"Content-Encoding": "gzip"}), "unexpected content encoding"),
    ],
)
def test_fetch_refuses(
    policy_server: PolicyServer, ca_file: Path, route: Route, words: str
) -> None:
    policy_server.serve("b.test", route)
    with pytest.raises(FetchError, match=words) as info:
        fetch(fetcher_for(policy_server, ca_file, "b.test"), "b.test")
    assert str(info.value).startswith("mta-sts.b.test: ")


def test_fetch_times_out(policy_server: PolicyServer, ca_file: Path) -> None:
    policy_server.serve("c.test", Route(policy(), delay=2.0))
    with pytest.raises(FetchError, match="timed out"):
        fetch(fetcher_for(policy_server, ca_file, "c.test", timeout=0.5), "c.test")


def test_fetch_refuses_certificate_for_another_name(
    wrong_name_server: PolicyServer, ca_file: Path
) -> None:
    wrong_name_server.serve("a.test", Route(policy()))
    with pytest.raises(FetchError, match="certificate not accepted"):
        fetch(fetcher_for(wrong_name_server, ca_file, "a.test"), "a.test")
    assert wrong_name_server.hits["mta-sts.a.test"] == 0  # no request went over it


def test_fetch_refuses_untrusted_ca(policy_server: PolicyServer, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    policy_server.serve("a.test", Route(policy()))
    with pytest.raises(FetchError, match="certificate not accepted"):
        fetch(fetcher_for(policy_server, other, "a.test"), "a.test")


def test_fetch_connection_refused(ca_file: Path, policy_server: PolicyServer) -> None:
    fetcher = HttpsPolicyFetcher(
        tls=default_tls_context(str(ca_file)),
        connect_to={"mta-sts.a.test": ("127.0.0.1", 1)},
    )
    with pytest.raises(FetchError, match="could not connect"):
        fetch(fetcher, "a.test")


# --- the cache -------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _sources(
    server: PolicyServer, ca_file: Path, cache: PolicyCache, domain: str
) -> tuple[MtaStsPolicies, dict[str, list[str]], Clock]:
    txt: dict[str, list[str]] = {f"_mta-sts.{domain}": ["v=STSv1; id=one"]}
    clock = Clock()
    source = MtaStsPolicies(
        StaticResolver(txt_records=txt),
        fetcher_for(server, ca_file, domain),
        clock,
        cache=cache,
        recheck_after=0,
    )
    return source, txt, clock


def test_cache_honours_id_max_age_and_failures(
    workspace: Workspace, policy_server: PolicyServer, ca_file: Path
) -> None:
    domain, host = "d.test", "mta-sts.d.test"
    policy_server.hits[host] = 0
    policy_server.serve(domain, Route(policy(max_age=3600)))
    cache = DatabasePolicyCache(workspace.engine)
    source, txt, clock = _sources(policy_server, ca_file, cache, domain)

    first = asyncio.run(source.policy(domain))
    assert first is not None
    assert (first.mode, first.mx, first.max_age, first.policy_id) == (
        "enforce",
        ("mx1.example.test",),
        3600,
        "one",
    )
    assert policy_server.hits[host] == 1

    # Same id, policy still fresh: the cached copy, even though the server changed.
    policy_server.serve(domain, Route(policy(mode="testing", max_age=3600)))
    clock.advance(600)
    assert asyncio.run(source.policy(domain)) == first
    assert policy_server.hits[host] == 1

    # Another worker (a new source, same database) does not refetch either.
    other, _, other_clock = _sources(policy_server, ca_file, cache, domain)
    other_clock.now = clock.now
    assert asyncio.run(other.policy(domain)) == first
    assert policy_server.hits[host] == 1

    # The id changes: refetch.
    txt[f"_mta-sts.{domain}"] = ["v=STSv1; id=two"]
    second = asyncio.run(source.policy(domain))
    assert second is not None
    assert (second.mode, second.policy_id) == ("testing", "two")
    assert policy_server.hits[host] == 2

    # The id changes but the fetch fails: the unexpired cached policy stays in force.
    policy_server.serve(domain, Route(b"oops", status=500))
    txt[f"_mta-sts.{domain}"] = ["v=STSv1; id=three"]
    assert asyncio.run(source.policy(domain)) == second
    assert policy_server.hits[host] == 3

    # The TXT record disappears (stripped by an attacker?): still the cached policy.
    txt[f"_mta-sts.{domain}"] = []
    assert asyncio.run(source.policy(domain)) == second

    # Past max_age with the fetch still failing: no policy.
    clock.advance(3601)
    txt[f"_mta-sts.{domain}"] = ["v=STSv1; id=three"]
    assert asyncio.run(source.policy(domain)) is None
    assert policy_server.hits[host] == 4

    # Past max_age, the server answers again: refetched and stored for every worker.
    policy_server.serve(domain, Route(policy(mode="enforce", mx="*.example.test", max_age=7200)))
    third = asyncio.run(source.policy(domain))
    assert third is not None
    assert (third.mx, third.policy_id) == (("*.example.test",), "three")
    stored = cache.get(domain)
    assert stored is not None
    assert (stored.policy, stored.fetched_at) == (third, clock.now)
    with transaction(workspace.engine) as s:
        assert s.execute(select(func.count()).select_from(MtaStsPolicyCache)).scalar_one() == 1


def test_no_cache_and_failing_fetch_means_no_policy(
    policy_server: PolicyServer, ca_file: Path
) -> None:
    policy_server.serve("e.test", Route(policy(), content_type="application/octet-stream"))
    source, _, _ = _sources(policy_server, ca_file, MemoryPolicyCache(), "e.test")
    assert asyncio.run(source.policy("e.test")) is None


def test_invalid_policy_file_means_no_policy(policy_server: PolicyServer, ca_file: Path) -> None:
    policy_server.serve("e.test", Route(b"version: STSv1\nmode: maybe\n"))
    source, _, _ = _sources(policy_server, ca_file, MemoryPolicyCache(), "e.test")
    assert asyncio.run(source.policy("e.test")) is None


def test_no_txt_record_means_no_fetch(policy_server: PolicyServer, ca_file: Path) -> None:
    source, txt, _ = _sources(policy_server, ca_file, MemoryPolicyCache(), "e.test")
    txt.clear()
    before = policy_server.hits["mta-sts.e.test"]
    assert asyncio.run(source.policy("e.test")) is None
    assert policy_server.hits["mta-sts.e.test"] == before


def test_proactive_refresh_and_memo(policy_server: PolicyServer, ca_file: Path) -> None:
    """With the same id a policy past half its max_age is refetched (so it never lapses
    while the domain is busy); within recheck_after the answer is memoised; concurrent
    callers share one fetch."""
    domain, host = "a.test", "mta-sts.a.test"
    policy_server.serve(domain, Route(policy(max_age=1000)))
    clock = Clock()
    txt = {f"_mta-sts.{domain}": ["v=STSv1; id=one"]}
    source = MtaStsPolicies(
        StaticResolver(txt_records=txt),
        fetcher_for(policy_server, ca_file, domain),
        clock,
        recheck_after=60,
    )
    before = policy_server.hits[host]

    async def many() -> list[object]:
        return list(await asyncio.gather(*(source.policy(domain) for _ in range(20))))

    results = asyncio.run(many())
    assert len(set(map(id, results))) == 1
    assert policy_server.hits[host] == before + 1
    txt[f"_mta-sts.{domain}"] = ["v=STSv1; id=two"]
    clock.advance(30)  # memoised: the id change is seen after recheck_after
    assert asyncio.run(source.policy(domain)) == results[0]
    assert policy_server.hits[host] == before + 1
    txt[f"_mta-sts.{domain}"] = ["v=STSv1; id=one"]
    clock.advance(480)  # 510 s old, past half of max_age
    refreshed = asyncio.run(source.policy(domain))
    assert refreshed == results[0]
    assert policy_server.hits[host] == before + 2
