"""The small pure parts of ingestion and the endpoints: reason text for the column, the
Location value of a stored destination, the pixel's bytes."""

from __future__ import annotations

import struct

from carepost.tracking.classifier import MACHINE_REASONS
from carepost.tracking.endpoints import PIXEL
from carepost.tracking.ingest import REASON_WIDTH, location_header, reason_text


def test_reasons_are_joined_whole_and_fit_the_column() -> None:
    assert reason_text(("head_request",)) == "head_request"
    assert reason_text(("bot_ua", "too_fast_after_delivery")) == "bot_ua,too_fast_after_delivery"
    every = reason_text(MACHINE_REASONS)
    assert len(every) <= REASON_WIDTH
    assert every.split(",") == list(MACHINE_REASONS[: len(every.split(","))])
    assert reason_text(()) == ""


def test_location_keeps_urls_and_encodes_what_could_break_a_header() -> None:
    plain = "https://clinic.example/flu?a=1&b=2#top"
    assert location_header(plain) == plain.encode()
    assert location_header("https://clinic.example/a%20b") == b"https://clinic.example/a%20b"
    assert location_header("https://clinic.example/café") == b"https://clinic.example/caf%C3%A9"
    injected = location_header("https://clinic.example/\r\nSet-Cookie: x=1")
    assert b"\r" not in injected
    assert b"\n" not in injected
    assert b" " not in injected
    assert injected == b"https://clinic.example/%0D%0ASet-Cookie:%20x=1"


def test_the_pixel_is_a_one_by_one_transparent_gif() -> None:
    assert len(PIXEL) == 43
    assert PIXEL[:6] == b"GIF89a"
    assert struct.unpack("<HH", PIXEL[6:10]) == (1, 1)
    gce = PIXEL.index(b"\x21\xf9\x04")
    assert PIXEL[gce + 3] & 1  # transparency flag
    assert PIXEL[gce + 6] == 0  # transparent colour index 0
    assert PIXEL.endswith(b";")
