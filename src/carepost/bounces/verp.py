"""VERP return paths: each message's envelope sender names its outbox row.

`bounces@clinic.example` becomes `bounces+<outbox id>-<mac>@clinic.example`. A bounce sent
back to that address says which message it is about without reading its content, and
the MAC (HMAC-SHA256 under the key ring's `verp-return-path` subkey, 64 bits, hex) makes a
forged bounce unable to name a message, so it cannot suppress an address of its choice.
Outbox ids are opaque (a time tick and 72 random bits): no PHI is in the address.

Hex, not base64: some MTAs lower-case local parts. Pure apart from the key ring.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from carepost.crypto.keyring import KeyRing

PURPOSE = "verp-return-path"
MAC_BYTES = 8
# RFC 5321 section 4.5.3.1.1: a local part is at most 64 octets.
MAX_LOCAL = 64
_ID = re.compile(r"^[0-9a-f]{32}$")
_TAG = re.compile(r"\+([0-9a-f]{32})-([0-9a-f]{16})@", re.IGNORECASE)


@dataclass(frozen=True)
class ReturnPath:
    """A sender profile's return path cut once per campaign: per message only the id
    and one MAC go between `prefix` and `suffix`."""

    prefix: str  # "bounces+"
    suffix: str  # "@clinic.example"
    plain: str  # the profile's return path, for a message id VERP cannot carry


class VerpSigner:
    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring

    def return_path(self, address: str) -> ReturnPath:
        local, _, domain = address.rpartition("@")
        # "+" is the separator carepost reads back; a local part that already has one
        # keeps only what is before it, so the tag is always the last "+" part.
        base = local.split("+", 1)[0]
        if not base or not domain or len(base) + 1 + 32 + 1 + 2 * MAC_BYTES > MAX_LOCAL:
            # Too long to tag: bounces are still linked by Message-ID.
            return ReturnPath("", "", address)
        return ReturnPath(f"{base}+", f"@{domain}", address)

    def _mac(self, outbox_id: str) -> str:
        return self._ring.hmac_digest(PURPOSE, outbox_id.encode("ascii"))[:MAC_BYTES].hex()

    def address(self, path: ReturnPath, outbox_id: str) -> str:
        """The envelope sender for one message: one HMAC."""
        if not path.prefix or not _ID.match(outbox_id):
            return path.plain
        return f"{path.prefix}{outbox_id}-{self._mac(outbox_id)}{path.suffix}"

    def verify(self, address: str) -> VerpResult:
        """What a bounce's envelope recipient says: an outbox id whose MAC holds, a tag
        whose MAC does not (forged or altered), or no tag at all."""
        match = _TAG.search(address)
        if match is None:
            return VerpResult("none", None)
        outbox_id, mac = match.group(1).lower(), match.group(2).lower()
        if not hmac.compare_digest(mac, self._mac(outbox_id)):
            return VerpResult("forged", None)
        return VerpResult("valid", outbox_id)


@dataclass(frozen=True)
class VerpResult:
    status: str  # valid | forged | none
    outbox_id: str | None
