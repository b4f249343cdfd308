"""The recent clicks of each message, as this process saw them: what the classifier compares
a click with to see a burst (every link of a message clicked within a second, as link
scanners do), and which earlier clicks a burst turns into machine clicks after the fact.

Pure: no I/O and no clock (times come with the events). Bounded: only clicks within the
classifier's burst window of a message's newest click are kept, at most `max_per_message`
a message and `max_messages` messages (least recently clicked dropped first), so a flood
cannot grow it. Opens and honeypot clicks never join it: a burst means every real link.

A click's verdict is final for its response (the redirect is the same either way), but
not for the stored row: when a later click reveals the burst, `judge` re-classifies the
earlier clicks of that message and returns those that changed, for the caller to correct
in the batch it is about to write, or with an UPDATE when they are already stored.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from carepost.tracking.classifier import Event, Knowledge, Verdict, classify


@dataclass(slots=True)
class Seen:
    """One click in the window: the classifier's input, its current verdict, and where its
    row is: committed already (`stored`) or at index `row` of the batch being written."""

    message_id: str
    event: Event
    verdict: Verdict
    stored: bool
    row: int


class BurstWindow:
    def __init__(
        self, knowledge: Knowledge, *, max_messages: int = 50_000, max_per_message: int = 64
    ) -> None:
        self.knowledge = knowledge
        self.max_messages = max_messages
        self.max_per_message = max_per_message
        self._clicks: OrderedDict[str, list[Seen]] = OrderedDict()
        self._pending: list[Seen] = []
        self._newest: datetime | None = None

    def __len__(self) -> int:
        return sum(len(seen) for seen in self._clicks.values())

    def judge(self, message_id: str, event: Event, row: int) -> tuple[Verdict, list[Seen]]:
        """The event's verdict against the message's recent clicks, and the earlier clicks
        whose verdict it changed (already updated in place). A real-link click joins the
        window as pending, at batch row `row`."""
        recent = self._recent(message_id, event.at)
        others = [seen.event for seen in recent]
        verdict = classify(event, others, self.knowledge)
        if event.kind != "click" or event.honeypot or event.link_index is None:
            return verdict, []
        seen = Seen(message_id, event, verdict, stored=False, row=row)
        changed: list[Seen] = []
        if "all_links_burst" in verdict.reasons:
            everyone = [*others, event]
            for earlier in recent:
                if earlier.verdict.verdict != "human":
                    continue
                again = classify(earlier.event, everyone, self.knowledge)
                if again.verdict != earlier.verdict.verdict:
                    earlier.verdict = again
                    changed.append(earlier)
        self._add(message_id, seen)
        return verdict, changed

    def committed(self) -> None:
        """The batch holding the pending clicks committed: later changes need an UPDATE."""
        for seen in self._pending:
            seen.stored = True
        self._pending.clear()

    def abandoned(self) -> None:
        """The batch failed and wrote nothing: its clicks must not shape later verdicts."""
        dropped = {id(seen) for seen in self._pending}
        self._pending.clear()
        for message_id in list(self._clicks):
            kept = [seen for seen in self._clicks[message_id] if id(seen) not in dropped]
            if kept:
                self._clicks[message_id] = kept
            else:
                del self._clicks[message_id]

    def _recent(self, message_id: str, at: datetime) -> list[Seen]:
        clicks = self._clicks.get(message_id)
        if not clicks:
            return []
        span = self.knowledge.burst_window
        return [seen for seen in clicks if abs(seen.event.at - at) <= span]

    def _add(self, message_id: str, seen: Seen) -> None:
        at = seen.event.at
        if self._newest is None or at > self._newest:
            self._newest = at
        span = self.knowledge.burst_window
        clicks = [s for s in self._clicks.pop(message_id, []) if at - s.event.at <= span]
        clicks.append(seen)
        self._clicks[message_id] = clicks[-self.max_per_message :]
        self._pending.append(seen)
        # The dict is in order of last click: the front is the stalest message.
        horizon = self._newest - span
        while self._clicks:
            first = next(iter(self._clicks))
            stale = self._clicks[first][-1].event.at < horizon
            if not stale and len(self._clicks) <= self.max_messages:
                break
            del self._clicks[first]
