"""The HTML part of a flat template, encoded once per campaign.

Most campaign templates are text and merge fields, nothing else: no `if`, no filter.
For those, what `mime.html_body` does to 10-20 KB of rendered HTML for every message
(Jinja's join, the link swap, character references, CRLF line ends, the 7bit checks) is
done once, to the fixed text between the merge fields and the links. Per message only the
values are escaped and encoded, and only the checks a value could change run again.

Whatever a value could make come out differently sends that message down the general
path instead (`plan.part` returns None): a line end, NUL or C1 control in a value, a value
that is not a str, a field the context lacks, a line grown past 998 octets, the part's
boundary or a leading "From ". So the bytes are always those of
`mime.html_body(render(...))`; tests/unit/content/test_html_part.py holds the two paths
to that over hostile values, and `plan` itself checks it once on sentinel values.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from jinja2 import nodes
from markupsafe import escape

from carepost.content import flat
from carepost.content.mime import C1_REFERENCE, MAX_LINE, RAW_TEXT

_C1_CHARS = re.compile("[\x80-\x9f]")
# A fixed piece that ends inside a character reference or a tag name: the value after it
# could complete one ("&#1" + "30;", "<" + "style"), which the general path would read
# whole. Such templates keep the general path.
_OPEN_TAIL = re.compile(r"(?:&#?[0-9]{0,7}|<[/A-Za-z]*)\Z")
_HTML_SPECIAL = re.compile(r"[&<>'\"]")  # what markupsafe.escape replaces
_RAW_OPEN = re.compile(r"<(?:script|style)", re.IGNORECASE)


@dataclass(frozen=True)
class HtmlPlan:
    """Fixed pieces (ASCII, character references made, CRLF line ends) around slots."""

    # [fixed0, None, fixed1, None, ..., fixedN]: a message fills the odd places.
    layout: tuple[str | None, ...]
    slots: flat.Slots
    # Lines that hold slots: (their fixed length, excluding the line end; the slots on them)
    lines: tuple[tuple[int, tuple[int, ...]], ...]
    # The longest of those fixed lengths: with the most slots a line holds, a bound that
    # spares most messages the count line by line.
    longest_fixed: int
    # True when the fixed text alone makes `mime.html_body` choose base64 as soon as any
    # character is beyond ASCII (a C1 reference, or a reference in <script>/<style>).
    base64_unless_ascii: bool

    def part(
        self, context: Mapping[str, object], swaps: Mapping[str, str], boundary: bytes
    ) -> bytes | None:
        """The 7bit part's bytes, or None when this message needs the general path."""
        gathered = self.slots.gather(context, swaps)
        if gathered is None:
            return None
        fields, swapped = gathered
        if _HTML_SPECIAL.search("".join(fields)):
            fields = [escape(v) for v in fields]
        values = self.slots.order(fields + swapped)
        joined = "".join(values)
        if "\n" in joined or "\r" in joined or "\0" in joined:
            return None
        # Links, pixel and honeypot are carepost's own markup around its own URLs: an
        # "&" (a reference the checks below would have to read across a slot's edge) or
        # a script or style tag in one is nothing carepost makes.
        swapped_text = "".join(swapped)
        if "&" in swapped_text or _RAW_OPEN.search(swapped_text):
            return None
        if not joined.isascii():
            if self.base64_unless_ascii or _C1_CHARS.search(joined):
                return None
            values = [
                v if v.isascii() else v.encode("ascii", "xmlcharrefreplace").decode("ascii")
                for v in values
            ]
        if values and self.longest_fixed + self.most_on_a_line * max(map(len, values)) > MAX_LINE:
            lengths = [len(v) for v in values]
            for fixed, on_line in self.lines:
                if fixed + sum([lengths[i] for i in on_line]) > MAX_LINE:
                    return None
        pieces = list(self.layout)
        pieces[1::2] = values
        data = "".join(pieces).encode("ascii")  # type: ignore[arg-type]
        if boundary in data or b"\nFrom " in data or data.startswith(b"From "):
            return None
        return data if data.endswith(b"\r\n") else data + b"\r\n"

    @functools.cached_property
    def most_on_a_line(self) -> int:
        return max((len(on_line) for _, on_line in self.lines), default=0)


def plan(template: nodes.Template, marker: re.Pattern[str]) -> HtmlPlan | None:
    """The plan of a parsed HTML template whose output is only text, merge fields and
    `marker`'s link places; None for any other template."""
    flattened = flat.flatten(template, marker)
    if flattened is None:
        return None
    pieces, slots = flattened
    if any(_OPEN_TAIL.search(p) for p in pieces[:-1]):
        return None
    encoded = [p.encode("ascii", "xmlcharrefreplace").decode("ascii") for p in pieces]
    whole = "".join(encoded)
    offsets = []
    at = 0
    for p in encoded[:-1]:
        at += len(p)
        offsets.append(at)
    raw = [(m.start(), m.end()) for m in RAW_TEXT.finditer(whole.encode("ascii"))]
    if any(start < off < end for off in offsets for start, end in raw):
        return None  # a value inside <script> or <style>: the general path decides
    base64_unless_ascii = bool(C1_REFERENCE.search(whole.encode("ascii"))) or any(
        "&#" in whole[start:end] for start, end in raw
    )
    if base64_unless_ascii and not "".join(pieces).isascii():
        return None  # every message's part is base64
    # Line lengths as mime.html_body measures them (LF line ends, after references).
    line_of_offset = [whole.count("\n", 0, off) for off in offsets]
    fixed_lengths = [len(line) for line in whole.split("\n")]
    if max(fixed_lengths) > MAX_LINE:
        return None
    by_line: dict[int, list[int]] = {}
    for index, line in enumerate(line_of_offset):
        by_line.setdefault(line, []).append(index)
    lines = tuple((fixed_lengths[line], tuple(idx)) for line, idx in by_line.items())
    layout: list[str | None] = []
    for p in encoded[:-1]:
        layout += [p.replace("\n", "\r\n"), None]
    layout.append(encoded[-1].replace("\n", "\r\n"))
    return HtmlPlan(
        layout=tuple(layout),
        slots=flat.Slots(tuple(slots)),
        lines=lines,
        longest_fixed=max((fixed for fixed, _ in lines), default=0),
        base64_unless_ascii=base64_unless_ascii,
    )
