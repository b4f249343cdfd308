"""Per-message data: what may be given, and how it is sealed (pure but for the cipher).

Only keys the template declares as `data_<name>` fields may be given, and every one of
them must be (minimum necessary: a template cannot receive a value it does not print,
and a message cannot go out with a hole). Problems name the key, never the value: the
value is PHI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carepost.crypto.envelope import aad, open_sealed, seal

DataValue = str | int | float | bool | None
PREFIX = "data_"
MAX_VALUE_CHARS = 4096
MAX_KEYS = 64


class DataRejected(ValueError):
    """The data does not fit the template. `problems` are (key, what is wrong)."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"data.{key}: {what}" for key, what in self.problems))


def declared_keys(phi_fields: Sequence[str]) -> tuple[str, ...]:
    """The data keys a template takes: its `data_<name>` fields, without the prefix."""
    return tuple(f.removeprefix(PREFIX) for f in phi_fields if f.startswith(PREFIX))


def check_data(declared: Sequence[str], data: Mapping[str, Any]) -> dict[str, DataValue]:
    """The data as it will be stored, or DataRejected listing every problem in key order
    (undeclared keys, wrong types, over-long values, then missing keys)."""
    problems: list[tuple[str, str]] = []
    wanted = set(declared)
    if len(data) > MAX_KEYS:
        problems.append(("", f"at most {MAX_KEYS} keys"))
    for key in sorted(data, key=str):
        value = data[key]
        shown = str(key)[:64]
        if key not in wanted:
            expected = ", ".join(sorted(wanted)) or "none"
            problems.append((shown, f"not declared by the template (it takes: {expected})"))
        elif value is not None and not isinstance(value, str | int | float | bool):
            problems.append((shown, "must be a string, number, boolean or null"))
        elif isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            problems.append((shown, f"longer than {MAX_VALUE_CHARS} characters"))
    for key in sorted(wanted - set(data)):
        problems.append((key, "missing: the template declares it"))
    if problems:
        raise DataRejected(problems)
    return {key: data[key] for key in sorted(data)}


def data_aad(outbox_id: str, dek_version: int) -> bytes:
    return aad("message_data", "body", outbox_id, dek_version)


def seal_data(
    cipher: AESGCM, outbox_id: str, dek_version: int, values: Mapping[str, DataValue]
) -> bytes:
    return seal(cipher, orjson.dumps(dict(values)), data_aad(outbox_id, dek_version))


def open_data(cipher: AESGCM, outbox_id: str, dek_version: int, blob: bytes) -> dict[str, Any]:
    """Called only by contacts/phi.py (the audited door)."""
    values: dict[str, Any] = orjson.loads(
        open_sealed(cipher, blob, data_aad(outbox_id, dek_version))
    )
    return values
