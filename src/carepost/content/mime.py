"""Messages built straight from byte templates.

`email.message` costs about 1.8 ms a message, more than the DKIM signature; a campaign
compiles a `MimeLayout` once and `build` only joins bytes: header lines, then the text part
(quoted-printable, readable raw) and the HTML part (7bit where it can be, else base64),
with CRLF line ends.

Header values are checked before they are joined: a CR or LF (raw, percent-encoded, or
inside an RFC 2047 encoded word), a NUL, or a Unicode line break anywhere is a
`HeaderInjection`, so no merge field can add a header or end the header block.
"""

from __future__ import annotations

import base64
import binascii
import functools
import quopri
import re
import secrets
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MAX_LINE = 998  # RFC 5322 section 2.1.1, excluding CRLF
FOLD_AT = 76
B64_LINE = 76
UNSTRUCTURED = frozenset({"subject", "comments"})

# str.splitlines() boundaries beyond CR and LF: some clients and parsers break lines there.
_LINE_BREAKS = "\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_RAW_BAD = re.compile(f"[\r\n{_LINE_BREAKS}]")
_PERCENT_BAD = re.compile(r"%(?:0[0-9a-f]|1[c-e])|%e2%80%a[89]|%c2%85", re.IGNORECASE)
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_FIELD_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII except colon (RFC 5322 2.2)


class HeaderInjection(ValueError):
    """A header value would break out of its line. The message names the header only."""


def check_header_value(name: str, value: str) -> None:
    if not _FIELD_NAME.match(name):
        raise HeaderInjection(f"header name {name!r} is not a valid field name")
    if _RAW_BAD.search(value):
        raise HeaderInjection(f"{name}: a line break or NUL in the value")
    # The substring tests only skip searches that could not match: every header of every
    # message passes here.
    if "%" in value and _PERCENT_BAD.search(value):
        raise HeaderInjection(f"{name}: a percent-encoded control or line break in the value")
    if "=?" not in value:
        return
    for match in _ENCODED_WORD.finditer(value):
        decoded = _decode_word(match.group(2), match.group(3))
        if decoded is None or _RAW_BAD.search(decoded.decode("latin-1")):
            raise HeaderInjection(f"{name}: an encoded word hides a line break or is malformed")


