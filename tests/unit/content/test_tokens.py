"""Tracking tokens: bound to the message and link, forged or altered ones refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.content.tokens import TokenSigner, TrackingRef
from carepost.crypto.keyring import KeyRing

SIGNER = TokenSigner(KeyRing.generate())
OTHER = TokenSigner(KeyRing.generate())
IDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=8, max_size=64)


@given(IDS, st.integers(0, 9999))
def test_round_trip(message_id: str, index: int) -> None:
    assert SIGNER.verify(SIGNER.click_token(message_id, index)) == TrackingRef(
        message_id, "click", index
    )
    assert SIGNER.verify(SIGNER.open_token(message_id)) == TrackingRef(message_id, "open", -1)
    assert OTHER.verify(SIGNER.click_token(message_id, index)) is None


@given(IDS, st.integers(0, 9999), st.data())
def test_any_single_change_is_refused(message_id: str, index: int, data: st.DataObject) -> None:
    token = SIGNER.click_token(message_id, index)
    pos = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from("aZ09-_."))
    altered = token[:pos] + replacement + token[pos + 1 :]
    if altered != token:
        assert SIGNER.verify(altered) is None


def test_link_moved_to_another_message_or_index_is_refused() -> None:
    token = SIGNER.click_token("message0001", 3)
    body, mac = token.rsplit(".", 1)
    assert SIGNER.verify(body.replace("c3", "c4") + "." + mac) is None
    assert SIGNER.verify(body.replace("message0001", "message0002") + "." + mac) is None
    assert SIGNER.verify(token.replace(".c3.", ".o0.")) is None


def test_anything_around_a_good_token_is_refused() -> None:
    token = SIGNER.click_token("message0001", 3)
    for altered in (token + "\n", token + "\r\n", "\n" + token, token + "/", " " + token):
        assert SIGNER.verify(altered) is None


@given(st.text(max_size=200))
def test_garbage_never_verifies(text: str) -> None:
    assert SIGNER.verify(text) is None


@given(IDS, st.integers(0, 40))
def test_a_message_gets_the_same_tokens_at_once_as_one_by_one(message_id: str, links: int) -> None:
    clicks, opened = SIGNER.message_tokens(message_id, links)
    assert clicks == [SIGNER.click_token(message_id, i) for i in range(links)]
    assert opened == SIGNER.open_token(message_id)
    assert SIGNER.verify(opened) == TrackingRef(message_id, "open", -1)
    assert all(
        SIGNER.verify(t) == TrackingRef(message_id, "click", i) for i, t in enumerate(clicks)
    )


def test_message_tokens_check_the_id_and_the_count() -> None:
    with pytest.raises(ValueError, match="message ids"):
        SIGNER.message_tokens("bad id!", 3)
    with pytest.raises(ValueError, match="out of range"):
        SIGNER.message_tokens("message0001", 10001)
