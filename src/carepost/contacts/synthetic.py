"""Deterministic synthetic contacts for the demo and benchmarks. Nothing real: names from
short lists, addresses on made-up streets, emails at example.org (RFC 2606)."""

from __future__ import annotations

import csv
import random
from datetime import date, timedelta
from pathlib import Path

GIVEN = [
    "Ava",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jamal",
    "Keiko",
    "Liam",
    "Maya",
    "Nadia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tess",
]
FAMILY = [
    "Abbott",
    "Baptiste",
    "Chen",
    "Diallo",
    "Evans",
    "Fischer",
    "Garcia",
    "Huang",
    "Ivanova",
    "Johnson",
    "Kowalski",
    "Lopez",
    "Mensah",
    "Nguyen",
    "Okafor",
    "Patel",
]
STATES = [
    ("MA", "021"),
    ("NH", "031"),
    ("NY", "100"),
    ("CA", "941"),
    ("TX", "733"),
    ("FL", "331"),
    ("WA", "981"),
    ("IL", "606"),
]
LANGS = ["en", "en", "en", "es", "zh", "vi", "fr"]
PLANS = ["commercial", "medicare", "medicaid", "self_pay"]
HEADER = [
    "external_id",
    "mrn",
    "first_name",
    "last_name",
    "email",
    "phone",
    "birth_date",
    "sex",
    "address_line1",
    "city",
    "state",
    "postal_code",
    "language",
    "insurance_type",
    "attr:preferred_channel",
]


def rows(count: int, seed: int = 7) -> list[list[str]]:
    rnd = random.Random(seed)
    epoch = date(1930, 1, 1)
    out = []
    for n in range(count):
        given, family = rnd.choice(GIVEN), rnd.choice(FAMILY)
        state, zip3 = rnd.choice(STATES)
        born = epoch + timedelta(days=rnd.randrange(0, 92 * 365))
        out.append(
            [
                f"P{n:07d}",
                f"MRN-{seed}-{n:07d}",
                given,
                family,
                f"{given.lower()}.{family.lower()}.{n}@example.org",
                f"617555{n % 10000:04d}",
                born.isoformat(),
                rnd.choice(["F", "M"]),
                f"{rnd.randrange(1, 999)} Synthetic Way",
                "Testville",
                state,
                f"{zip3}{rnd.randrange(0, 99):02d}",
                rnd.choice(LANGS),
                rnd.choice(PLANS),
                rnd.choice(["email", "sms"]),
            ]
        )
    return out


def write_csv(path: Path, count: int, seed: int = 7) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows(rows(count, seed))
    return path
