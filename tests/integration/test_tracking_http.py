"""The open pixel and the click redirect over real HTTP (uvicorn on loopback, httpx), on
every database: forged and altered tokens, open-redirect attempts, unknown messages and
links, HEAD, prefetch hints, the honeypot, bursts, settings, a failing database, and no
PHI or raw address anywhere; verdicts are stored with their reasons."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from carepost.audit.actor import Actor
from carepost.content.tokens import TokenSigner
from carepost.crypto.keyring import KeyRing
from carepost.db import transaction
from carepost.tracking.endpoints import NOT_FOUND, PIXEL, TrackingApp
from carepost.tracking.server import create_tracking_app
from carepost.web.app import create_app
from carepost.workspace import Workspace
from https_support import self_signed
from smtp_sink import free_port
from tracking_support import (
    APPLE_IP,
    CHROME,
    IPHONE,
    PERSON_IP,
    SCANNER_IP,
    Messages,
    SteppingClock,
    sent_campaign,
    serving,
    stored_events,
)


def person(ip: str = PERSON_IP, ua: str = CHROME, **extra: str) -> dict[str, str]:
    return {"User-Agent": ua, "X-Forwarded-For": ip, **extra}


@pytest.fixture
def msgs(workspace: Workspace, actor: Actor) -> Messages:
    return sent_campaign(workspace, actor, 4)


@pytest.fixture
def app(workspace: Workspace) -> TrackingApp:
    # Each request half a minute after the last, at a person's pace: only the burst
    # tests below make requests within a second of each other.
    return create_tracking_app(workspace, clock=SteppingClock(seconds=30))


@pytest.fixture
def client(app: TrackingApp) -> Iterator[httpx.Client]:
    with serving(app) as base, httpx.Client(base_url=base, timeout=15) as c:
        yield c


def test_open_answers_a_transparent_gif_never_cached_and_stores_a_human_open(
    client: httpx.Client, workspace: Workspace, msgs: Messages
) -> None:
    mid = msgs.ids[0]
    r = client.get(f"/t/o/{msgs.open(mid)}", headers=person())
    assert r.status_code == 200
    assert r.content == PIXEL
    assert len(r.content) == 43
    assert r.headers["content-type"] == "image/gif"
    assert r.headers["cache-control"] == "no-store, private"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "server" not in r.headers
    [row] = stored_events(workspace)
    assert (row.kind, row.message_id, row.link_index) == ("open", mid, None)
    assert (row.contact_id, row.campaign_id) == (msgs.contact_of[mid], msgs.campaign_id)
    assert (row.verdict, row.reason) == ("human", "no_machine_signal")
    assert row.network == "198.51.100.0/24"


def test_click_redirects_to_the_stored_destination_and_stores_the_click(
    client: httpx.Client, workspace: Workspace, msgs: Messages
) -> None:
    mid = msgs.ids[1]
    for index, destination in enumerate(msgs.links):
        r = client.get(f"/t/c/{msgs.click(mid, index)}", headers=person())
        assert r.status_code == 302
        assert r.headers["location"] == destination
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.content == b""
    rows = stored_events(workspace)
    assert [(r.kind, r.link_index, r.verdict) for r in rows] == [
        ("click", 0, "human"),
        ("click", 1, "human"),
    ]  # a person's two clicks, half a minute apart
    assert {r.contact_id for r in rows} == {msgs.contact_of[mid]}
    assert all(r.confidence is not None and r.confidence >= 0.75 for r in rows)


def test_redirect_goes_only_to_the_stored_destination(
    client: httpx.Client, workspace: Workspace, msgs: Messages
) -> None:
    mid = msgs.ids[0]
    token = msgs.click(mid, 0)
    for query in (
        "?url=https://evil.example",
        "?next=//evil.example&redirect=https%3A%2F%2Fevil.example",
        "?location=https://evil.example%0d%0aSet-Cookie:x=1",
    ):
        r = client.get(f"/t/c/{token}{query}", headers=person())
        assert r.status_code == 302
        assert r.headers["location"] == msgs.links[0]
        assert "evil" not in str(r.headers)
    for path in (
        f"/t/c/{token}/https://evil.example",
        f"/t/c/{token}//evil.example",
        f"/t/c/{token}%2F..%2F..%2Fevil.example",
        f"/t/c//evil.example/{token}",
        "/t/c/https://evil.example",
        f"/t/c/{token}@evil.example",
        f"/t/c/{token}%0D%0ALocation:%20https://evil.example",
    ):
        r = client.get(path, headers=person())
        assert r.status_code == 404, path
        assert "location" not in r.headers
    assert len(stored_events(workspace)) == 3  # the three good requests only


def _altered(token: str) -> list[str]:
    """The token with one character changed in the message id, the index and the MAC."""
    mid, kind, mac = token.split(".")
    flip = {"a": "b", "b": "a"}

    def change(part: str) -> str:
        ch = part[0]
        return flip.get(ch, "a") + part[1:] if ch != "a" else "b" + part[1:]

    return [
        f"{change(mid)}.{kind}.{mac}",
        f"{mid}.{kind[0]}{int(kind[1:]) + 1}.{mac}",
        f"{mid}.{kind}.{change(mac)}",
        f"{mid}.{kind}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",
    ]


def test_forged_altered_and_malformed_tokens_get_404_and_store_nothing(
    client: httpx.Client, workspace: Workspace, msgs: Messages
) -> None:
    mid = msgs.ids[2]
    good_click, good_open = msgs.click(mid, 0), msgs.open(mid)
    forger = TokenSigner(KeyRing.generate())
    bad = [
        f"/t/c/{forger.click_token(mid, 0)}",
        f"/t/o/{forger.open_token(mid)}",
        *(f"/t/c/{t}" for t in _altered(good_click)),
        *(f"/t/o/{t}" for t in _altered(good_open)),
        f"/t/c/{good_open}",  # an open token on the click path
        f"/t/o/{good_click}",
        f"/t/c/{good_click}%0A",
        f"/t/c/{good_click}/",
        "/t/c/",
        "/t/o/",
        f"/t/c/{'x' * 5000}",
        f"/t/x/{good_click}",
        f"/T/C/{good_click}",
    ]
    for path in bad:
        for method in ("GET", "HEAD"):
            r = client.request(method, path, headers=person())
            assert r.status_code == 404, (method, path)
            assert r.content == (NOT_FOUND if method == "GET" else b"")
            assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert stored_events(workspace) == []


def test_unknown_message_and_link_out_of_range_get_404_and_store_nothing(
    client: httpx.Client, workspace: Workspace, msgs: Messages
) -> None:
    nobody = "nosuchmessage000000000000000000a"
    for path in (
        f"/t/o/{msgs.open(nobody)}",
        f"/t/c/{msgs.click(nobody, 0)}",
        f"/t/c/{msgs.click(msgs.ids[0], len(msgs.links) + 1)}",
        f"/t/c/{msgs.click(msgs.ids[0], 9999)}",
    ):
        r = client.get(path, headers=person())
        assert r.status_code == 404, path
        assert r.content == NOT_FOUND
    assert stored_events(workspace) == []


def test_head_gets_the_normal_answer_and_is_a_machine_event(
    client: httpx.Client, workspace: Workspace, msgs: Messages
) -> None:
    mid = msgs.ids[0]
    r = client.head(f"/t/c/{msgs.click(mid, 1)}", headers=person())
    assert r.status_code == 302
    assert r.headers["location"] == msgs.links[1]
    r = client.head(f"/t/o/{msgs.open(mid)}", headers=person())
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == "43"
    rows = stored_events(workspace)
    assert [(r.kind, r.verdict) for r in rows] == [("click", "machine"), ("open", "machine")]
    assert all(r.reason == "head_request" for r in rows)


@pytest.mark.parametrize(
    "hint",
    [
        {"Sec-Purpose": "prefetch"},
        {"Sec-Purpose": "prefetch;prerender"},
        {"Purpose": "prefetch"},
        {"X-Purpose": "preview"},
        {"X-Moz": "prefetch"},
    ],
    ids=["sec-purpose", "sec-purpose-prerender", "purpose", "x-purpose", "x-moz"],
)
def test_prefetch_hints_are_machine_events_never_clicks(
    client: httpx.Client, workspace: Workspace, msgs: Messages, hint: dict[str, str]
) -> None:
    mid = msgs.ids[3]
    r = client.get(f"/t/c/{msgs.click(mid, 0)}", headers=person(**hint))
    assert r.status_code == 302
    assert r.headers["location"] == msgs.links[0]
    assert client.get(f"/t/o/{msgs.open(mid)}", headers=person(**hint)).status_code == 200
    rows = stored_events(workspace)
    assert [(r.kind, r.verdict, r.reason) for r in rows] == [
        ("click", "machine", "prefetch"),
        ("open", "machine", "prefetch"),
    ]


def test_honeypot_answers_a_blank_page_and_is_a_machine_click(
    client: httpx.Client, workspace: Workspace, msgs: Messages
) -> None:
    mid = msgs.ids[1]
    r = client.get(f"/t/c/{msgs.honeypot(mid)}", headers=person())
    assert r.status_code == 200
    assert "location" not in r.headers
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.text.strip() == "<!doctype html><title></title>"
    [row] = stored_events(workspace)
    assert (row.kind, row.link_index, row.verdict) == ("click", len(msgs.links), "machine")
    assert row.reason == "honeypot"
    assert (row.confidence or 0) >= 0.99


def test_a_burst_across_batches_relabels_the_earlier_click(
    workspace: Workspace, msgs: Messages
) -> None:
    """A scanner with a browser's agent, from an unknown network, clicks both links within
    a second: one request after the other, so two batches; the first click was stored as a
    person's, the second reveals the burst and the first row is corrected."""
    app = create_tracking_app(workspace)
    with serving(app) as base, httpx.Client(base_url=base, timeout=15) as c:
        mid = msgs.ids[0]
        for index in range(len(msgs.links)):
            r = c.get(f"/t/c/{msgs.click(mid, index)}", headers=person())
            assert r.status_code == 302
        assert app.writer.batches == 2
        assert stored_events(workspace)[0].verdict == "machine"  # corrected at once
        # Another message's person, clicking one link: untouched.
        assert c.get(f"/t/c/{msgs.click(msgs.ids[1], 0)}", headers=person(ua=IPHONE))
    rows = stored_events(workspace)
    assert [(r.message_id, r.link_index, r.verdict, r.reason) for r in rows] == [
        (mid, 0, "machine", "all_links_burst"),
        (mid, 1, "machine", "all_links_burst"),
        (msgs.ids[1], 0, "human", "no_machine_signal"),
    ]


