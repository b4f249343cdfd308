"""Open and click tokens for tracking URLs.

A token names a message (the outbox row's opaque id), the event kind and, for a click,
the link's index in the template; an HMAC-SHA256 under the key ring's `tracking-token`
subkey (truncated to 128 bits) binds them. It carries no PHI and no destination: the click
endpoint looks the destination up by (message, link index), so a token can never be
turned into an open redirect, and an altered token fails verification.
"""

from __future__ import annotations

import base64
import functools
import hmac
import re
from dataclasses import dataclass
from typing import Literal

from carepost.crypto.keyring import KeyRing

PURPOSE = "tracking-token"
_MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_TOKEN = re.compile(r"([A-Za-z0-9_-]{8,64})\.([oc])([0-9]{1,4})\.([A-Za-z0-9_-]{22})")

Kind = Literal["open", "click"]


@dataclass(frozen=True)
class TrackingRef:
    message_id: str
    kind: Kind
    link_index: int  # -1 for an open


class TokenSigner:
    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring

    def _mac(self, body: str) -> str:
        # The key ring's HMAC keeps the keyed pads: a message carries twenty-odd tokens.
        digest = self._ring.hmac_digest(PURPOSE, body.encode("ascii"))[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def open_token(self, message_id: str) -> str:
        return self._make(message_id, "o", 0)

    def click_token(self, message_id: str, link_index: int) -> str:
        if not 0 <= link_index <= 9999:
            raise ValueError("link index out of range")
        return self._make(message_id, "c", link_index)

    def message_tokens(self, message_id: str, links: int) -> tuple[list[str], str]:
        """A message's click tokens (link indexes 0 to `links` - 1) and its open token:
        what `click_token` and `open_token` make one at a time, with the id checked once
        and one HMAC prefix and one base64 pass shared by all of them."""
        if not _MESSAGE_ID.fullmatch(message_id):
            raise ValueError("message ids in tokens are 8-64 URL-safe characters")
        if not 0 <= links <= 10000:
            raise ValueError("link index out of range")
        kinds, suffixes = _kinds(links)
        digests = self._ring.hmac_digests(PURPOSE, f"{message_id}.".encode("ascii"), suffixes)
        # Two zero bytes make each 16-byte MAC a whole number of base64 groups, so one
        # encoding serves every token: the first 22 of each 24 characters are that MAC's
        # unpadded encoding.
        macs = base64.urlsafe_b64encode(b"".join([d[:16] + b"\0\0" for d in digests]))
        text = macs.decode("ascii")
        tokens = [
            f"{message_id}.{kind}.{text[at : at + 22]}"
            for kind, at in zip(kinds, range(0, len(text), 24), strict=True)
        ]
        return tokens[:-1], tokens[-1]

    def _make(self, message_id: str, kind: str, index: int) -> str:
        if not _MESSAGE_ID.fullmatch(message_id):
            raise ValueError("message ids in tokens are 8-64 URL-safe characters")
        body = f"{message_id}.{kind}{index}"
        return f"{body}.{self._mac(body)}"

    def verify(self, token: str) -> TrackingRef | None:
        """The reference, or None for anything forged, altered or malformed."""
        # fullmatch: "$" would also match before a trailing newline (a path's "%0A").
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        message_id, kind, index, mac = match.groups()
        body = f"{message_id}.{kind}{index}"
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        if kind == "o":
            return TrackingRef(message_id, "open", -1) if index == "0" else None
        return TrackingRef(message_id, "click", int(index))


@functools.lru_cache(maxsize=16)
def _kinds(links: int) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    """The kind-and-index part of a message's tokens: every click, then the open."""
    kinds = (*(f"c{i}" for i in range(links)), "o0")
    return kinds, tuple(kind.encode("ascii") for kind in kinds)
