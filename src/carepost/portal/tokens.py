"""The portal's secrets: the link token, one-time codes and session ids.

The link token is an HMAC of the outbox id under a key-ring subkey used for nothing else,
so it is the same every time the notice for one message is built: a worker that crashed
after a notice left and before it recorded sends the next notice with the same link, and
the first one works once the retry stores the message. It carries no id, no PHI, and
cannot be guessed; the database keeps only its SHA-256, so a copy of the database gives
no working links.

Codes are 8 digits, stored only as an HMAC bound to the message and the code's own id (a
code for one message never matches another's). Session ids are 32 random bytes, stored
as SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from carepost.crypto.keyring import KeyRing

LINK_PURPOSE = "carepost portal link v1"
CODE_PURPOSE = "carepost portal code v1"
CODE_DIGITS = 8
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
_CODE = re.compile(rf"^[0-9]{{{CODE_DIGITS}}}$")


def link_token(ring: KeyRing, outbox_id: str) -> str:
    digest = ring.hmac_digest(LINK_PURPOSE, outbox_id.encode("ascii"))
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def well_formed(token: str) -> bool:
    return bool(_TOKEN.match(token))


def lookup_hash(secret: str) -> str:
    """What the database keeps of a link token or a session id: their SHA-256. Both are
    256-bit random-looking values, so a plain hash is enough to make a stolen table
    useless."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_hash(ring: KeyRing, outbox_id: str, code_id: str, code: str) -> str:
    return ring.hmac_hex(CODE_PURPOSE, f"{outbox_id}|{code_id}|{code}".encode("ascii"))


def normalize_code(text: str) -> str | None:
    """What a person typed: spaces and dashes are ignored; anything else but 8 digits is
    not a code."""
    cleaned = text.replace(" ", "").replace("-", "").strip()
    return cleaned if _CODE.match(cleaned) else None


def code_matches(ring: KeyRing, outbox_id: str, code_id: str, code: str, stored: str) -> bool:
    return hmac.compare_digest(code_hash(ring, outbox_id, code_id, code), stored)


def new_session_id() -> str:
    return secrets.token_urlsafe(32)