def test_a_burst_inside_one_batch_is_corrected_before_it_is_written(
    workspace: Workspace, msgs: Messages
) -> None:
    workspace.settings.tracking_batch_wait_ms = 300  # the two requests share one batch
    app = create_tracking_app(workspace)
    mid = msgs.ids[2]
    with serving(app) as base, concurrent.futures.ThreadPoolExecutor(2) as pool:

        def hit(index: int) -> int:
            with httpx.Client(base_url=base, timeout=15) as c:
                return c.get(f"/t/c/{msgs.click(mid, index)}", headers=person()).status_code

        assert list(pool.map(hit, range(len(msgs.links)))) == [302, 302]
    assert app.writer.batches == 1
    rows = stored_events(workspace)
    assert sorted((r.link_index, r.verdict, r.reason) for r in rows) == [
        (0, "machine", "all_links_burst"),
        (1, "machine", "all_links_burst"),
    ]


def test_group_commit_answers_every_request_after_its_batch(
    workspace: Workspace, msgs: Messages
) -> None:
    workspace.settings.tracking_batch_wait_ms = 20
    app = create_tracking_app(workspace)
    paths = [f"/t/o/{msgs.open(mid)}" for mid in msgs.ids] * 10
    with serving(app) as base, concurrent.futures.ThreadPoolExecutor(8) as pool:

        def hit(path: str) -> int:
            with httpx.Client(base_url=base, timeout=15) as c:
                return c.get(path, headers=person()).status_code

        assert set(pool.map(hit, paths)) == {200}
    assert len(stored_events(workspace)) == len(paths)
    assert 1 <= app.writer.batches < len(paths)


