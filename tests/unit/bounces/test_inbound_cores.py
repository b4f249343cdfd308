"""The pure parts of inbound bounce handling: VERP tags, Message-ID correlation, the
complaint-rate rule."""

from __future__ import annotations

from carepost.bounces.correlate import referenced_message_ids
from carepost.bounces.rates import Counts, RatePolicy, crossing, over_limit
from carepost.bounces.verp import VerpSigner
from carepost.crypto.keyring import KeyRing

OUTBOX = "0661018692d7cc209b538296d3aa4d31"


def test_verp_round_trip_forgery_and_case() -> None:
    ring = KeyRing.generate()
    signer = VerpSigner(ring)
    path = signer.return_path("bounces@clinic.example")
    address = signer.address(path, OUTBOX)
    assert address.startswith(f"bounces+{OUTBOX}-")
    assert address.endswith("@clinic.example")
    assert signer.verify(address).outbox_id == OUTBOX
    # Some MTAs upper-case what they return to; hex survives it.
    assert signer.verify(address.upper()).outbox_id == OUTBOX
    other = OUTBOX[:-1] + ("0" if OUTBOX[-1] != "0" else "1")
    swapped = address.replace(OUTBOX, other)
    assert signer.verify(swapped).status == "forged"
    assert VerpSigner(KeyRing.generate()).verify(address).status == "forged"
    assert signer.verify("bounces@clinic.example").status == "none"


def test_verp_keeps_a_plain_return_path_it_cannot_tag() -> None:
    signer = VerpSigner(KeyRing.generate())
    long_local = "b" * 20 + "@clinic.example"
    path = signer.return_path(long_local)
    assert signer.address(path, OUTBOX) == long_local
    tagged = signer.return_path("bounces+old@clinic.example")
    assert signer.address(tagged, OUTBOX).startswith(f"bounces+{OUTBOX}-")
    # Not an outbox id shape: nothing to tag.
    assert signer.address(signer.return_path("b@c.example"), "x") == "b@c.example"


def test_message_ids_come_from_the_quoted_original_not_the_notice() -> None:
    ours = f"<{OUTBOX}@clinic.example>"
    dsn = (
        "Message-ID: <notice-1@mx.example.net>\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: news@clinic.example\r\nMessage-ID: {ours}\r\n\r\n--B--\r\n"
    ).encode()
    assert referenced_message_ids(dsn) == [ours]
    rfc822 = (
        "Message-ID: <notice-2@mx.example.net>\r\n"
        "Content-Type: multipart/report; boundary=B\r\n\r\n"
        "--B\r\nContent-Type: message/rfc822\r\n\r\n"
        f"Message-Id: {ours.upper()}\r\nSubject: x\r\n\r\nbody\r\n--B--\r\n"
    ).encode()
    assert referenced_message_ids(rfc822) == [ours]
    prose = (
        "Subject: failure notice\r\n\r\nSorry.\r\n--- Below this line is a copy\r\n"
        f"Message-ID: {ours}\r\n"
    ).encode()
    assert referenced_message_ids(prose) == [ours]
    # Not shaped like ours: never a candidate.
    assert referenced_message_ids(b"Subject: x\r\n\r\nMessage-ID: <abc@x.example>\r\n") == []


def test_complaint_rate_limit_volume_and_crossings() -> None:
    policy = RatePolicy()
    assert not over_limit(Counts(1000, 0, 0, 0, 3), policy)  # 0.3% is not over 0.3%
    assert over_limit(Counts(1000, 0, 0, 0, 4), policy)
    assert not over_limit(Counts(999, 0, 0, 0, 50), policy)  # too few to mean anything
    assert over_limit(Counts(4, 0, 0, 0, 1), RatePolicy(min_delivered=4))
    counts = Counts(sent=90, rejected=10, hard=6, soft=2, complaints=1)
    assert (counts.hard_rate, counts.soft_rate) == (0.06, 0.02)
    assert counts.complaint_rate == 1 / 90
    assert Counts(0, 0, 0, 0, 0).complaint_rate == 0.0
    assert crossing(alert_open=False, over=True) == "raise"
    assert crossing(alert_open=True, over=True) is None
    assert crossing(alert_open=True, over=False) == "clear"
    assert crossing(alert_open=False, over=False) is None
