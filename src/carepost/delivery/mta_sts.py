"""MTA-STS (RFC 8461): a recipient domain's published demand for verified TLS.

Pure: the policy's shape, the host-name match, and the two parsers (the `_mta-sts` TXT
record and the policy file). Fetching is `mta_sts_fetch.py`, the cache and the
`PolicySource` that direct delivery uses is `mta_sts_policies.py`.

Parse errors name the line (policy file) or the field (TXT record) and what was wrong with
it; they quote a field name or a fixed word of the syntax, never a whole line, so a
policy's text never ends up in a log through an exception.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Mode = Literal["enforce", "testing", "none"]
MODES: tuple[Mode, ...] = ("enforce", "testing", "none")
MAX_AGE_LIMIT = 31_557_600  # one year, RFC 8461 section 3.2

TXT_NAME_PREFIX = "_mta-sts."
POLICY_HOST_PREFIX = "mta-sts."
POLICY_PATH = "/.well-known/mta-sts.txt"


class StsRecordError(ValueError):
    """The `_mta-sts` TXT answer is not exactly one valid STSv1 record."""


class PolicyError(ValueError):
    """The policy file does not parse; the message names the line."""


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


def txt_name(domain: str) -> str:
    return TXT_NAME_PREFIX + domain.rstrip(".").lower()


def policy_url(domain: str) -> str:
    return f"https://{POLICY_HOST_PREFIX}{domain.rstrip('.').lower()}{POLICY_PATH}"


# --- the TXT record (RFC 8461 section 3.1) ---------------------------------------------
@dataclass(frozen=True)
class StsRecord:
    policy_id: str
    extensions: tuple[tuple[str, str], ...] = ()


_RECORD_START = re.compile(r"^v=STSv1[ \t]*(;|$)")
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_FIELD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_FIELD_VALUE = re.compile(r"^[\x21-\x3a\x3c\x3e-\x7e]+$")


def parse_txt_records(records: Sequence[str]) -> StsRecord | None:
    """The one STSv1 record among a name's TXT answers; None when there is none.

    Records that do not start with `v=STSv1` are someone else's and are skipped; more
    than one STSv1 record is an error (RFC 8461 3.1: the sender must then assume no
    policy), as is a record without a valid id."""
    ours = [r for r in records if _RECORD_START.match(r)]
    if not ours:
        return None
    if len(ours) > 1:
        raise StsRecordError(f"{len(ours)} TXT records start with v=STSv1; exactly one may")
    return parse_txt_record(ours[0])


def parse_txt_record(record: str) -> StsRecord:
    if not _RECORD_START.match(record):
        raise StsRecordError("the record must start with v=STSv1")
    fields = [f.strip(" \t") for f in record.split(";")][1:]
    if fields and fields[-1] == "":
        fields.pop()  # one trailing ";" is allowed
    policy_id: str | None = None
    extensions: list[tuple[str, str]] = []
    for pos, item in enumerate(fields, start=2):
        name, eq, value = item.partition("=")
        if not eq:
            raise StsRecordError(f"field {pos} has no '=' (expected name=value)")
        if name == "id":
            if policy_id is not None:
                raise StsRecordError("id= appears more than once")
            if not _ID.match(value):
                raise StsRecordError("id= must be 1 to 32 letters and digits")
            policy_id = value
        elif name == "v":
            raise StsRecordError("v= appears more than once")
        else:
            if not _FIELD_NAME.match(name):
                raise StsRecordError(f"field {pos} has an invalid name")
            if not _FIELD_VALUE.match(value):
                raise StsRecordError(f"field {pos} ({name}) has an invalid value")
            extensions.append((name, value))
    if policy_id is None:
        raise StsRecordError("the record has no id= field")
    return StsRecord(policy_id, tuple(extensions))


# --- the policy file (RFC 8461 section 3.2) --------------------------------------------
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_MX_PATTERN = re.compile(rf"^(\*\.)?(?:{_LABEL}\.)+{_LABEL}$")
_DIGITS = re.compile(r"^[0-9]{1,10}$")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


def parse_policy(text: str, *, policy_id: str = "") -> StsPolicy:
    """Parse a policy file. Lines end in CRLF or LF; blank lines are skipped; unknown
    keys are extensions and ignored (RFC 8461 3.2). version, mode and max_age must each
    appear exactly once; a repeated one makes the policy ambiguous and so invalid."""
    version: str | None = None
    mode: Mode | None = None
    max_age: int | None = None
    mx: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if "\r" in line:
            raise PolicyError(f"line {number}: a bare carriage return inside the line")
        if not line.strip(" \t"):
            continue
        key, colon, value = line.partition(":")
        key, value = key.strip(" \t"), value.strip(" \t")
        if not colon:
            raise PolicyError(f"line {number}: expected 'key: value'")
        if not _KEY.match(key):
            raise PolicyError(f"line {number}: invalid key")
        if key in ("version", "mode", "max_age"):
            if key in seen:
                raise PolicyError(f"line {number}: {key} repeats line {seen[key]}")
            seen[key] = number
        if key == "version":
            if value != "STSv1":
                raise PolicyError(f"line {number}: version must be STSv1")
            version = value
        elif key == "mode":
            if value not in MODES:
                raise PolicyError(f"line {number}: mode must be enforce, testing or none")
            mode = value
        elif key == "max_age":
            if not _DIGITS.match(value):
                raise PolicyError(f"line {number}: max_age must be a whole number of seconds")
            max_age = int(value)
            if max_age > MAX_AGE_LIMIT:
                raise PolicyError(f"line {number}: max_age is over {MAX_AGE_LIMIT} (one year)")
        elif key == "mx":
            pattern = value.lower().rstrip(".")
            if not _MX_PATTERN.match(pattern):
                raise PolicyError(
                    f"line {number}: mx must be a host name, optionally starting with '*.'"
                )
            mx.append(pattern)
    if version is None:
        raise PolicyError("the policy has no version line")
    if mode is None:
        raise PolicyError("the policy has no mode line")
    if max_age is None:
        raise PolicyError("the policy has no max_age line")
    if not mx and mode != "none":
        raise PolicyError(f"a policy in mode {mode} needs at least one mx line")
    return StsPolicy(mode=mode, mx=tuple(mx), max_age=max_age, policy_id=policy_id)
