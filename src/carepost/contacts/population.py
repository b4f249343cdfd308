"""`carepost demo-data`: a deterministic synthetic patient population with plausible
demographics, conditions, medications, labs, immunizations, visits, no-shows and email
engagement, written straight into the encrypted store (ContactWriter) and the event table.

Nothing is real: names from short lists, streets made up, emails at example.org. The same
seed and `as_of` date always give the same population (ids and ciphertexts differ: they
are random by design). Conditions are coded ICD-10-CM, medications RxNorm, labs LOINC,
vaccines CVX.

Figures and their sources (all US):
- Age pyramid: US Census Bureau, 2020 Census Demographic Profile (DP1), share of the
  population by 5-year age group (`AGE_BANDS`).
- Sex: 50.5% female (Census 2020). State weights: Census 2020 apportionment population
  for the states listed. Language spoken at home: ACS 2019 (78% English only, 13% Spanish).
- Insurance: Census CPS ASEC 2022 (P-278): 65+ almost all Medicare; under 65 about 55%
  employer/commercial, 20% Medicaid, 9% uninsured (self pay), the rest other.
- Hypertension 7.5% (18-39), 33.2% (40-59), 63.1% (60+), about 29-30% of adults:
  NCHS Data Brief 289 (2017).
- Diabetes (diagnosed and undiagnosed) 4.2% (18-44), 17.5% (45-64), 26.8% (65+), about
  11% overall: CDC National Diabetes Statistics Report 2020. About 5% of diabetes is type 1.
- Asthma, current, about 8% of children and adults: CDC Most Recent National Asthma Data
  (2019: 7.7% adults, 5.8% children; we use 8%).
- High cholesterol (treated or total >= 240): 7.8% (20-39), 17.1% (40-59), 11.9% (60+),
  raised here to include treated hyperlipidemia: NCHS Data Brief 290 (2017).
- COPD 3.2% (18-44), 7.5% (45-64), 11.7% (65+): CDC MMWR 2012;61(46) / BRFSS.
- Obesity 40.0% (20-39), 44.8% (40-59), 42.8% (60+): NCHS Data Brief 360 (2020).
- Depression (2-week prevalence) 8.1% of adults: NCHS Data Brief 303 (2018).
- Medications follow the conditions (first-line therapy per ADA/ACC/AHA/GINA
  guidance, shares chosen to be plausible, not sourced): metformin for most type 2
  diabetes, insulin for type 1 and a quarter of type 2; lisinopril, amlodipine or
  hydrochlorothiazide for hypertension; albuterol for asthma; statins for hyperlipidemia;
  sertraline for depression.
- HbA1c (LOINC 4548-4): diabetics mean 7.4% (SD 1.3), NHANES-based glycemic control
  studies (about half of diabetics above 7%); screened non-diabetics mean 5.4% (SD 0.35).
- Seasonal influenza vaccination by age (CDC FluVaxView 2022-23 season): 57% (6m-17y),
  35% (18-49), 47% (50-64), 70% (65+); given September to December.
- Visits: about 84% of adults see a health professional in a year (NCHS, Health United
  States); visit counts Poisson with more visits for chronic conditions.
- Appointment no-shows: about 23% on average across studies (Dantas et al., Health
  Policy 2018 systematic review); per-contact propensity varies.
- Email engagement: machine (privacy-proxy) opens about half of all opens, since Apple
  Mail Privacy Protection (Apple Mail ~ 55-60% of opens, Litmus Email Client Market Share
  2023); click-to-open about 10-15% of human opens (Mailchimp benchmarks).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.contacts.record import RECORD_VERSION, Record
from carepost.contacts.store import ContactInput, ContactWriter, FactInput
from carepost.crypto.keyring import KeyRing
from carepost.tracking.service import record_events

AGE_BANDS = [  # (from, to, % of population) Census 2020 DP1
    (0, 4, 5.7),
    (5, 9, 6.0),
    (10, 14, 6.4),
    (15, 19, 6.6),
    (20, 24, 6.4),
    (25, 29, 6.7),
    (30, 34, 6.9),
    (35, 39, 6.6),
    (40, 44, 6.3),
    (45, 49, 6.0),
    (50, 54, 6.3),
    (55, 59, 6.5),
    (60, 64, 6.4),
    (65, 69, 5.5),
    (70, 74, 4.4),
    (75, 79, 2.9),
    (80, 84, 1.9),
    (85, 99, 1.9),
]
STATES = [  # (state, weight in millions, zip3 prefixes, city)
    ("CA", 39.5, ("900", "941", "958"), "Los Angeles"),
    ("TX", 29.1, ("733", "750", "770"), "Houston"),
    ("FL", 21.5, ("331", "322", "336"), "Miami"),
    ("NY", 20.2, ("100", "112", "142"), "New York"),
    ("PA", 13.0, ("191", "152"), "Philadelphia"),
    ("IL", 12.8, ("606", "600"), "Chicago"),
    ("OH", 11.8, ("432", "441"), "Columbus"),
    ("MA", 7.0, ("021", "016"), "Boston"),
    ("WA", 7.7, ("981", "992"), "Seattle"),
    ("NH", 1.4, ("031", "038"), "Manchester"),
]
LANGUAGES = [("en", 78.0), ("es", 13.0), ("zh", 1.1), ("vi", 0.5), ("fr", 0.4), ("ar", 0.4)]
GIVEN_F = ["Ava", "Chloe", "Elena", "Grace", "Ines", "Keiko", "Maya", "Nadia", "Priya", "Rosa"]
GIVEN_M = ["Ben", "Dev", "Farid", "Hiro", "Jamal", "Liam", "Omar", "Quinn", "Sam", "Theo"]
FAMILY = [
    "Abbott",
    "Baptiste",
    "Chen",
    "Diallo",
    "Evans",
    "Garcia",
    "Huang",
    "Johnson",
    "Kowalski",
    "Lopez",
    "Mensah",
    "Nguyen",
    "Okafor",
    "Patel",
    "Smith",
    "Williams",
]
PLANS = ["gold", "silver", "bronze"]

ICD = "ICD-10-CM"
CONDITIONS = {  # name: (ICD-10-CM code, display)
    "hypertension": ("I10", "Essential (primary) hypertension"),
    "diabetes2": ("E11.9", "Type 2 diabetes mellitus without complications"),
    "diabetes2h": ("E11.65", "Type 2 diabetes mellitus with hyperglycemia"),
    "diabetes1": ("E10.9", "Type 1 diabetes mellitus without complications"),
    "asthma": ("J45.909", "Unspecified asthma, uncomplicated"),
    "hyperlipidemia": ("E78.5", "Hyperlipidemia, unspecified"),
    "copd": ("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
    "obesity": ("E66.9", "Obesity, unspecified"),
    "depression": ("F32.9", "Major depressive disorder, single episode, unspecified"),
}
MEDS = {  # RxNorm SCD
    "metformin": ("860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet"),
    "insulin": ("106892", "insulin isophane, human 70 UNT/ML / insulin, regular, human 30 UNT/ML"),
    "lisinopril": ("314076", "lisinopril 10 MG Oral Tablet"),
    "amlodipine": ("197361", "amlodipine 5 MG Oral Tablet"),
    "hctz": ("310798", "hydrochlorothiazide 25 MG Oral Tablet"),
    "albuterol": ("745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"),
    "atorvastatin": ("617312", "atorvastatin 20 MG Oral Tablet"),
    "simvastatin": ("312961", "simvastatin 20 MG Oral Tablet"),
    "sertraline": ("312940", "sertraline 50 MG Oral Tablet"),
}
FLU_CVX = [
    ("158", "influenza, injectable, quadrivalent"),
    ("150", "Influenza, injectable, quadrivalent, preservative free"),
    ("197", "influenza, high-dose, quadrivalent"),
]
HBA1C = ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood")
CHECKUP = ("185349003", "Encounter for check up (procedure)")
CAMPAIGNS = [
    "newsletter-2026-07",
    "newsletter-2026-08",
    "flu-shot-reminder",
    "newsletter-2026-10",
    "diabetes-education",
    "newsletter-2026-11",
]


def _weighted(items: list[Any], weights: list[float]) -> Callable[[random.Random], Any]:
    cum: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        cum.append(total)

    def pick(rnd: random.Random) -> Any:
        return items[bisect.bisect_right(cum, rnd.random() * total)]

    return pick


_pick_band = _weighted(AGE_BANDS, [b[2] for b in AGE_BANDS])
_pick_state = _weighted(STATES, [s[1] for s in STATES])
_pick_lang = _weighted([lang for lang, _ in LANGUAGES], [w for _, w in LANGUAGES])


def _band(age: int, young: float, mid: float, old: float, cut1: int, cut2: int) -> float:
    return young if age < cut1 else (mid if age < cut2 else old)


def _flu_rate(age: int) -> float:
    if age < 18:
        return 0.57
    return 0.35 if age < 50 else (0.47 if age < 65 else 0.70)


def _poisson(rnd: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, rnd.random()
    while p > limit:
        k += 1
        p *= rnd.random()
    return k


def _coded(system: str, code: str, display: str) -> dict[str, Any]:
    coding = {"system": system, "code": code, "display": display}
    return {"code": coding, "codes": [coding]}


@dataclass
class Person:
    source_key: str
    record: Record
    lookups: list[tuple[str, str]]
    facts: list[tuple[str, str, Record]] = field(default_factory=list)  # (key, kind, payload)
    events: list[tuple[str, str | None, str, datetime]] = field(default_factory=list)


def person(n: int, rnd: random.Random, seed: int, as_of: date) -> Person:
    lo, hi, _ = _pick_band(rnd)
    age = rnd.randint(lo, hi)
    born = date(as_of.year - age - 1, 1, 1) + timedelta(days=rnd.randrange(365))
    female = rnd.random() < 0.505
    given = rnd.choice(GIVEN_F if female else GIVEN_M)
    family = rnd.choice(FAMILY)
    state, _, zips, city = _pick_state(rnd)
    if age >= 65:
        insurance = "medicare" if rnd.random() < 0.94 else "commercial"
    else:
        r = rnd.random()
        insurance = (
            "commercial"
            if r < 0.55
            else "medicaid"
            if r < 0.75
            else "self_pay"
            if r < 0.84
            else "other"
        )
    email = f"{given.lower()}.{family.lower()}.{seed}.{n}@example.org"
    record: Record = {
        "v": RECORD_VERSION,
        "name": {"given": [given], "family": family},
        "emails": [email],
        "sex": "female" if female else "male",
        "address": {
            "lines": [f"{rnd.randrange(1, 999)} Synthetic Way"],
            "city": city,
            "state": state,
            "postal_code": f"{rnd.choice(zips)}{rnd.randrange(100):02d}",
            "country": "US",
        },
        "language": _pick_lang(rnd),
        "insurance_type": insurance,
        "attributes": {
            "plan": rnd.choice(PLANS),
            "preferred_channel": rnd.choice(["email", "sms"]),
        },
    }
    if rnd.random() >= 0.03:  # 3% of records have no date of birth
        record["birth_date"] = born.isoformat()
    p = Person(f"demo:{seed}:{n}", record, [("email", email)])
    key = p.source_key
    k = 0

    def fact(kind: str, payload: Record) -> None:
        nonlocal k
        p.facts.append((f"{key}:{k}", kind, {"kind": kind, **payload}))
        k += 1

    def day_ago(days: int) -> str:
        return (as_of - timedelta(days=days)).isoformat()

    has: set[str] = set()
    if age >= 18:
        if rnd.random() < _band(age, 0.40, 0.448, 0.428, 40, 60):
            has.add("obesity")
        bump = 1.3 if "obesity" in has else 0.85
        if rnd.random() < _band(age, 0.075, 0.332, 0.631, 40, 60) * bump:
            has.add("hypertension")
        if rnd.random() < _band(age, 0.042, 0.175, 0.268, 45, 65) * bump:
            r = rnd.random()
            has.add("diabetes1" if r < 0.05 else ("diabetes2h" if r < 0.25 else "diabetes2"))
        if rnd.random() < _band(age, 0.09, 0.20, 0.17, 40, 60):
            has.add("hyperlipidemia")
        if rnd.random() < _band(age, 0.032, 0.075, 0.117, 45, 65):
            has.add("copd")
        if rnd.random() < 0.081:
            has.add("depression")
    if rnd.random() < 0.08:
        has.add("asthma")
    for name in sorted(has):
        code, display = CONDITIONS[name]
        onset = day_ago(rnd.randrange(60, 365 * 10))
        status = "active"
        payload: Record = {
            **_coded(ICD, code, display),
            "status": status,
            "date": onset,
            "onset": onset,
            "verification": "confirmed",
        }
        if name == "depression" and rnd.random() < 0.2:
            payload["status"] = "resolved"
            payload["abatement"] = day_ago(rnd.randrange(1, 59))
        fact("condition", payload)
    meds: list[str] = []
    diabetic = bool(has & {"diabetes1", "diabetes2", "diabetes2h"})
    if "diabetes1" in has:
        meds.append("insulin")
    elif diabetic:
        if rnd.random() < 0.80:
            meds.append("metformin")
        if rnd.random() < 0.25:
            meds.append("insulin")
    if "hypertension" in has and rnd.random() < 0.75:
        meds.append(rnd.choice(["lisinopril", "amlodipine", "hctz"]))
    if "asthma" in has and rnd.random() < 0.85:
        meds.append("albuterol")
    if "hyperlipidemia" in has and rnd.random() < 0.60:
        meds.append(rnd.choice(["atorvastatin", "simvastatin"]))
    if "depression" in has and rnd.random() < 0.50:
        meds.append("sertraline")
    for med in meds:
        code, display = MEDS[med]
        fact(
            "medication",
            {
                **_coded("RxNorm", code, display),
                "status": "active",
                "date": day_ago(rnd.randrange(30, 365 * 5)),
                "intent": "order",
            },
        )
    labs = 0
    if diabetic and rnd.random() < 0.9:
        labs = 2
        mean = 7.4
    elif age >= 45 and rnd.random() < 0.3:
        labs = 1
        mean = 5.4
    for j in range(labs):
        sd = 1.3 if diabetic else 0.35
        value = round(min(max(rnd.gauss(mean, sd), 4.0), 14.0), 1)
        fact(
            "observation",
            {
                **_coded("LOINC", *HBA1C),
                "status": "final",
                "date": day_ago(rnd.randrange(0, 180) + 180 * j),
                "value": value,
                "unit": "%",
                "category": "laboratory",
            },
        )
    for season in (0, 1):
        if rnd.random() < _flu_rate(age):
            start = date(as_of.year - season - (0 if as_of.month >= 9 else 1), 9, 1)
            given_on = start + timedelta(days=min(int(rnd.expovariate(1 / 30)), 121))
            if given_on <= as_of:
                code, display = FLU_CVX[2] if age >= 65 else rnd.choice(FLU_CVX[:2])
                fact(
                    "immunization",
                    {
                        **_coded("CVX", code, display),
                        "status": "completed",
                        "date": given_on.isoformat(),
                        "not_done": False,
                    },
                )
    chronic = len(has - {"obesity"})
    visit_rate = (0.9 + 0.7 * chronic) if rnd.random() < 0.84 else 0.15
    for _ in range(min(_poisson(rnd, visit_rate * 2), 8)):  # the last two years
        fact(
            "encounter",
            {
                **_coded("SNOMED-CT", *CHECKUP),
                "status": "finished",
                "date": day_ago(rnd.randrange(0, 730)),
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                    "display": "ambulatory",
                },
            },
        )
    no_show_p = min(rnd.betavariate(1.2, 4.0), 0.9)  # mean about 0.23
    for _ in range(_poisson(rnd, 0.8 + 0.3 * chronic)):
        noshow = rnd.random() < no_show_p
        fact(
            "appointment",
            {
                "code": None,
                "codes": [],
                "status": "noshow" if noshow else "fulfilled",
                "date": day_ago(rnd.randrange(1, 365)),
                "no_show": noshow,
            },
        )
    if rnd.random() < 0.25:
        fact(
            "appointment",
            {
                "code": None,
                "codes": [],
                "status": "booked",
                "date": (as_of + timedelta(days=rnd.randrange(1, 60))).isoformat(),
                "no_show": False,
            },
        )
    # Email engagement over the last six months: about half of opens are machine opens.
    base = datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC)
    engaged = rnd.random() < 0.6
    for _ in range(_poisson(rnd, 2.5) if engaged else 0):
        when = base - timedelta(seconds=rnd.randrange(1, 180 * 86400))
        campaign = rnd.choice(CAMPAIGNS)
        machine = rnd.random() < 0.5
        p.events.append(("open", campaign, "machine" if machine else "human", when))
        if not machine and rnd.random() < 0.13:
            p.events.append(
                ("click", campaign, "human", when + timedelta(seconds=rnd.randrange(5, 600)))
            )
    if rnd.random() < 0.02:
        p.events.append(
            (
                "form_submitted",
                "flu-consent",
                "human",
                base - timedelta(seconds=rnd.randrange(1, 90 * 86400)),
            )
        )
    if rnd.random() < 0.03:
        p.events.append(
            (
                "api_event",
                "portal_login",
                "unknown",
                base - timedelta(seconds=rnd.randrange(1, 90 * 86400)),
            )
        )
    return p


def people(count: int, seed: int, as_of: date) -> Iterator[Person]:
    rnd = random.Random(seed)
    for n in range(count):
        yield person(n, rnd, seed, as_of)


@dataclass
class PopulationSummary:
    contacts: dict[str, int]
    facts: dict[str, int]
    events: int

    def as_dict(self) -> dict[str, object]:
        return {"contacts": self.contacts, "facts": self.facts, "events": self.events}


def write_population(
    session: Session,
    ring: KeyRing,
    *,
    contacts: int,
    seed: int,
    as_of: date,
    actor: Actor,
    now: datetime,
    batch_size: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> PopulationSummary:
    """Generate and write. Re-running with the same seed and as_of changes nothing
    (contacts and facts upsert by source key; events are written for new contacts only)."""
    writer = ContactWriter(session, ring, now=now, source="demo", batch_size=batch_size)
    events_written = 0
    batch: list[Person] = []

    def flush() -> None:
        nonlocal events_written
        inputs = [
            ContactInput(p.source_key, p.record, p.lookups, resource_type="Contact") for p in batch
        ]
        outcomes = writer.upsert_contacts(inputs)
        facts: list[FactInput] = []
        events: list[tuple[str, str | None, str, str | None, str, str | None, datetime]] = []
        for p, outcome in zip(batch, outcomes, strict=True):
            if outcome.contact_id is None:
                continue
            cid = outcome.contact_id
            facts += [
                FactInput(cid, kind, fkey, payload, "Fact") for fkey, kind, payload in p.facts
            ]
            if outcome.status == "created":
                events += [
                    (cid, None, kind, name, verdict, None, at)
                    for kind, name, verdict, at in p.events
                ]
        writer.upsert_facts(facts)
        events_written += record_events(session, events)
        if progress:
            progress(len(batch))
        batch.clear()

    for p in people(contacts, seed, as_of):
        batch.append(p)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    counts = writer.counts.by_type
    summary = PopulationSummary(counts.get("Contact", {}), counts.get("Fact", {}), events_written)
    audit.append(
        session,
        actor=actor,
        action="contacts.demo_data_generated",
        details={"seed": seed, "as_of": as_of.isoformat(), **summary.as_dict()},
    )
    return summary
