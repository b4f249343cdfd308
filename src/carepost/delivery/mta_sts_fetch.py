"""Fetching an MTA-STS policy file over HTTPS (RFC 8461 section 3.3).

`PolicyFetcher` is the injected interface; `HttpsPolicyFetcher` is the one implementation,
used in production and in tests alike. What RFC 8461 asks of the fetch: a certificate valid
for `mta-sts.<domain>` (verified, TLS 1.2 or newer), status 200 only (redirects are not
followed), no HTTP caching, media type text/plain, a size cap and a timeout.

`connect_to` maps a host name to the (address, port) to dial instead of resolving it. The
TLS handshake still names and verifies the real host (SNI and certificate check use
`mta-sts.<domain>`), so tests point the production code at a loopback server whose
certificate is issued for that name, and nothing else changes.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from carepost.delivery.mta_sts import POLICY_HOST_PREFIX, POLICY_PATH

MAX_POLICY_BYTES = 64 * 1024
DEFAULT_TIMEOUT = 15.0


class FetchError(Exception):
    """The policy could not be fetched. The message says why (TLS, status, media type,
    size, timeout, connection) and names the host, never the body."""


class PolicyFetcher(Protocol):
    async def fetch(self, domain: str) -> str:
        """The policy file's text for `domain`; raises FetchError."""
        ...


def default_tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@dataclass
class HttpsPolicyFetcher:
    tls: ssl.SSLContext = field(default_factory=default_tls_context)
    timeout: float = DEFAULT_TIMEOUT
    max_bytes: int = MAX_POLICY_BYTES
    connect_to: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    async def fetch(self, domain: str) -> str:
        host = POLICY_HOST_PREFIX + domain.rstrip(".").lower()
        target = self.connect_to.get(host)
        if target is None:
            url, extensions = f"https://{host}{POLICY_PATH}", {}
        else:
            ip, port = target
            netloc = f"[{ip}]" if ":" in ip else ip
            url, extensions = f"https://{netloc}:{port}{POLICY_PATH}", {"sni_hostname": host}
        headers = {
            "Host": host,
            "Accept": "text/plain",
            "Accept-Encoding": "identity",
            "Cache-Control": "no-cache",
        }
        # A client per fetch: no connection, cookie or cache outlives it, and a mapped
        # address cannot hand one domain's connection to another.
        async with httpx.AsyncClient(
            verify=self.tls,
            timeout=self.timeout,
            follow_redirects=False,
            trust_env=False,
        ) as client:
            try:
                async with client.stream(
                    "GET", url, headers=headers, extensions=extensions
                ) as response:
                    return await self._read(host, response)
            except httpx.TimeoutException:
                raise FetchError(f"{host}: timed out after {self.timeout:g} s") from None
            except httpx.ConnectError as exc:
                raise FetchError(f"{host}: {_connect_reason(exc)}") from None
            except httpx.HTTPError as exc:
                raise FetchError(f"{host}: HTTP error ({type(exc).__name__})") from None

    async def _read(self, host: str, response: httpx.Response) -> str:
        if response.status_code != 200:
            where = " (redirects are not followed)" if response.is_redirect else ""
            raise FetchError(f"{host}: HTTP status {response.status_code}{where}, expected 200")
        media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "text/plain":
            shown = media[:64] or "none"
            raise FetchError(f"{host}: media type {shown}, expected text/plain")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchError(f"{host}: policy is larger than {self.max_bytes} bytes")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # We asked for no encoding; decoding one would let a small body grow past the cap.
            raise FetchError(f"{host}: unexpected content encoding")
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > self.max_bytes:
                raise FetchError(f"{host}: policy is larger than {self.max_bytes} bytes")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise FetchError(f"{host}: policy is not UTF-8 text") from None


def _connect_reason(exc: httpx.ConnectError) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate not accepted ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({cause.reason or type(cause).__name__})"
        cause = cause.__cause__ or cause.__context__
    return "could not connect"
