"""Named groups of codes, so a rule says `has_condition("diabetes")` and matches
ICD-10-CM-coded data (the generator, most EHR exports) and SNOMED CT-coded data
(Synthea's FHIR) alike.

Sources:
- ICD-10-CM categories: CMS/NCHS ICD-10-CM tabular list (FY2024). Prefixes match a
  category and everything under it (E11 matches E11.9, E11.65).
- SNOMED CT concepts: SNOMED International browser (US edition); the lists include the
  concepts Synthea uses for each disease (e.g. 44054006 "Diabetes mellitus type 2",
  38341003 "Hypertensive disorder", 59621000 "Essential hypertension").
- Vaccine groups: CDC CVX "Vaccine Group" mapping (IIS code set, "vax2vg"), e.g.
  influenza = every CVX code the CDC maps to the FLU vaccine group.
- Medication groups: RxNorm clinical drugs (SCD) from NLM RxNav for the ingredients named.

A code that is not a group name matches by itself: for conditions an ICD-10 code is a
prefix (dots ignored) and any other code must match exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class CodeGroup:
    name: str
    description: str
    icd10_prefixes: tuple[str, ...] = ()
    exact: frozenset[str] = frozenset()  # SNOMED CT, CVX or RxNorm codes


CONDITION_GROUPS: dict[str, CodeGroup] = {
    g.name: g
    for g in (
        CodeGroup(
            "diabetes",
            "Diabetes mellitus (type 1, type 2, other specified); not prediabetes",
            ("E08", "E09", "E10", "E11", "E13"),
            frozenset({"73211009", "44054006", "46635009", "190330002", "313436004"}),
        ),
        CodeGroup(
            "hypertension",
            "Hypertensive diseases",
            ("I10", "I11", "I12", "I13", "I15", "I16"),
            frozenset({"38341003", "59621000", "1201005", "429457004"}),
        ),
        CodeGroup(
            "asthma",
            "Asthma",
            ("J45",),
            frozenset({"195967001", "233678006", "426656000", "389145006"}),
        ),
        CodeGroup(
            "hyperlipidemia",
            "Disorders of lipoprotein metabolism (hyperlipidemia, hypercholesterolemia)",
            ("E78",),
            frozenset({"55822004", "13644009", "267432004"}),
        ),
        CodeGroup(
            "copd",
            "Chronic obstructive pulmonary disease, emphysema, chronic bronchitis",
            ("J41", "J42", "J43", "J44"),
            frozenset({"13645005", "185086009", "87433001", "195951007"}),
        ),
        CodeGroup(
            "obesity",
            "Obesity",
            ("E66",),
            frozenset({"414916001", "162864005", "408512008", "238136002"}),
        ),
        CodeGroup(
            "depression",
            "Depressive episode and major depressive disorder",
            ("F32", "F33"),
            frozenset({"35489007", "370143000", "36923009"}),
        ),
        CodeGroup(
            "ckd",
            "Chronic kidney disease",
            ("N18",),
            frozenset(
                {"709044004", "431855005", "431856006", "433144002", "431857002", "46177005"}
            ),
        ),
        CodeGroup(
            "heart_failure",
            "Heart failure",
            ("I50",),
            frozenset({"84114007", "88805009", "42343007"}),
        ),
        CodeGroup(
            "prediabetes",
            "Prediabetes (abnormal glucose)",
            ("R73.03", "R73.09"),
            frozenset({"15777000", "714628002"}),
        ),
    )
}

VACCINE_GROUPS: dict[str, CodeGroup] = {
    g.name: g
    for g in (
        CodeGroup(
            "influenza",
            "Seasonal influenza (CDC vaccine group FLU)",
            exact=frozenset(
                "15 16 88 111 125 126 127 128 135 140 141 144 149 150 151 153 155 158 161 "
                "166 168 171 185 186 194 197 200 201 202 205 231 320".split()
            ),
        ),
        CodeGroup(
            "covid19",
            "COVID-19 (CDC vaccine group COVID-19)",
            exact=frozenset(
                "207 208 210 211 212 213 217 218 219 221 225 226 227 228 229 230 300 301 "
                "302 309 310 311 312 313".split()
            ),
        ),
        CodeGroup(
            "pneumococcal",
            "Pneumococcal (CDC vaccine group PNEUMOCOCCAL)",
            exact=frozenset("33 100 109 133 152 215 216".split()),
        ),
        CodeGroup(
            "zoster",
            "Herpes zoster (CDC vaccine group ZOSTER)",
            exact=frozenset("121 187 188".split()),
        ),
        CodeGroup(
            "tdap",
            "Tetanus and diphtheria containing (CDC vaccine groups Td/DTAP)",
            exact=frozenset("09 113 115 138 139 196 20 106 107 110 120 130 146".split()),
        ),
        CodeGroup(
            "hpv",
            "Human papillomavirus (CDC vaccine group HPV)",
            exact=frozenset("62 118 137 165".split()),
        ),
    )
}

MEDICATION_GROUPS: dict[str, CodeGroup] = {
    g.name: g
    for g in (
        CodeGroup("metformin", "Metformin", exact=frozenset({"860975", "861007", "860981"})),
        CodeGroup("insulin", "Insulin", exact=frozenset({"106892", "311041", "1373463"})),
        CodeGroup(
            "statin",
            "HMG-CoA reductase inhibitors",
            exact=frozenset({"617312", "259255", "312961", "314231", "859749"}),
        ),
        CodeGroup(
            "antihypertensive",
            "ACE inhibitors, calcium channel blockers, thiazides",
            exact=frozenset({"314076", "197361", "310798", "308136"}),
        ),
        CodeGroup(
            "albuterol", "Albuterol inhalers", exact=frozenset({"745679", "2123111", "745752"})
        ),
        CodeGroup(
            "ssri", "Selective serotonin reuptake inhibitors", exact=frozenset({"312940", "310385"})
        ),
    )
}


def _norm(code: str) -> str:
    return code.replace(".", "").upper()


ICD10_SYSTEMS = ("ICD-10-CM", "ICD-10")


def code_matcher(
    arg: str, groups: dict[str, CodeGroup], *, icd10_prefix: bool
) -> Callable[[str | None, str], bool]:
    """A predicate on (system, code) for a rule argument: a group name or a code."""
    group = groups.get(arg.casefold())
    if group is not None:
        prefixes = tuple(_norm(p) for p in group.icd10_prefixes)
        exact = group.exact

        def in_group(system: str | None, code: str) -> bool:
            if system in ICD10_SYSTEMS:
                return _norm(code).startswith(prefixes) if prefixes else False
            return code in exact

        return in_group
    wanted = _norm(arg)

    def by_code(system: str | None, code: str) -> bool:
        if icd10_prefix and system in ICD10_SYSTEMS:
            return _norm(code).startswith(wanted)
        return code == arg

    return by_code


def matches(
    arg: str, groups: dict[str, CodeGroup], system: str | None, code: str, *, icd10_prefix: bool
) -> bool:
    fn = code_matcher(arg, groups, icd10_prefix=icd10_prefix)
    return fn(system, code)
