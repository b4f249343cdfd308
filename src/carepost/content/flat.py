"""Flat templates: text and merge fields only, as fixed pieces around slots.

Most campaign templates have no `if` and no filter. Their parts can then be encoded once
per campaign, the fixed text between the slots, and per message only the values
(content.html_part, content.text_part).
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes

FIELD = "field"  # a merge field, by name
SWAP = "swap"  # a link, the open pixel or the honeypot, by marker key (template.link_swaps)

Slot = tuple[str, str]


def flatten(
    template: nodes.Template, marker: re.Pattern[str]
) -> tuple[list[str], list[Slot]] | None:
    """`len(slots) + 1` fixed pieces and the slots between them, or None when the template
    holds anything but text, `{{ name }}` and `marker`'s places."""
    pieces = [""]
    slots: list[Slot] = []
    for node in template.body:
        if not isinstance(node, nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                split = marker.split(child.data)
                pieces[-1] += split[0]
                for key, after in zip(split[1::2], split[2::2], strict=True):
                    slots.append((SWAP, key))
                    pieces.append(after)
            elif isinstance(child, nodes.Name) and child.ctx == "load":
                slots.append((FIELD, child.name))
                pieces.append("")
            else:
                return None
    if any("\r" in p or "\0" in p for p in pieces):
        return None
    return pieces, slots


@dataclass(frozen=True)
class Slots:
    """A flat template's slots in order, and how a message's values are gathered."""

    items: tuple[Slot, ...]

    @functools.cached_property
    def field_names(self) -> tuple[str, ...]:
        return tuple(name for kind, name in self.items if kind == FIELD)

    @functools.cached_property
    def swap_keys(self) -> tuple[str, ...]:
        return tuple(name for kind, name in self.items if kind == SWAP)

    @functools.cached_property
    def order(self) -> Callable[[list[str]], list[str]]:
        """Fields then swaps, as `gather` gives them, back into slot order."""
        fields, swaps = (
            iter(range(len(self.items))),
            iter(range(len(self.field_names), len(self.items))),
        )
        at = [next(fields) if kind == FIELD else next(swaps) for kind, _ in self.items]
        if len(at) < 2:
            return lambda values: list(values)
        pick = operator.itemgetter(*at)
        return lambda values: list(pick(values))

    def gather(
        self, context: Mapping[str, object], swaps: Mapping[str, str]
    ) -> tuple[list[str], list[str]] | None:
        """The fields' values as Jinja's `finalize` leaves them (None as ""), and the
        swaps'; None when a value would take Jinja's other rules: a name the context
        lacks (Undefined), or a value that is not a str (numbers, Markup)."""
        try:
            fields: list[Any] = [context[name] for name in self.field_names]
            swapped = [swaps[key] for key in self.swap_keys]
        except KeyError:
            return None
        if None in fields:
            fields = ["" if v is None else v for v in fields]
        if not all(type(v) is str for v in fields):
            return None
        return fields, swapped
