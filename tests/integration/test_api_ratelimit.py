"""Rate limits per API key: the token bucket on a frozen clock, and 429 with Retry-After
and RateLimit-* headers over real HTTPS; on both engines."""

from __future__ import annotations

from pathlib import Path

from api_support import serve
from carepost.api.ratelimit import Limiter, take
from carepost.workspace import Workspace


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    limiter = Limiter(per_minute=60, burst=3)  # a token a second
    assert [limiter.hit("k", 100.0).allowed for _ in range(4)] == [True, True, True, False]
    refused = limiter.hit("k", 100.0)
    assert (refused.allowed, refused.retry_after, refused.remaining) == (False, 1, 0)
    assert limiter.hit("k", 101.0).allowed
    assert not limiter.hit("k", 101.5).allowed
    assert limiter.hit("other", 101.5).allowed  # each caller has its own bucket
    later = limiter.hit("k", 200.0)  # refilled, never past the burst
    assert (later.allowed, later.remaining) == (True, 2)


def test_retry_after_is_whole_seconds_until_a_token() -> None:
    bucket, first = take(None, 0.0, per_minute=6, burst=1)  # a token every 10 s
    assert first.allowed
    _, refused = take(bucket, 2.5, per_minute=6, burst=1)
    assert (refused.allowed, refused.retry_after) == (False, 8)


def test_the_api_answers_429_with_retry_after(workspace: Workspace, tmp_path: Path) -> None:
    workspace.settings = workspace.settings.model_copy(
        update={"api_rate_per_minute": 6.0, "api_rate_burst": 2}
    )
    with serve(workspace, tmp_path) as site:
        token, other = site.key("auditor"), site.key("auditor")
        with site.client(token) as c:
            ok = [c.get("/me") for _ in range(2)]
            limited = c.get("/me")
            site.clock.advance(seconds=10)
            again = c.get("/me")
        with site.client(other) as c:
            fresh = c.get("/me")
            built = c.post("/events", json={"name": "x", "contact_id": "0" * 32})
    assert [r.status_code for r in ok] == [200, 200]
    assert ok[0].headers["RateLimit-Limit"] == "2"
    assert ok[1].headers["RateLimit-Remaining"] == "0"
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "10"
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["type"].endswith("/rate-limited")
    assert again.status_code == 200
    assert fresh.status_code == 200
    assert built.status_code == 403  # an auditor; its answer carries the headers too
    assert built.headers["RateLimit-Remaining"] == "0"
