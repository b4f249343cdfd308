"""Packing the sent-message archive: round trips, and safe from several signing threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from carepost.delivery import archive


def test_pack_round_trips_and_shrinks_a_campaign_message() -> None:
    message = b"Content-Type: text/html\r\n\r\n" + b"<p>Our clinic is open late.</p>\r\n" * 600
    packed = archive.pack(message)
    assert len(packed) < len(message) // 5
    assert archive.unpack(archive.CODEC, packed) == message
    assert archive.unpack("raw", message) == message


def test_an_unknown_codec_is_refused() -> None:
    with pytest.raises(archive.NotArchived, match="codec"):
        archive.unpack("lzma", b"")


def test_packing_from_several_threads_at_once() -> None:
    # A worker packs on two signing threads; one shared zstd context crashed the process.
    messages = [(b"message %d " % i) * (200 + i) for i in range(400)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        packed = list(pool.map(archive.pack, messages))
    assert [archive.unpack(archive.CODEC, p) for p in packed] == messages
