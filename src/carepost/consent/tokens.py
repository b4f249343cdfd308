"""Unsubscribe tokens: authenticated and opaque, carrying only ids and codes.

A token is `base64url(version | nonce | AES-256-GCM(payload))` under an HKDF subkey of the
key ring used for nothing else. The GCM tag authenticates the payload (a forged or
altered token fails to open); encryption keeps even the topic name, which can hint at a
condition ("diabetes-education"), out of URLs and server logs. The payload is the contact
id (16 bytes), the channel and the topic code: no PHI.

Tokens do not expire: an opt-out must always be honoured (CAN-SPAM requires at least 30
days; we never stop).
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carepost.consent.records import CHANNELS, valid_topic
from carepost.crypto.keyring import KeyRing
from carepost.crypto.nonces import random_bytes

SUBKEY_PURPOSE = "carepost unsubscribe-token v1"
_VERSION = b"\x01"
_AAD = b"carepost|unsubscribe-token|v1"
_NONCE = 12
MAX_TOKEN_CHARS = 256


class BadToken(ValueError):
    """The token is malformed, forged or altered. The message never repeats it."""


@dataclass(frozen=True)
class UnsubscribeToken:
    contact_id: str
    channel: str
    topic: str


def _cipher(ring: KeyRing) -> AESGCM:
    return ring.subkey_aead(SUBKEY_PURPOSE)


def make_token(ring: KeyRing, contact_id: str, channel: str, topic: str) -> str:
    if channel not in CHANNELS:
        raise ValueError("unknown channel")
    if not valid_topic(topic):
        raise ValueError("topic must be a short slug [a-z0-9-_.]")
    try:
        raw_id = bytes.fromhex(contact_id)
    except ValueError:
        raise ValueError("contact ids are hex") from None
    if len(raw_id) != 16:
        raise ValueError("contact ids are 32 hex characters")
    payload = struct.pack(">B", CHANNELS.index(channel)) + raw_id + topic.encode("ascii")
    nonce = random_bytes(_NONCE)
    blob = _VERSION + nonce + _cipher(ring).encrypt(nonce, payload, _AAD)
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii")


def read_token(ring: KeyRing, token: str) -> UnsubscribeToken:
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise BadToken("malformed token")
    try:
        blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise BadToken("malformed token") from None
    if len(blob) < 1 + _NONCE + 16 + 17 or blob[:1] != _VERSION:
        raise BadToken("malformed token")
    try:
        payload = _cipher(ring).decrypt(blob[1 : 1 + _NONCE], blob[1 + _NONCE :], _AAD)
    except InvalidTag:
        raise BadToken("token failed authentication") from None
    channel_idx = payload[0]
    topic = payload[17:].decode("ascii", errors="replace")
    if channel_idx >= len(CHANNELS) or not valid_topic(topic):
        raise BadToken("malformed token")
    return UnsubscribeToken(payload[1:17].hex(), CHANNELS[channel_idx], topic)
