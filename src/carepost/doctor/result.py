"""What a check says: a status, a one-line summary, details, and what to publish instead.

`ok` passes; `warn` works but is weak or unverified; `fail` is wrong and hurts delivery or
lets others send as the domain; `error` means the check could not run (a DNS failure), which
says nothing about the record itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail", "error"]
_RANK: dict[Status, int] = {"ok": 0, "warn": 1, "error": 2, "fail": 3}


@dataclass(frozen=True)
class Failed:
    """A lookup that failed (timeout, SERVFAIL): not the same as "no such record"."""

    reason: str


# A TXT answer: the records, or the failure.
Txt = Sequence[str] | Failed
TxtAnswers = Mapping[str, Txt]


@dataclass(frozen=True)
class Check:
    name: str  # spf, dkim, dmarc, alignment, mx, mta-sts
    domain: str  # the name the check is about
    status: Status
    summary: str
    details: tuple[str, ...] = ()
    fix: str = ""  # what to publish instead, in plain words

    def as_dict(self) -> dict[str, object]:
        return {
            "check": self.name,
            "domain": self.domain,
            "status": self.status,
            "summary": self.summary,
            "details": list(self.details),
            "fix": self.fix,
        }


def worst(statuses: Iterable[Status]) -> Status:
    found: Status = "ok"
    for s in statuses:
        if _RANK[s] > _RANK[found]:
            found = s
    return found


def exit_code(checks: Iterable[Check]) -> int:
    """1 when anything fails, else 2 when something could not be checked, else 0."""
    statuses = {c.status for c in checks}
    if "fail" in statuses:
        return 1
    return 2 if "error" in statuses else 0


def parse_tags(text: str) -> dict[str, str]:
    """A DKIM/DMARC tag list (RFC 6376 3.2): `tag=value; ...`, whitespace around tags
    and `=` ignored, an empty last entry allowed. Raises ValueError naming the tag."""
    tags: dict[str, str] = {}
    for pos, item in enumerate(text.split(";"), start=1):
        item = item.strip(" \t\r\n")
        if not item:
            continue
        name, eq, value = item.partition("=")
        name = name.strip(" \t\r\n")
        if not eq or not name:
            raise ValueError(f"entry {pos} is not tag=value")
        if not name.replace("_", "").isalnum() or not name[0].isalpha():
            raise ValueError(f"entry {pos} has an invalid tag name")
        if name in tags:
            raise ValueError(f"tag {name}= appears twice")
        tags[name] = value.strip(" \t\r\n")
    return tags


# Public suffixes of two labels common enough to matter for the organizational-domain
# guess (RFC 7489 3.2 wants the Public Suffix List, which carepost does not ship).
_TWO_LABEL_SUFFIXES = frozenset(
    """co.uk org.uk ac.uk gov.uk nhs.uk com.au net.au org.au co.nz org.nz co.jp co.in
    com.br com.mx co.za com.cn com.sg com.hk co.il""".split()
)


def org_domain(domain: str) -> str:
    """The organizational domain, approximated: the registrable name under a public
    suffix of one label, or of two for a short list of common country suffixes."""
    labels = domain.rstrip(".").lower().split(".")
    keep = 3 if ".".join(labels[-2:]) in _TWO_LABEL_SUFFIXES else 2
    return ".".join(labels[-keep:])
