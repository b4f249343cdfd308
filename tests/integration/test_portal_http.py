"""Portal pickup over real HTTPS (uvicorn on loopback, httpx), on both engines: the
one-time-code flow end to end with the code read from the SMTP sink, reuse, expiry,
brute force and the request limits, unknown tokens, the read receipt, the date-of-birth
alternative, sessions, attachments, CSRF, and no PHI anywhere before verification."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry
from carepost.contacts import phi
from carepost.crypto.envelope import aad, seal
from carepost.db import transaction
from carepost.delivery import archive
from carepost.delivery.evidence import evidence
from carepost.delivery.models import ArchivedMessage
from carepost.portal.limits import PortalLimits
from carepost.portal.models import PortalCode, PortalMessage
from carepost.workspace import Workspace
from portal_support import (
    BODY_MARK,
    FAMILY,
    GIVEN,
    ORG,
    Clock,
    MxTlsRefusing,
    code_in,
    https_site,
    link_in,
    phi_in,
    relay,
    scenario,
    worker,
)

NO_TLS = "ok.notls@sink.test"
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


@dataclass
class Portal:
    ws: Workspace
    base: str
    cert: Path
    sink: Any
    clock: Clock
    link: str

    @property
    def path(self) -> str:
        return self.link.removeprefix(self.base)

    def client(self) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.cert))
        return httpx.Client(base_url=self.base, verify=ctx, timeout=15, follow_redirects=False)

    def mails_to_patient(self) -> list[bytes]:
        return [r.data for r in self.sink.state.received if r.rcpt_tos == [NO_TLS]]

    def row(self) -> PortalMessage:
        with transaction(self.ws.engine) as s:
            row = s.scalars(select(PortalMessage)).one()
            s.expunge(row)
        return row

    def audit_count(self, action: str) -> int:
        with transaction(self.ws.engine) as s:
            return int(
                s.scalar(
                    select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
                )
                or 0
            )


def _portal(
    workspace: Workspace,
    actor: Actor,
    smtp_sink_factory: Any,
    tmp_path: Path,
    *,
    verification: str = "code",
    limits: PortalLimits | None = None,
) -> Iterator[Portal]:
    scenario(workspace, actor, [NO_TLS], verification=verification)
    sink = smtp_sink_factory()
    clock = Clock()
    with https_site(workspace, tmp_path, clock, sink, limits) as (base, cert):
        transport = MxTlsRefusing(relay(sink), {NO_TLS})
        assert worker(workspace, transport, clock, base).run().results == {"sent": 1}
        link = link_in(sink.state.received[-1].data)
        yield Portal(workspace, base, cert, sink, clock, link)


@pytest.fixture
def portal(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any, tmp_path: Path
) -> Iterator[Portal]:
    yield from _portal(workspace, actor, smtp_sink_factory, tmp_path)


def _csrf(page: httpx.Response) -> str:
    match = CSRF.search(page.text)
    assert match is not None
    return match.group(1)


def _title(page: httpx.Response) -> str:
    match = re.search(r"<title>(.*?)</title>", page.text)
    assert match is not None
    return match.group(1)


def _ask_code(p: Portal, c: httpx.Client) -> str:
    """Open the link, press "email me a code", read the code from the sink."""
    page = c.get(p.path)
    before = len(p.mails_to_patient())
    sent = c.post(p.path + "/code", data={"csrf": _csrf(page)})
    assert sent.status_code == 200, sent.text
    mails = p.mails_to_patient()
    assert len(mails) == before + 1
    return code_in(mails[-1])


def _verify(p: Portal, c: httpx.Client, answer: str) -> httpx.Response:
    page = c.get(p.path)
    return c.post(p.path + "/verify", data={"csrf": _csrf(page), "answer": answer})


def test_one_time_code_flow_end_to_end(portal: Portal) -> None:
    p = portal
    with p.client() as c:
        page = c.get(p.path)
        assert page.status_code == 200
        assert _title(page) == "Secure message"
        assert "Email me a code" in page.text
        assert ORG in page.text
        assert phi_in(page.text) == []
        assert phi_in(p.link) == []
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
        assert c.head(p.path).status_code == 200

        code = _ask_code(p, c)
        code_mail = p.mails_to_patient()[-1]
        assert phi_in(code_mail) == []
        assert p.sink.state.received[-1].tls  # the sink is a TLS relay; policy said may-not

        done = _verify(p, c, code)
        assert done.status_code == 303
        assert done.headers["location"] == p.path + "/message"
        cookie = next(
            v for k, v in done.headers.multi_items() if k == "set-cookie" and "portal=" in v
        )
        assert cookie.startswith("__Host-carepost_portal=")
        for attribute in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
            assert attribute.lower() in cookie.lower()

        shown = c.get(p.path + "/message")
        assert shown.status_code == 200
        assert _title(shown) == "Secure message"
        # Now, and only now, the message: text and HTML (sandboxed, escaped into srcdoc).
        assert GIVEN in shown.text
        assert FAMILY in shown.text
        assert BODY_MARK in shown.text
        assert '<iframe sandbox=""' in shown.text
        assert "srcdoc=" in shown.text
        assert "<p>Dear" not in shown.text  # the HTML is an escaped attribute value
        csp = shown.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "img-src" not in csp
        assert "frame-ancestors 'none'" in csp


def test_read_receipt_is_recorded_once_in_evidence_and_audit(portal: Portal) -> None:
    p = portal
    with p.client() as c:
        assert _verify(p, c, _ask_code(p, c)).status_code == 303
        assert p.row().first_viewed_at is None
        reads_before = p.audit_count("delivery.archive_read")
        p.clock.advance(seconds=5)
        first_at = p.clock()
        for _ in range(3):
            assert c.get(p.path + "/message").status_code == 200
            p.clock.advance(seconds=5)
    assert p.row().first_viewed_at == first_at
    assert p.audit_count("portal.read_receipt") == 1
    assert p.audit_count("delivery.archive_read") == reads_before + 3  # each view is audited
    with transaction(p.ws.engine) as s:
        proof = evidence(s, p.row().outbox_id)
        receipt = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "portal.read_receipt")
        ).one()
    assert proof["portal"]["first_viewed_at"] is not None
    assert receipt.actor == f"contact:{p.row().contact_id}"
    assert receipt.source_address == "127.0.0.0/24"


def test_a_code_works_once(portal: Portal) -> None:
    p = portal
    with p.client() as c:
        code = _ask_code(p, c)
        assert _verify(p, c, code).status_code == 303
    with p.client() as other:
        again = _verify(p, other, code)
        assert again.status_code == 400
        assert "not right" in again.text
        assert other.get(p.path + "/message").status_code == 303  # no session


def test_a_code_expires_after_ten_minutes(portal: Portal) -> None:
    p = portal
    with p.client() as c:
        code = _ask_code(p, c)
        p.clock.advance(minutes=10, seconds=1)
        assert _verify(p, c, code).status_code == 400
        fresh = _ask_code(p, c)
        p.clock.advance(minutes=9)
        assert _verify(p, c, fresh).status_code == 303


def test_brute_force_locks_the_message(portal: Portal) -> None:
    p = portal
    with p.client() as c:
        code = _ask_code(p, c)
        wrong = f"{(int(code) + 1) % 10**8:08d}"
        statuses = [_verify(p, c, wrong).status_code for _ in range(5)]
        assert statuses == [400, 400, 400, 400, 429]
        # Locked: even the right code is refused, and it is dead after the lock.
        assert _verify(p, c, code).status_code == 429
        page = c.get(p.path)
        assert c.post(p.path + "/code", data={"csrf": _csrf(page)}).status_code == 429
        assert p.audit_count("portal.locked") == 1
        p.clock.advance(minutes=31)
        assert _verify(p, c, code).status_code == 400
        assert _verify(p, c, _ask_code(p, c)).status_code == 303


def test_limits_per_network_and_on_code_requests(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any, tmp_path: Path
) -> None:
    limits = PortalLimits(
        codes_per_message=2, lock_after=50, wrong_per_network=3, wrong_window=timedelta(minutes=5)
    )
    for p in _portal(workspace, actor, smtp_sink_factory, tmp_path, limits=limits):
        with p.client() as c:
            code = _ask_code(p, c)
            _ask_code(p, c)
            page = c.get(p.path)
            third = c.post(p.path + "/code", data={"csrf": _csrf(page)})
            assert third.status_code == 429
            assert "Too many codes" in third.text
            assert len(p.mails_to_patient()) == 3  # the notice and two codes
            wrong = f"{(int(code) + 1) % 10**8:08d}"
            assert [_verify(p, c, wrong).status_code for _ in range(3)] == [400, 400, 400]
            assert _verify(p, c, code).status_code == 429  # this network is guessing
            p.clock.advance(minutes=6)  # the window passed; the code is still alive
            assert _verify(p, c, code).status_code == 303


def test_unknown_or_malformed_tokens_get_a_bare_404(portal: Portal) -> None:
    p = portal
    token = p.path.rsplit("/", 1)[1]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    with p.client() as c:
        for path in (f"/s/{flipped}", "/s/short", f"/s/{token}x", f"/s/{flipped}/message"):
            r = c.get(path)
            assert r.status_code == 404, path
            assert _title(r) == "Not found"
            assert ORG not in r.text
        assert c.get(f"/s/{flipped}/a/0").status_code == 404
        page = c.get(p.path)
        assert c.post(f"/s/{flipped}/code", data={"csrf": _csrf(page)}).status_code == 404
        assert c.post(f"/s/{flipped}/verify", data={"answer": "1"}).status_code == 404


def test_forms_need_their_csrf_pair(portal: Portal) -> None:
    p = portal
    with p.client() as c:
        c.get(p.path)
        assert c.post(p.path + "/code", data={"csrf": "0" * 64}).status_code == 403
        assert c.post(p.path + "/verify", data={"answer": "12345678"}).status_code == 403
    with transaction(p.ws.engine) as s:
        assert s.scalar(select(func.count()).select_from(PortalCode)) == 0
    assert len(p.mails_to_patient()) == 1  # the notice only


def test_sessions_are_short(portal: Portal) -> None:
    p = portal
    with p.client() as c:
        assert _verify(p, c, _ask_code(p, c)).status_code == 303
        for _ in range(3):  # kept alive by use
            p.clock.advance(minutes=14)
            assert c.get(p.path + "/message").status_code == 200
        p.clock.advance(minutes=16)
        gone = c.get(p.path + "/message")
        assert gone.status_code == 303
        assert gone.headers["location"] == p.path
        # Closing the message ends the session at once.
        assert _verify(p, c, _ask_code(p, c)).status_code == 303
        shown = c.get(p.path + "/message")
        assert c.post(p.path + "/logout", data={"csrf": _csrf(shown)}).status_code == 200
        assert c.get(p.path + "/message").status_code == 303


def test_date_of_birth_alternative(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any, tmp_path: Path
) -> None:
    for p in _portal(workspace, actor, smtp_sink_factory, tmp_path, verification="dob"):
        with p.client() as c:
            page = c.get(p.path)
            assert 'type="date"' in page.text
            assert "Email me a code" not in page.text
            assert phi_in(page.text) == []
            page = c.get(p.path)
            assert c.post(p.path + "/code", data={"csrf": _csrf(page)}).status_code == 200
            assert len(p.mails_to_patient()) == 1  # no code mail in DOB mode
            wrong = _verify(p, c, "1903-07-20")
            assert wrong.status_code == 400
            assert "1903-07-20" not in wrong.text
            assert _verify(p, c, "not a date").status_code == 400
            assert p.audit_count("portal.identity_check") == 1  # only a real date is read
            ok = _verify(p, c, "1903-07-19")
            assert ok.status_code == 303
            assert p.audit_count("portal.identity_check") == 2
            assert GIVEN in c.get(p.path + "/message").text


def test_attachments_download_and_never_render(portal: Portal) -> None:
    p = portal
    row = p.row()
    message = (
        b"From: care@clinic.example\r\nTo: ok.notls@sink.test\r\nSubject: Results\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n"
        b"--XX\r\nContent-Type: text/html\r\nContent-Disposition: attachment; "
        b'filename="r\xc3\xa9sultats.html"\r\n\r\n<script>alert(1)</script>\r\n--XX--\r\n'
    )
    with transaction(p.ws.engine) as s:
        opened = phi.read_for_job(
            s,
            p.ws.keyring,
            [row.contact_id],
            actor=Actor("cli:tester", "cli", "test"),
            purpose="test: replace the archived message with one that has an attachment",
            action="test.archive_write",
            with_facts=False,
        )[row.contact_id]
        sealed = seal(
            opened.cipher,
            archive.pack(message),
            aad("message_archive", "body", f"{row.outbox_id}.{row.attempt}", opened.dek_version),
        )
        s.execute(
            update(ArchivedMessage)
            .where(
                ArchivedMessage.outbox_id == row.outbox_id,
                ArchivedMessage.attempt == row.attempt,
            )
            .values(body=sealed, codec=archive.CODEC)
        )
    with p.client() as c:
        assert c.get(p.path + "/a/0").status_code == 303  # not before verification
        assert _verify(p, c, _ask_code(p, c)).status_code == 303
        shown = c.get(p.path + "/message")
        assert "résultats.html" in shown.text
        assert "See attached." in shown.text
        got = c.get(p.path + "/a/0")
        assert got.status_code == 200
        assert got.content == b"<script>alert(1)</script>"
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"] == (
            "attachment; filename*=UTF-8''r%C3%A9sultats.html"
        )
        assert got.headers["x-content-type-options"] == "nosniff"
        assert c.get(p.path + "/a/1").status_code == 404
