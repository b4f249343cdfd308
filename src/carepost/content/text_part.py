"""The text part of a flat template, quoted-printable, encoded once per campaign.

`mime.qp_body` encodes a rendered text part line by line and looks the template's fixed
lines up instead of encoding them again. For a flat template (content.flat) the plan goes
further: runs of fixed lines are one piece of bytes made once, so a message renders and
encodes only its lines with a merge field or a link. A value with a line end sends the
message down the general path (`plan.part` returns None): the bytes are always those of
`mime.qp_body(render(...), known)` (tests/unit/content/test_text_part.py).
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

from jinja2 import nodes

from carepost.content import flat

# A line with slots: its fixed pieces with None where values go, and the slots' indexes.
_Line = tuple[tuple[str | None, ...], tuple[int, ...]]


@dataclass(frozen=True)
class TextPlan:
    items: tuple[bytes | _Line, ...]  # encoded runs of fixed lines, and lines with slots
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
        get, encode = known.get, binascii.b2a_qp
        out: list[bytes] = []
        line = ""
        for item in self.items:
            if isinstance(item, bytes):
                out.append(item)
                continue
            layout, on_line = item
            pieces = list(layout)
            pieces[1::2] = [values[i] for i in on_line]
            line = "".join(pieces)  # type: ignore[arg-type]
            out.append(get(line) or encode((line + "\r\n").encode()))
        if self.last_may_vanish and not line:
            out.pop()
        return b"".join(out)


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
    items: list[bytes | _Line] = []
    for texts, on_line in lines:
        if not on_line:
            encoded = binascii.b2a_qp((texts[0] + "\r\n").encode())
            if items and isinstance(items[-1], bytes):
                items[-1] += encoded
            else:
                items.append(encoded)
            continue
        layout: list[str | None] = []
        for text in texts[:-1]:
            layout += [text, None]
        layout.append(texts[-1])
        items.append((tuple(layout), tuple(on_line)))
    return TextPlan(
        items=tuple(items),
        slots=flat.Slots(tuple(slots)),
        last_may_vanish=not ends_with_line_end and bool(lines[-1][1]) and len(lines) > 1,
    )
