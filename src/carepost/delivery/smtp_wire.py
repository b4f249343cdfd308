"""SMTP on the wire, without I/O: replies parsed from a byte stream, commands checked and
built, the message body made ready for DATA. The pure half of `smtp_session`.

Kept apart so the parts a hostile or broken server can reach (reply parsing) and the parts
a merge field could reach (addresses in commands) are tested without sockets.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

MAX_REPLY_LINE = 2048  # RFC 5321 4.5.3.1.5 says 512; real servers run longer, not this long
MAX_REPLY_LINES = 100
_CONTROL = re.compile(r"[\x00-\x20\x7f<>]")
_LONE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")


class ProtocolError(Exception):
    """The server said something that is not SMTP. The text never holds its reply."""


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


class ReplyParser:
    """Feed bytes as they arrive; get every complete reply, in order.

    A reply is one or more lines `ddd-text` ending with a line `ddd text` (RFC 5321 4.2.1).
    Pipelined replies arrive in one read, and a reply may be split across reads, so the
    parser keeps what is left over.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._code = 0

    @property
    def pending(self) -> bool:
        """Bytes or lines received that do not make a whole reply yet."""
        return bool(self._buffer or self._lines)

    def feed(self, data: bytes) -> list[Reply]:
        self._buffer += data
        replies: list[Reply] = []
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._buffer[start:end]).rstrip(b"\r")
            start = end + 1
            reply = self._line(line)
            if reply is not None:
                replies.append(reply)
        del self._buffer[:start]
        if len(self._buffer) > MAX_REPLY_LINE:
            raise ProtocolError("a reply line is too long")
        return replies

    def _line(self, line: bytes) -> Reply | None:
        if len(line) > MAX_REPLY_LINE:
            raise ProtocolError("a reply line is too long")
        head = line[:3]
        if len(head) < 3 or not head.isdigit() or line[3:4] not in (b"", b" ", b"-"):
            raise ProtocolError("a reply line does not start with a three-digit code")
        code = int(head)
        if self._lines and code != self._code:
            raise ProtocolError("a multi-line reply changed its code")
        self._code = code
        self._lines.append(line[4:].decode("utf-8", "replace").strip())
        if len(self._lines) > MAX_REPLY_LINES:
            raise ProtocolError("a reply has too many lines")
        if line[3:4] == b"-":
            return None
        reply = Reply(code, tuple(self._lines))
        self._lines = []
        return reply


def extensions(ehlo: Reply) -> dict[str, str]:
    """EHLO keywords (upper case) to their parameters; the first line is the greeting."""
    found: dict[str, str] = {}
    for line in ehlo.lines[1:]:
        keyword, _, params = line.partition(" ")
        if keyword:
            found[keyword.upper()] = params.strip()
    return found


def check_address(address: str) -> str:
    """A path for MAIL FROM or RCPT TO. Anything that could end the command or smuggle a
    second one (CR, LF, any control, a space, angle brackets) is refused; the error names
    no address, because a recipient's address is PHI."""
    if not address or len(address) > 254 or _CONTROL.search(address) or "@" not in address:
        raise ValueError("an envelope address is empty, too long or has forbidden characters")
    if not address.isascii():
        raise ValueError("an envelope address is not ASCII (SMTPUTF8 is not used)")
    return address


def mail_from(address: str, size: int | None) -> bytes:
    """`MAIL FROM:<a>`; with SIZE (RFC 1870) when the server announced it, so an
    oversized message is refused before its body is sent."""
    params = f" SIZE={size}" if size is not None else ""
    return f"MAIL FROM:<{check_address(address) if address else ''}>{params}\r\n".encode("ascii")


def rcpt_to(address: str) -> bytes:
    return f"RCPT TO:<{check_address(address)}>\r\n".encode("ascii")


def data_payload(message: bytes, *, crlf_clean: bool = False, then: bytes = b"") -> bytes:
    """The body as DATA sends it: CRLF line ends, every line starting with a dot doubled
    (RFC 5321 4.5.2), then the lone dot that ends it, and `then` (the next pipelined
    commands) in the same buffer, copied once.

    A message with a lone CR or LF is normalised first, unless the caller vouches that it
    has none (`crlf_clean`): the check is three passes over the body, the stuffing one.
    """
    if not crlf_clean:
        lf = message.count(b"\n")
        if lf != message.count(b"\r") or lf != message.count(b"\r\n"):
            message = _LONE_CR_OR_LF.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b"."):
        message = b"." + message
    return b"".join((message.replace(b"\r\n.", b"\r\n.."), b".\r\n", then))


def auth_plain(username: str, password: str) -> bytes:
    """`AUTH PLAIN` with its initial response (RFC 4616). Only ever sent over TLS."""
    token = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
    return f"AUTH PLAIN {token}\r\n".encode("ascii")


def auth_login_step(value: str) -> bytes:
    return base64.b64encode(value.encode()) + b"\r\n"
