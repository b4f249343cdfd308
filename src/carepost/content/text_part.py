"""The text part of a flat template, quoted-printable, encoded once per campaign.

`mime.qp_body` encodes a rendered text part line by line and looks the template's fixed
lines up instead of encoding them again. For a flat template (content.flat) the plan goes
further: runs of fixed lines are one piece of bytes made once, so a message renders and
encodes only its lines with a merge field or a link. A value with a line end sends the
message down the general path (`plan.part` returns None): the bytes are always those of
`mime.qp_body(render(...), known)` (tests/unit/content/test_text_part.py).

Most lines with slots are plain (printable ASCII, no "=", no trailing space): a name, a
tracked link. Quoted-printable leaves such a line as it is but for soft breaks every 75
characters, so `_plain_line` writes it with string slices; `binascii.b2a_qp` spends more
on a 110-character link line (its call and two passes) than the rest of the line's work.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

from jinja2 import nodes

from carepost.content import flat

# A line with slots: its fixed pieces with None where values go, the slots' indexes, and
# whether the fixed pieces are plain (_is_plain).
_Line = tuple[tuple[str | None, ...], tuple[int, ...], bool]


@dataclass(frozen=True)
class TextPlan:
    items: tuple[str | _Line, ...]  # encoded runs of fixed lines, and lines with slots
    slots: flat.Slots
    # The text's last line has slots and others precede it: when it renders empty, it
    # is the text's final line end, not a line (as mime.qp_body reads it).
    last_may_vanish: bool

    def part(
        self,
        context: Mapping[str, object],
        swaps: Mapping[str, str],
        known: Mapping[str, bytes],
    ) -> bytes | None:
        gathered = self.slots.gather(context, swaps)
        if gathered is None:
            return None
        fields, swapped = gathered
        values = self.slots.order(fields + swapped)
        joined = "".join(values)
        if "\n" in joined or "\r" in joined:
            return None
        values_plain = _is_plain(joined)
        get, encode = known.get, binascii.b2a_qp
        out: list[str] = []
        line = ""
        for item in self.items:
            if isinstance(item, str):
                out.append(item)
                continue
            layout, on_line, fixed_plain = item
            pieces = list(layout)
            pieces[1::2] = [values[i] for i in on_line]
            line = "".join(pieces)  # type: ignore[arg-type]
            if values_plain and fixed_plain and line[-1:] != " " and line != ".":
                out.append(_plain_line(line))
            else:
                out.append((get(line) or encode((line + "\r\n").encode())).decode("ascii"))
        if self.last_may_vanish and not line:
            out.pop()
        return "".join(out).encode("ascii")


def _is_plain(text: str) -> bool:
    """Characters quoted-printable leaves as they are anywhere in a line."""
    return text.isascii() and text.isprintable() and "=" not in text


def _plain_line(line: str) -> str:
    """`b2a_qp` of a plain line that does not end in a space and is not ".": the line,
    broken with a soft line break after every 75 characters while 76 or more remain."""
    if len(line) < 76:
        return line + "\r\n"
    chunks = []
    start = 0
    while len(line) - start >= 76:
        chunks.append(line[start : start + 75])
        start += 75
    chunks.append(line[start:])
    return "=\r\n".join(chunks) + "\r\n"


def plan(template: nodes.Template, marker: re.Pattern[str]) -> TextPlan | None:
    flattened = flat.flatten(template, marker)
    if flattened is None:
        return None
    pieces, slots = flattened
    # Lines as (text pieces, slot indexes): a slot stays on the line it starts on.
    lines: list[tuple[list[str], list[int]]] = [([""], [])]
    for index, piece in enumerate(pieces):
        first, *rest = piece.split("\n")
        lines[-1][0][-1] += first
        for text in rest:
            lines.append(([text], []))
        if index < len(slots):
            lines[-1][1].append(index)
            lines[-1][0].append("")
    last_text, last_slots = lines[-1]
    ends_with_line_end = not last_slots and not last_text[0] and len(lines) > 1
    if ends_with_line_end:
        lines.pop()
    items: list[str | _Line] = []
    for texts, on_line in lines:
        if not on_line:
            encoded = binascii.b2a_qp((texts[0] + "\r\n").encode()).decode("ascii")
            if items and isinstance(items[-1], str):
                items[-1] += encoded
            else:
                items.append(encoded)
            continue
        layout: list[str | None] = []
        for text in texts[:-1]:
            layout += [text, None]
        layout.append(texts[-1])
        items.append((tuple(layout), tuple(on_line), _is_plain("".join(texts))))
    return TextPlan(
        items=tuple(items),
        slots=flat.Slots(tuple(slots)),
        last_may_vanish=not ends_with_line_end and bool(lines[-1][1]) and len(lines) > 1,
    )
