"""DKIM signing (RFC 6376) with OpenSSL through `cryptography`: RSA-SHA256 and
Ed25519-SHA256 (RFC 8463).

dkimpy's pure-Python RSA costs about 8 ms a message, which alone would cap a worker near
125 messages/s; OpenSSL signs RSA-2048 in well under a millisecond. The tests verify every
signature made here with dkimpy's `dkim.verify`, so the two stay interchangeable.

A signer is built once per sender profile (key loaded, tags fixed) and signs many messages.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

Canon = Literal["simple", "relaxed"]
Algorithm = Literal["rsa-sha256", "ed25519-sha256"]

# What the issue requires under the signature, plus the MIME headers that decide how the
# body reads: a relay or attacker changing Content-Type could otherwise reframe the body.
DEFAULT_SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
)

_WSP_RUN = re.compile(rb"[ \t]+")
_FOLD = re.compile(rb"\r\n(?=[ \t])")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")
# On text full of single spaces, the regex engine's literal search finds these in about
# two thirds of the time bytes.find takes.
_DOUBLE_SPACE = re.compile(rb"  ")
_SPACE_CRLF = re.compile(rb" \r\n")
_SELECTOR = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


class DkimError(ValueError):
    pass


# --- canonicalization (RFC 6376 section 3.4) -------------------------------------------
def canon_header_relaxed(name: bytes, value: bytes) -> bytes:
    # Most values are one line with single spaces, where the regexes would change nothing.
    if b"\t" in value or b"  " in value or b"\r\n " in value:
        value = _WSP_RUN.sub(b" ", _FOLD.sub(b"", value))
    return name.strip().lower() + b":" + value.strip(b" \t\r\n") + b"\r\n"


def canon_header_simple(name: bytes, value: bytes) -> bytes:
    return name + b":" + value


def canon_body_simple(body: bytes) -> bytes:
    return bytes(_simple_body(body, 0))


def canon_body_relaxed(body: bytes) -> bytes:
    return bytes(_relaxed_body(body, 0))


def _simple_body(message: bytes, start: int) -> bytes | memoryview:
    """`message[start:]` canonicalized: a view, not a copy, when it already is."""
    if _ends_in_one_crlf(message, start):
        return memoryview(message)[start:]
    return message[start:].rstrip(b"\r\n") + b"\r\n"


def _relaxed_body(message: bytes, start: int) -> bytes | memoryview:
    """`message[start:]` canonicalized: a view, not a copy, when it already is."""
    # Whatever the canonicalization changes lies before the last space or tab (or in the
    # CRLF just after it): in a message whose HTML part went as base64, the searches
    # and the rewrite skip that part.
    end = max(message.rfind(b" ", start), message.rfind(b"\t", start)) + 1
    if (
        message.find(b"\t", start, end) >= 0
        or _DOUBLE_SPACE.search(message, start, end)
        or _SPACE_CRLF.search(message, start, end + 2)
    ):
        head = _WSP_RUN.sub(b" ", message[start : end + 2])
        message, start = _TRAILING_WSP.sub(b"\r\n", head) + message[end + 2 :], 0
    if _ends_in_one_crlf(message, start):
        return memoryview(message)[start:]
    body = message[start:].rstrip(b"\r\n")
    # An empty body hashes as empty under relaxed (RFC 6376 errata 3192), not as CRLF.
    return body + b"\r\n" if body else b""


def _ends_in_one_crlf(message: bytes, start: int) -> bool:
    return len(message) - start > 2 and message.endswith(b"\r\n") and message[-3] not in b"\r\n"


def split_message(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Header fields as (name, raw value including folds and the final CRLF), and the body.

    The message must use CRLF line ends, as it will on the wire.
    """
    fields, start = _split_head(message)
    return fields, message[start:]


