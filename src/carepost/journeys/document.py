"""Reading a journey definition from YAML or JSON text (JSON is read as the YAML it is).

Safe loading only, with YAML 1.2's booleans: only true and false are booleans, so a key
such as `on:` or a value such as `no` stays text (YAML 1.1 made them booleans). Anchors
and aliases are refused (a definition never needs them and they let a small file expand
into a huge one), and so are duplicate keys, which YAML would otherwise settle silently
by keeping the last. Errors give the line and column.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node

from carepost.journeys.definition import DefinitionError, Journey, check

MAX_BYTES = 256 * 1024


class _StrictLoader(yaml.SafeLoader):
    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise DefinitionError([(_at(mark), "aliases (*name) are not allowed")])
        return super().compose_node(parent, index)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):
                raise DefinitionError([(_at(key_node.start_mark), "a key must be a plain value")])
            if key in seen:
                raise DefinitionError([(_at(key_node.start_mark), f"duplicate key {key!r}")])
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 core booleans: drop 1.1's yes/no/on/off from the implicit resolvers.
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def parse_document(text: str | bytes) -> object:
    """The document's data, or DefinitionError naming the line and column."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_BYTES:
        raise DefinitionError([("", f"a definition is at most {MAX_BYTES // 1024} KB")])
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError([("", f"not UTF-8 text (byte {exc.start + 1})")]) from None
    try:
        return yaml.load(decoded, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        where = _at(exc.problem_mark) if exc.problem_mark is not None else ""
        raise DefinitionError([(where, exc.problem or "not valid YAML or JSON")]) from None
    except yaml.YAMLError:
        raise DefinitionError([("", "not valid YAML or JSON")]) from None


def load(text: str | bytes) -> Journey:
    return check(parse_document(text))