def test_networks_from_settings_decide_scanner_and_apple_verdicts(
    workspace: Workspace, msgs: Messages
) -> None:
    workspace.settings.tracking_scanner_networks = "192.0.2.0/24, 40.107.0.0/16"
    app = create_tracking_app(workspace)
    with serving(app) as base, httpx.Client(base_url=base, timeout=15) as c:
        a, b, d = msgs.ids[:3]
        assert c.get(f"/t/c/{msgs.click(a, 0)}", headers=person(ip="192.0.2.77")).is_redirect
        assert c.get(f"/t/c/{msgs.click(b, 0)}", headers=person(ip=SCANNER_IP)).is_redirect
        r = c.get(f"/t/o/{msgs.open(d)}", headers=person(ip=APPLE_IP, ua="Mozilla/5.0"))
        assert r.status_code == 200
    rows = {r.message_id: r for r in stored_events(workspace)}
    assert (rows[a].verdict, rows[a].reason, rows[a].network) == (
        "machine",
        "scanner_ip",
        "192.0.2.0/24",
    )
    assert (rows[b].verdict, rows[b].reason) == ("machine", "scanner_ip")
    assert (rows[d].verdict, rows[d].reason) == ("machine", "apple_mpp")


def test_no_phi_and_no_raw_address_in_answers_or_rows(
    client: httpx.Client, workspace: Workspace, msgs: Messages
) -> None:
    mid = msgs.ids[0]
    answers = [
        client.get(f"/t/o/{msgs.open(mid)}", headers=person()),
        client.get(f"/t/c/{msgs.click(mid, 0)}", headers=person()),
        client.get(f"/t/c/{msgs.honeypot(mid)}", headers=person()),
        client.get(f"/t/c/{msgs.click(mid, 7)}", headers=person()),
        client.get("/t/o/nothing", headers=person()),
    ]
    # campaign_scenario's contacts: "Pat<i> Synthetic", patient.<i>@sink.test
    phi = ["pat0", "synthetic", "patient.0", "sink.test", msgs.contact_of[mid]]
    for r in answers:
        seen = (str(r.headers) + r.content.decode("latin-1")).lower()
        assert [p for p in phi if p.lower() in seen] == []
    with transaction(workspace.engine) as s:
        dump = repr(s.execute(text("SELECT * FROM engagement_events")).all())
    assert PERSON_IP not in dump
    assert "198.51.100.0/24" in dump