def _split_head(message: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
    """The header fields, as `split_message` gives them, and where the body starts."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        head, start = message, len(message)
        if not head.endswith(b"\r\n"):
            head += b"\r\n"
    else:
        head, start = message[: end + 2], end + 4
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise DkimError("message starts with a continuation line")
            name, value = fields[-1]
            fields[-1] = (name, value + line + b"\r\n")
            continue
        colon = line.find(b":")
        if colon <= 0:
            raise DkimError("a header line has no field name")
        fields.append((line[:colon], line[colon + 1 :] + b"\r\n"))
    return fields, start


def _select(
    fields: Sequence[tuple[bytes, bytes]], wanted: Sequence[bytes]
) -> tuple[list[tuple[bytes, bytes]], tuple[bytes, ...]]:
    """For each lower-case name in h=, the last not-yet-used instance, bottom up (section
    5.4.2); and the names found, which make the h= tag."""
    positions: dict[bytes, list[int]] = {}
    for i, (name, _) in enumerate(fields):
        positions.setdefault(name.strip().lower(), []).append(i)
    chosen: list[tuple[bytes, bytes]] = []
    found: list[bytes] = []
    for name in wanted:
        left = positions.get(name)
        if left:
            chosen.append(fields[left.pop()])
            found.append(name)
    return chosen, tuple(found)


# --- keys ------------------------------------------------------------------------------
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def generate_key(algorithm: Algorithm, rsa_bits: int = 2048) -> PrivateKey:
    if algorithm == "rsa-sha256":
        if rsa_bits < 2048:
            raise DkimError("RSA keys under 2048 bits are refused (RFC 8301 wants >= 1024)")
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    return ed25519.Ed25519PrivateKey.generate()


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise DkimError(f"{path}: not an RSA or Ed25519 private key")
    return key


def algorithm_of(key: PrivateKey) -> Algorithm:
    return "ed25519-sha256" if isinstance(key, ed25519.Ed25519PrivateKey) else "rsa-sha256"


def dns_record_value(key: PrivateKey) -> str:
    """The TXT record value to publish at <selector>._domainkey.<domain>."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def dns_txt_strings(value: str, chunk: int = 255) -> str:
    """Zone-file form: a TXT value is split into strings of at most 255 octets."""
    parts = [value[i : i + chunk] for i in range(0, len(value), chunk)]
    return " ".join(f'"{p}"' for p in parts)


# --- signing ---------------------------------------------------------------------------
# Stand-ins for the t= and bh= values while a signer lays its header out: never in a tag
# otherwise (header names are checked), and not whitespace, so folding and relaxed
# canonicalization treat them as they treat the digits and base64 that replace them.
_T_SLOT = "\x00"
_BH_SLOT = "\x01"
_SLOTS = re.compile(rb"\x00+|\x01+")
_BH_CHARS = 44  # base64 of a SHA-256 digest
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII except colon (RFC 5322 2.2)
_LAYOUTS_KEPT = 64


@dataclass(frozen=True)
class _Layout:
    """A signer's DKIM-Signature header for one h= list, cut around the t= and bh= values,
    whose lengths are fixed (so the folds are too): as sent, and canonicalized for the
    header hash. The signature itself follows at the end of the last line."""

    sent: tuple[bytes, bytes, bytes]
    canonical: tuple[bytes, bytes, bytes]
    last_line: int

    @staticmethod
    def fill(pieces: tuple[bytes, bytes, bytes], timestamp: bytes, body_hash: bytes) -> bytes:
        return pieces[0] + timestamp + pieces[1] + body_hash + pieces[2]


def _cut(text: bytes) -> tuple[bytes, bytes, bytes]:
    pieces = _SLOTS.split(text)
    if len(pieces) == 2:  # no t= tag: an empty one in its place
        return pieces[0], b"", pieces[1]
    first, middle, last = pieces
    return first, middle, last


@dataclass(frozen=True)
class PendingSignature:
    """A signature with all of its Python work done. What is left, the body hash and the
    private-key operation, is C code that releases the GIL: `DkimSigner.complete` runs on a
    helper thread while the worker builds the next message."""

    body: bytes | memoryview  # canonicalized; most often a view of the message itself
    headers: bytes  # the signed header fields, canonicalized, in h= order
    timestamp: bytes  # the t= value, or empty for none
    layout: _Layout


@dataclass(frozen=True)
class DkimSigner:
    domain: str
    selector: str
    key: PrivateKey = field(repr=False)
    header_canon: Canon = "relaxed"
    body_canon: Canon = "relaxed"
    signed_headers: tuple[str, ...] = DEFAULT_SIGNED_HEADERS
    _layouts: dict[tuple[tuple[bytes, ...], int], _Layout] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not _DOMAIN.match(self.domain):
            raise DkimError("DKIM domain is not a valid domain name")
        if not _SELECTOR.match(self.selector):
            raise DkimError("DKIM selector must be letters, digits and hyphens")
        if not all(_HEADER_NAME.match(h) for h in self.signed_headers):
            raise DkimError("signed header names are printable ASCII without a colon")
        if "from" not in (h.lower() for h in self.signed_headers):
            raise DkimError("the From header must be signed (RFC 6376 section 5.4)")

    @property
    def algorithm(self) -> Algorithm:
        return algorithm_of(self.key)

    @functools.cached_property
    def _wanted(self) -> tuple[bytes, ...]:
        return tuple(h.lower().encode("ascii") for h in self.signed_headers)

    def signature_header(self, message: bytes, timestamp: int | None = None) -> bytes:
        """The `DKIM-Signature: ...\r\n` header field to prepend to `message`."""
        return self.complete(self.prepare(message, timestamp))

    def prepare(self, message: bytes, timestamp: int | None = None) -> PendingSignature:
        """Everything but the body hash and the private-key operation, which `complete`
        does: they release the GIL, so a worker can run them on another core while it
        builds the next message."""
        fields, start = _split_head(message)
        canon = _relaxed_body if self.body_canon == "relaxed" else _simple_body
        canon_body = canon(message, start)
        chosen, names = _select(fields, self._wanted)
        canon_h = canon_header_relaxed if self.header_canon == "relaxed" else canon_header_simple
        headers = b"".join([canon_h(name, value) for name, value in chosen])
        t_value = b"" if timestamp is None else str(timestamp).encode("ascii")
        layout = self._layouts.get((names, len(t_value)))
        if layout is None:
            layout = self._lay_out(names, timestamp is not None, len(t_value))
        return PendingSignature(canon_body, headers, t_value, layout)

    def complete(self, pending: PendingSignature) -> bytes:
        """The `DKIM-Signature: ...\r\n` header field for a prepared message."""
        body_hash = base64.b64encode(hashlib.sha256(pending.body).digest())
        layout = pending.layout
        signed = pending.headers + layout.fill(layout.canonical, pending.timestamp, body_hash)
        header = layout.fill(layout.sent, pending.timestamp, body_hash)
        return header[:-2] + _fold_b64(self._sign(signed), layout.last_line)

    def sign(self, message: bytes, timestamp: int | None = None) -> bytes:
        return self.signature_header(message, timestamp) + message

    def _lay_out(self, names: tuple[bytes, ...], timed: bool, t_chars: int) -> _Layout:
        tags = [
            "v=1",
            f"a={self.algorithm}",
            f"c={self.header_canon}/{self.body_canon}",
            f"d={self.domain}",
            f"s={self.selector}",
        ]
        if timed:
            tags.append("t=" + _T_SLOT * t_chars)
        h_tag = b":".join(names).decode("ascii")
        tags += [f"h={h_tag}", "bh=" + _BH_SLOT * _BH_CHARS, "b="]
        # Folded so no line passes 78 characters; canonicalization ignores the folds the
        # same way a verifier does, because the header is hashed as it will be sent.
        sent = _fold_tags(tags)
        canon_h = canon_header_relaxed if self.header_canon == "relaxed" else canon_header_simple
        canonical = canon_h(b"DKIM-Signature", sent[len(b"DKIM-Signature:") :])
        if canonical.endswith(b"\r\n"):
            canonical = canonical[:-2]
        layout = _Layout(_cut(sent), _cut(canonical), len(sent.rsplit(b"\r\n", 2)[-2]))
        if len(self._layouts) >= _LAYOUTS_KEPT:
            self._layouts.clear()  # only odd header sets get here: a few layouts is usual
        self._layouts[(names, t_chars)] = layout
        return layout

    def _sign(self, data: bytes) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            # RFC 8463 section 3: PureEdDSA over the SHA-256 hash of the signing input.
            return self.key.sign(hashlib.sha256(data).digest())
        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _fold_tags(tags: Sequence[str]) -> bytes:
    """Tags joined with folds so no line passes 76 columns. A long h= list folds after a
    colon: RFC 6376 allows folding whitespace there and verifiers strip it."""
    pieces: list[str] = []
    for tag in tags:
        if tag.startswith("h=") and len(tag) > 60:
            names = tag[2:].split(":")
            pieces.append("h=" + names[0] + ":")
            pieces += [n + ":" for n in names[1:-1]]
            pieces.append(names[-1] + ";")
        else:
            pieces.append(tag + (";" if tag != "b=" else ""))
    lines: list[str] = []
    line = "DKIM-Signature:"
    glue = " "
    for piece in pieces:
        if len(line) + len(glue) + len(piece) > 76 and line != "DKIM-Signature:":
            lines.append(line)
            line = "\t" + piece
        else:
            line += glue + piece
        glue = "" if piece.endswith(":") else " "
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode()


def _fold_b64(signature: bytes, used: int) -> bytes:
    """The b= value, folded at 72 columns; whitespace in b= is ignored by verifiers."""
    text = base64.b64encode(signature)
    first = max(76 - used, 8)
    out = [text[:first]]
    rest = text[first:]
    out += [b"\t" + rest[i : i + 72] for i in range(0, len(rest), 72)]
    return b"\r\n".join(out) + b"\r\n"
