"""MTA-STS (RFC 8461): a recipient domain's published demand for verified TLS.

The policy's shape and the host-name match live here; fetching and caching are added
with `doctor dns` and direct delivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Mode = Literal["enforce", "testing", "none"]


@dataclass(frozen=True)
class StsPolicy:
    mode: Mode
    mx: tuple[str, ...]  # patterns: "mx.example.org" or "*.example.org" (one label)
    max_age: int  # seconds
    policy_id: str = ""  # the TXT record's id= when the policy was fetched

    def allows(self, host: str) -> bool:
        """Whether an MX host name matches one of the policy's patterns (RFC 8461 4.1)."""
        host = host.rstrip(".").lower()
        for pattern in self.mx:
            pattern = pattern.rstrip(".").lower()
            if pattern.startswith("*."):
                head, _, rest = host.partition(".")
                if head and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


class PolicySource(Protocol):
    async def policy(self, domain: str) -> StsPolicy | None:
        """The domain's policy in force (fetched or cached), or None when it publishes
        none. A fetch failure with nothing cached is None too (RFC 8461 section 5)."""
        ...