def test_methods_other_than_get_and_head_are_refused(
    client: httpx.Client, workspace: Workspace, msgs: Messages
) -> None:
    token = msgs.click(msgs.ids[0], 0)
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        r = client.request(method, f"/t/c/{token}", headers=person())
        assert r.status_code == 405
        assert r.headers["allow"] == "GET, HEAD"
    assert stored_events(workspace) == []


def test_a_failing_database_answers_503_then_recovers(
    client: httpx.Client, workspace: Workspace, msgs: Messages
) -> None:
    mid = msgs.ids[0]
    with transaction(workspace.engine) as s:
        s.execute(text("ALTER TABLE engagement_events RENAME TO engagement_events_away"))
    try:
        r = client.get(f"/t/c/{msgs.click(mid, 0)}", headers=person())
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert "location" not in r.headers
        assert client.get(f"/t/o/{msgs.open(mid)}", headers=person()).status_code == 503
    finally:
        with transaction(workspace.engine) as s:
            s.execute(text("ALTER TABLE engagement_events_away RENAME TO engagement_events"))
    assert stored_events(workspace) == []
    r = client.get(f"/t/c/{msgs.click(mid, 0)}", headers=person())
    assert r.status_code == 302
    assert len(stored_events(workspace)) == 1


def test_carepost_serve_mounts_the_endpoints_over_https(
    workspace: Workspace, msgs: Messages, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    import ssl

    ctx = ssl.create_default_context(cafile=str(cert))
    web = create_app(workspace)
    with (
        serving(web, ssl_certfile=cert, ssl_keyfile=key) as base,
        httpx.Client(base_url=base, verify=ctx, timeout=15) as c,
    ):
        mid = msgs.ids[3]
        r = c.get(f"/t/c/{msgs.click(mid, 1)}", headers=person())
        assert r.status_code == 302
        assert r.headers["location"] == msgs.links[1]
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert c.get(f"/t/o/{msgs.open(mid)}", headers=person()).content == PIXEL
        assert c.get("/t/c/forged.c0.AAAAAAAAAAAAAAAAAAAAAA").status_code == 404
        assert c.get("/healthz").status_code == 200
    assert [(r.kind, r.verdict) for r in stored_events(workspace)] == [
        ("click", "human"),
        ("open", "human"),
    ]


@pytest.mark.parametrize("command", [("tracking", "serve"), ("serve", "--no-delivery")])
def test_a_bad_network_setting_stops_the_start_naming_the_setting(
    carepost: Any, workspace: Workspace, command: tuple[str, ...]
) -> None:
    carepost.env["CAREPOST_TRACKING_APPLE_NETWORKS"] = "17.0.0.0/8,not-a-network"
    r = carepost(*command, "--port", "1", check=False, timeout=60)
    assert r.returncode == 1
    assert "CAREPOST_TRACKING_APPLE_NETWORKS: entry 2 is not an IP network" in r.stderr
    assert "not-a-network" not in r.stderr  # the position, not the value


def test_tracking_serve_runs_alone_with_several_processes(
    carepost: Any, workspace: Workspace, msgs: Messages
) -> None:
    port = free_port()
    proc = carepost.popen("tracking", "serve", "--port", str(port), "--workers", "2")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
                    r = c.get(f"/t/c/{msgs.click(msgs.ids[0], 1)}", headers=person())
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "carepost tracking serve did not start"
                time.sleep(0.2)
        assert r.status_code == 302
        assert r.headers["location"] == msgs.links[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            assert c.get("/t/bare/x").status_code == 404  # the benchmark route is off
            for mid in msgs.ids:
                assert c.get(f"/t/o/{msgs.open(mid)}", headers=person()).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    assert len(stored_events(workspace)) == 1 + len(msgs.ids)
