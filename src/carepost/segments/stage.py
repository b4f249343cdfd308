"""Care-journey stage: a pure, configurable classification of a contact at time `at`
from their encounters (visits) and appointments.

The rules, applied in order (the first that holds wins), with the defaults of
`StageRules`:

1. ``prospect`` - no visit on or before `at` and no booked appointment coming up.
2. ``new``      - the first visit was within the last `new_days` (90) days, or there is
   no visit yet but an appointment is booked within the next `upcoming_days` (90).
3. ``at_risk``  - `at_risk_no_shows` (2) or more no-shows within the last
   `no_show_window_days` (365) days.
4. ``active``   - the last visit was within `active_days` (365), or an appointment is
   booked within the next `upcoming_days`.
5. ``overdue``  - the last visit was within `lapsed_days` (730) but not `active_days`.
6. ``lapsed``   - the last visit was longer ago than `lapsed_days`.

A visit is an encounter whose status is not planned, cancelled or entered-in-error, dated
on or before `at`. "Within N days" means `at - N days <= t <= at`, to the second; an
upcoming appointment has status booked or pending and `at < t <= at + upcoming_days`.

`classify` decides one contact from plain lists (what the oracle and `explain` use);
`classify_arrays` decides every contact of a snapshot at once with numpy. They implement
the same rules and the oracle tests hold them to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

STAGES = ("prospect", "new", "at_risk", "active", "overdue", "lapsed")
NOT_A_VISIT = frozenset({"planned", "cancelled", "entered-in-error"})
BOOKED = frozenset({"booked", "pending"})
DAY = 86_400

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class StageRules:
    new_days: int = 90
    active_days: int = 365
    lapsed_days: int = 730
    at_risk_no_shows: int = 2
    no_show_window_days: int = 365
    upcoming_days: int = 90

    def __post_init__(self) -> None:
        if self.new_days < 0 or not 0 <= self.active_days <= self.lapsed_days:
            raise ValueError("stage rules need new_days >= 0 and active_days <= lapsed_days")
        if self.at_risk_no_shows < 1:
            raise ValueError("at_risk_no_shows must be at least 1")


DEFAULT_RULES = StageRules()


def is_visit(status: str | None) -> bool:
    return status not in NOT_A_VISIT


def classify(
    visits: Iterable[int],
    appointments: Iterable[tuple[int, str | None, bool]],
    at: int,
    rules: StageRules = DEFAULT_RULES,
) -> str:
    """One contact. `visits`: epoch seconds of visit encounters (any dates; future ones
    are ignored). `appointments`: (epoch seconds, status, no_show)."""
    past = [t for t in visits if t <= at]
    appts = list(appointments)
    upcoming = any(s in BOOKED and at < t <= at + rules.upcoming_days * DAY for t, s, _ in appts)
    no_shows = sum(
        1 for t, _, ns in appts if ns and at - rules.no_show_window_days * DAY <= t <= at
    )
    if not past:
        return "new" if upcoming else "prospect"
    if min(past) >= at - rules.new_days * DAY:
        return "new"
    if no_shows >= rules.at_risk_no_shows:
        return "at_risk"
    last = max(past)
    if last >= at - rules.active_days * DAY or upcoming:
        return "active"
    if last >= at - rules.lapsed_days * DAY:
        return "overdue"
    return "lapsed"


def classify_arrays(
    n: int,
    visit_row: I32,
    visit_t: I64,
    appt_row: I32,
    appt_t: I64,
    appt_booked: B,
    appt_no_show: B,
    at: int,
    rules: StageRules = DEFAULT_RULES,
) -> npt.NDArray[np.int8]:
    """Every contact at once: index into STAGES per contact row (0..n-1). Visit arrays
    hold visit encounters only (status already filtered with `is_visit`)."""
    past = visit_t <= at
    rows, ts = visit_row[past], visit_t[past]
    lo = np.iinfo(np.int64).min
    hi = np.iinfo(np.int64).max
    first = np.full(n, hi, dtype=np.int64)
    last = np.full(n, lo, dtype=np.int64)
    np.minimum.at(first, rows, ts)
    np.maximum.at(last, rows, ts)
    has_visit = last != lo
    up = appt_booked & (appt_t > at) & (appt_t <= at + rules.upcoming_days * DAY)
    upcoming = np.zeros(n, dtype=bool)
    upcoming[appt_row[up]] = True
    ns = appt_no_show & (appt_t >= at - rules.no_show_window_days * DAY) & (appt_t <= at)
    no_shows = np.bincount(appt_row[ns], minlength=n)
    out = np.full(n, STAGES.index("lapsed"), dtype=np.int8)
    overdue = has_visit & (last >= at - rules.lapsed_days * DAY)
    out[overdue] = STAGES.index("overdue")
    active = has_visit & ((last >= at - rules.active_days * DAY) | upcoming)
    out[active] = STAGES.index("active")
    out[has_visit & (no_shows >= rules.at_risk_no_shows)] = STAGES.index("at_risk")
    out[has_visit & (first >= at - rules.new_days * DAY)] = STAGES.index("new")
    out[~has_visit] = STAGES.index("prospect")
    out[~has_visit & upcoming] = STAGES.index("new")
    return out