def _decode_word(kind: str, text: str) -> bytes | None:
    try:
        if kind in "bB":
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        return quopri.decodestring(text.replace("_", " ").encode("ascii"), header=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def encode_words(value: str, *, force: bool = False) -> str:
    """ASCII stays as it is (unless forced); anything else becomes RFC 2047 B-encoded
    UTF-8 words of at most 75 characters, split on character boundaries, separated by
    spaces (where the line may fold)."""
    if value.isascii() and not force:
        return value
    words: list[str] = []
    chunk = ""
    for ch in value:
        # 39 bytes of UTF-8 encode to 52 base64 characters: a 64-character word, so even
        # the first one fits on the header's first line within 76 columns.
        if len((chunk + ch).encode()) > 39:
            words.append(_b_word(chunk))
            chunk = ""
        chunk += ch
    if chunk:
        words.append(_b_word(chunk))
    return " ".join(words)


def _b_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


def format_address(display_name: str, address: str) -> str:
    """`Name <addr>`, the name quoted or encoded as needed. The address must be ASCII
    (SMTPUTF8 is not assumed of every relay)."""
    check_header_value("address", display_name)
    check_header_value("address", address)
    if not address.isascii() or "<" in address or ">" in address or "@" not in address:
        raise HeaderInjection("address: not a plain ASCII mailbox")
    if not display_name:
        return address
    if display_name.isascii():
        escaped = display_name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{address}>'
    return f"{encode_words(display_name)} <{address}>"


def header_line(name: str, value: str) -> bytes:
    """One header field with CRLF, checked, encoded and folded at spaces to 76 columns
    where it can be (a longer unbroken token stays whole up to the 998 hard limit)."""
    check_header_value(name, value)
    text = encode_words(value)
    line = f"{name}: {text}"
    if len(line) <= FOLD_AT:
        return line.encode("ascii") + b"\r\n"
    unstructured = name.lower() in UNSTRUCTURED
    if " " not in text and not unstructured:
        # One long token (a List-Unsubscribe URL): there is nowhere to fold it.
        if len(line) > MAX_LINE:
            raise HeaderInjection(f"{name}: a token longer than {MAX_LINE} characters")
        return line.encode("ascii") + b"\r\n"
    if unstructured and any(len(t) > FOLD_AT - 2 for t in text.split(" ")):
        # An unbroken run in free text can only be split as encoded words.
        text = encode_words(value, force=True)
    out: list[str] = []
    current = f"{name}:"
    for token in text.split(" "):
        if len(current) + 1 + len(token) > FOLD_AT and current != f"{name}:":
            out.append(current)
            current = " " + token
        else:
            current += " " + token
    out.append(current)
    if any(len(piece) > MAX_LINE for piece in out):
        raise HeaderInjection(f"{name}: a token longer than {MAX_LINE} characters")
    return "\r\n".join(out).encode("ascii") + b"\r\n"


def _crlf_bytes(text: str) -> bytes:
    """UTF-8 with CRLF line ends. Rendered templates end lines with LF only, so the
    three-step normalization runs only for text that holds a CR."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\n", "\r\n").encode()


@functools.lru_cache(maxsize=64)
def _b64_lines(count: int) -> struct.Struct:
    # One C call cuts a whole body into 76-character lines; the stdlib's encodebytes
    # loops in Python over 57-byte chunks, about 250 calls for a 20 KB HTML part.
    return struct.Struct(f"{B64_LINE}s" * count)


def b64_body(text: str) -> bytes:
    """UTF-8 in base64 lines of 76 characters: a tenth of quoted-printable's cost, and
    the HTML part (20 KB and up) is what a person never reads raw anyway."""
    encoded = binascii.b2a_base64(_crlf_bytes(text), newline=False)
    full, rest = divmod(len(encoded), B64_LINE)
    lines = list(_b64_lines(full).unpack_from(encoded)) if full else []
    if rest:
        lines.append(encoded[-rest:])
    lines.append(b"")  # so every line, the last too, ends with CRLF
    return b"\r\n".join(lines)


# A 7bit HTML part is ASCII lines of at most 998 octets (RFC 5322 2.1.1): a quarter
# smaller than base64, which every later step pays for (two hashes, compression, TLS, the
# relay). Other characters become numeric character references, which an HTML parser
# reads as the characters themselves, except in the raw text of <script> and <style>
# and for the C1 controls (HTML reads &#128; to &#159; as Windows-1252). A part whose
# meaning that would change, or that 7bit cannot carry unchanged, goes as base64. Both
# checks run on the encoded bytes: over a str with characters beyond Latin-1 the regex
# engine is several times slower.
RAW_TEXT = re.compile(rb"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
C1_REFERENCE = re.compile(rb"&#1(?:2[89]|[3-5][0-9]);")


def html_body(html: str, boundary: bytes) -> tuple[bool, bytes]:
    """(True, the 7bit part) or, when it cannot be one, (False, the base64 part)."""
    if "\r" in html:
        html = html.replace("\r\n", "\n").replace("\r", "\n")
    if html.isascii():
        data = html.encode("ascii")
    else:
        # A reference the template wrote itself also sends the part as base64 here:
        # rare, and base64 is always right.
        data = html.encode("ascii", "xmlcharrefreplace")
        if C1_REFERENCE.search(data) or any(b"&#" in m.group() for m in RAW_TEXT.finditer(data)):
            return False, b64_body(html)
    if (
        b"\0" in data
        # A line that is the boundary would end the part early.
        or boundary in data
        # Mailbox writers turn a line's leading "From " into ">From ", which breaks the
        # signature.
        or b"\nFrom " in data
        or data.startswith(b"From ")
        # Still LF line ends here: splitting on one byte takes half the time.
        or (len(data) > MAX_LINE and max(map(len, data.split(b"\n"))) > MAX_LINE)
    ):
        return False, b64_body(html)
    data = data.replace(b"\n", b"\r\n")
    return True, data if data.endswith(b"\r\n") else data + b"\r\n"


def qp_body(text: str, known: Mapping[str, bytes] | None = None) -> bytes:
    """UTF-8, CRLF line ends, quoted-printable; every line within 76 characters.

    `known` maps lines (without their line end) to their encoding, as `qp_known_lines`
    makes it for the fixed lines of a template: those are looked up instead of encoded
    again for every message. binascii encodes each CRLF-ended line on its own, so the
    bytes are the same with or without it."""
    if known is None or "\r" in text:
        data = _crlf_bytes(text)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        return binascii.b2a_qp(data, istext=True)
    lines = text.split("\n")
    last = lines.pop()
    if last or not lines:
        lines.append(last)  # the last line gets a line end like every other
    # _qp_line inlined: a function call per unknown line is a tenth of this loop's time.
    get, encode = known.get, binascii.b2a_qp
    return b"".join([get(line) or encode((line + "\r\n").encode()) for line in lines])


def _qp_line(line: str) -> bytes:
    return binascii.b2a_qp((line + "\r\n").encode())  # istext, the default: CRLF stays


def qp_known_lines(lines: Iterable[str]) -> dict[str, bytes]:
    """Lines known before any message is rendered (a template's fixed text), encoded."""
    return {line: _qp_line(line) for line in lines if "\r" not in line and "\n" not in line}


@dataclass(frozen=True)
class MimeLayout:
    """The fixed bytes of a campaign's messages: part headers around a boundary that QP
    and base64 output can never contain ("=_" is not a valid QP sequence; a 7bit part
    that holds it goes as base64)."""

    boundary: bytes
    top: bytes
    text_head: bytes
    html_head: bytes  # base64
    close: bytes
    html_head_7bit: bytes = b""

    @classmethod
    def alternative(cls, boundary: str | None = None) -> MimeLayout:
        b = (boundary or f"=_cp_{secrets.token_hex(12)}").encode("ascii")
        part = b"Content-Type: text/%s; charset=utf-8\r\nContent-Transfer-Encoding: %s\r\n\r\n"
        return cls(
            boundary=b,
            top=(
                b"MIME-Version: 1.0\r\n"
                b'Content-Type: multipart/alternative; boundary="' + b + b'"\r\n\r\n'
            ),
            text_head=b"--" + b + b"\r\n" + part % (b"plain", b"quoted-printable"),
            html_head=b"\r\n--" + b + b"\r\n" + part % (b"html", b"base64"),
            close=b"\r\n--" + b + b"--\r\n",
            html_head_7bit=b"\r\n--" + b + b"\r\n" + part % (b"html", b"7bit"),
        )


def build(
    layout: MimeLayout,
    headers: bytes,
    text: str,
    html: str,
    known_text: Mapping[str, bytes] | None = None,
) -> bytes:
    """A whole message. `headers` are lines already made by `header_line` (the caller
    keeps the ones fixed per campaign and adds the per-message ones); `known_text` is
    `qp_known_lines` of the template's fixed text lines."""
    return build_parts(layout, headers, qp_body(text, known_text), html_body(html, layout.boundary))


def build_parts(
    layout: MimeLayout, headers: bytes, text_part: bytes, html: tuple[bool, bytes]
) -> bytes:
    """`build` with the parts already encoded: `qp_body`'s answer, and `html_body`'s for
    this layout's boundary (or a flat template's plans of them, content.text_part and
    content.html_part)."""
    seven_bit, html_part = html
    return b"".join(
        (
            headers,
            layout.top,
            layout.text_head,
            text_part,
            layout.html_head_7bit if seven_bit else layout.html_head,
            html_part,
            layout.close,
        )
    )


def headers_block(fields: Sequence[tuple[str, str]]) -> bytes:
    return b"".join(header_line(name, value) for name, value in fields)
