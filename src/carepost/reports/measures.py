"""The report's counting vocabulary (pure): a count per verdict population (`Tally`),
the opens and clicks of a set of messages (`Engagement`) and shares (`rate`).

A distinct count ("unique opens") of two populations cannot be added (one message may
have a human and a machine open), so the queries count five populations separately:
human, machine, unknown, without machine (human or unknown) and everything. The headline
is "without machine" unless machine events are included (the account setting
`tracking.exclude_machine_events` off, or `--include-machine`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def rate(numerator: int, denominator: int) -> float | None:
    """A share rounded to 4 places (0.1234 = 12.34%); None when nothing to divide by."""
    return round(numerator / denominator, 4) if denominator else None


@dataclass(frozen=True)
class Tally:
    """One count by verdict population. For distinct counts `without_machine` and
    `everything` are counted on their own (they are not sums of the others)."""

    human: int = 0
    machine: int = 0
    unknown: int = 0
    without_machine: int = 0
    everything: int = 0

    @classmethod
    def of_events(cls, human: int, machine: int, unknown: int) -> Tally:
        """Event counts (not distinct), where populations do add up."""
        return cls(human, machine, unknown, human + unknown, human + machine + unknown)

    def __add__(self, other: Tally) -> Tally:
        """Sum of two tallies over disjoint sets of messages (pooled domains, events of
        different hours): only then are distinct counts additive."""
        return Tally(
            self.human + other.human,
            self.machine + other.machine,
            self.unknown + other.unknown,
            self.without_machine + other.without_machine,
            self.everything + other.everything,
        )

    def headline(self, include_machine: bool) -> int:
        return self.everything if include_machine else self.without_machine

    def as_dict(self, include_machine: bool) -> dict[str, int]:
        return {
            "human": self.human,
            "machine": self.machine,
            "unknown": self.unknown,
            "headline": self.headline(include_machine),
        }


ZERO = Tally()


@dataclass(frozen=True)
class Engagement:
    """Opens and clicks of a set of messages. `opens_unique`: messages with an open or a
    click on a real link (a click implies the message was opened); `opens_total`: open
    events; `clicks_unique`: messages with a click on a real link; `clicks_total`: those
    click events. Honeypot hits and clicks on unknown link indexes are never in these."""

    opens_unique: Tally = ZERO
    opens_total: Tally = ZERO
    clicks_unique: Tally = ZERO
    clicks_total: Tally = ZERO

    def __add__(self, other: Engagement) -> Engagement:
        return Engagement(
            self.opens_unique + other.opens_unique,
            self.opens_total + other.opens_total,
            self.clicks_unique + other.clicks_unique,
            self.clicks_total + other.clicks_total,
        )

    def rates(self, delivered: int, include_machine: bool) -> dict[str, dict[str, float | None]]:
        """open rate = unique opens / delivered; click rate = unique clicks / delivered;
        click-to-open = unique clicks / unique opens; per population and the headline."""
        out: dict[str, dict[str, float | None]] = {}
        o = self.opens_unique.as_dict(include_machine)
        c = self.clicks_unique.as_dict(include_machine)
        for key in ("human", "machine", "unknown", "headline"):
            out[key] = {
                "open_rate": rate(o[key], delivered),
                "click_rate": rate(c[key], delivered),
                "click_to_open_rate": rate(c[key], o[key]),
            }
        return out

    def as_dict(self, delivered: int, include_machine: bool) -> dict[str, Any]:
        return {
            "opens_unique": self.opens_unique.as_dict(include_machine),
            "opens_total": self.opens_total.as_dict(include_machine),
            "clicks_unique": self.clicks_unique.as_dict(include_machine),
            "clicks_total": self.clicks_total.as_dict(include_machine),
            "rates": self.rates(delivered, include_machine),
        }


NONE = Engagement()
