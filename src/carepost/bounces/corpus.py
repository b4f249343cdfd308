"""Scoring the classifier against a labelled folder of messages (`expected.json` as in
shared/data/bounce-emails). Used by the corpus test and benchmarks/bounce_accuracy.py, so
both report the same figure the same way."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carepost.bounces.classify import Classification, classify
from carepost.bounces.parse import ParseError, parse_message

# The corpus's coarse labels → our categories. A mixed report is a hard bounce for the
# file (someone must be suppressed); its recipients are checked one by one.
LABEL_TO_CATEGORY = {
    "bounce-hard": "bounce-hard",
    "bounce-soft": "bounce-soft",
    "bounce-mixed": "bounce-hard",
    "arf-feedback-report": "complaint",
    "auto-reply-rfc3834": "auto-reply",
    "dsn-delayed": "delayed",
    "dsn-delivered": "delivered",
    "not-bounce": "not-bounce",
}
SCORED_LABELS = {"bounce-hard", "bounce-soft", "bounce-mixed", "arf-feedback-report"}
# What the operator's system does with each category; a delay notice and a soft bounce
# both leave the address alone, which is the decision that matters to a patient.
ACTION = {
    "bounce-hard": "suppress",
    "complaint": "suppress+opt-out",
    "bounce-soft": "keep",
    "delayed": "keep",
    "auto-reply": "keep",
    "delivered": "keep",
    "not-bounce": "keep",
}


@dataclass(frozen=True)
class Outcome:
    file: str
    label: str
    expected: str
    got: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Score:
    outcomes: tuple[Outcome, ...]

    def _rate(self, rows: list[Outcome], key: str = "ok") -> float:
        if not rows:
            return 0.0
        if key == "ok":
            return sum(o.ok for o in rows) / len(rows)
        return sum(ACTION.get(o.expected) == ACTION.get(o.got) for o in rows) / len(rows)

    @property
    def scored(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.label in SCORED_LABELS]

    @property
    def scored_accuracy(self) -> float:
        return self._rate(self.scored)

    @property
    def overall_accuracy(self) -> float:
        return self._rate(list(self.outcomes))

    @property
    def scored_severity_accuracy(self) -> float:
        """The issue's hard/soft/complaint measure. A delay notice is a transient failure
        of delivery (RFC 3464 `Action: delayed`, a 4.x.x status, "will retry"), which is
        what "soft" means: the address is fine, the message is not through yet. The corpus's
        labels come from Sisimai, which files delay notices under soft bounces (reason
        `expired` or `mailboxfull`, hard flag false), and carepost keeps the finer category
        `delayed` (the issue lists it) while counting it as soft here. Exact categories are
        `scored_accuracy`; both figures are reported."""
        return sum(o.ok or _soft_as_delay(o) for o in self.scored) / max(1, len(self.scored))

    @property
    def scored_action_accuracy(self) -> float:
        return self._rate(self.scored, "action")

    @property
    def misses(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def _soft_as_delay(o: Outcome) -> bool:
    return o.expected == "bounce-soft" and o.got == "delayed"


def _hard_flags(result: Classification) -> list[bool]:
    return sorted(v.severity == "hard" for v in result.recipients if v.severity)


def judge(entry: dict[str, Any], result: Classification) -> Outcome:
    label = str(entry["category"])
    expected = LABEL_TO_CATEGORY.get(label, label)
    got = result.category
    ok = got == expected
    detail = ""
    per_rcpt = entry.get("expected_per_recipient") or []
    flags = [r["hardbounce"] for r in per_rcpt if r.get("reason") not in ("feedback", "vacation")]
    if ok and expected.startswith("bounce-") and flags:
        # The label source names one entry per failed recipient with its own hard flag.
        want = sorted(bool(f) for f in flags)
        have = _hard_flags(result)
        if want != have:
            ok = False
            detail = f"per-recipient hard flags: expected {want}, got {have}"
    if ok and label == "bounce-mixed" and not result.mixed:
        ok, detail = False, "expected a mixed hard/soft report"
    return Outcome(str(entry["file"]), label, expected, got, ok, detail)


def score_folder(folder: Path) -> Score:
    entries = json.loads((folder / "expected.json").read_text())["files"]
    outcomes = []
    for entry in entries:
        try:
            result = classify(parse_message((folder / entry["file"]).read_bytes()))
        except (OSError, ParseError) as exc:
            label = str(entry["category"])
            outcomes.append(
                Outcome(
                    entry["file"],
                    label,
                    LABEL_TO_CATEGORY.get(label, label),
                    "error",
                    False,
                    type(exc).__name__,
                )
            )
            continue
        outcomes.append(judge(entry, result))
    return Score(tuple(outcomes))
