"""List-Unsubscribe (RFC 2369) and List-Unsubscribe-Post (RFC 8058) for one message.

The delivery capability adds these headers and MUST include both in the DKIM signature's
`h=` list (RFC 8058 section 4): `DKIM_SIGNED_HEADERS` names them.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from carepost.config import Settings
from carepost.consent.tokens import make_token
from carepost.crypto.keyring import KeyRing

DKIM_SIGNED_HEADERS = ("List-Unsubscribe", "List-Unsubscribe-Post")
ONE_CLICK = "List-Unsubscribe=One-Click"


class PublicUrlError(ValueError):
    pass


def public_base_url(settings: Settings) -> str:
    """The configured public base URL, checked: https, or http only with dev_insecure."""
    url = settings.public_url.strip().rstrip("/")
    if not url:
        raise PublicUrlError(
            "CAREPOST_PUBLIC_URL is not set: unsubscribe links need the public https address "
            "of `carepost serve` (e.g. https://mail.example.org)"
        )
    parts = urlsplit(url)
    if parts.scheme == "http" and not settings.dev_insecure:
        raise PublicUrlError(
            "CAREPOST_PUBLIC_URL must be https (plain http only with CAREPOST_DEV_INSECURE=1 "
            "for local development)"
        )
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise PublicUrlError("CAREPOST_PUBLIC_URL must look like https://host[:port][/path]")
    return url


def unsubscribe_url(base: str, token: str) -> str:
    return f"{base}/u/{token}"


def preferences_url(base: str, token: str) -> str:
    return f"{base}/p/{token}"


def list_unsubscribe_headers(
    ring: KeyRing,
    base_url: str,
    contact_id: str,
    channel: str,
    topic: str,
    *,
    mailto: str | None = None,
) -> dict[str, str]:
    """`List-Unsubscribe: <https://…/u/TOKEN>[, <mailto:ADDR?subject=unsubscribe%20TOKEN>]`
    and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`. The https URI comes first:
    RFC 8058 one-click needs one, and receivers prefer it."""
    return unsubscribe_headers(base_url, make_token(ring, contact_id, channel, topic), mailto)


def unsubscribe_headers(base_url: str, token: str, mailto: str | None = None) -> dict[str, str]:
    """`list_unsubscribe_headers` for a token already made (a message's preferences link
    carries the same one)."""
    uris = [f"<{unsubscribe_url(base_url, token)}>"]
    if mailto:
        if any(c in mailto for c in "<>,\r\n ?"):
            raise ValueError("mailto must be a bare address")
        uris.append(f"<mailto:{mailto}?subject={quote('unsubscribe ' + token)}>")
    return {"List-Unsubscribe": ", ".join(uris), "List-Unsubscribe-Post": ONE_CLICK}
