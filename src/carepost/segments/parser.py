"""Rule text -> AST: a hand-written tokenizer and recursive-descent parser.

Grammar (keywords are lower case)::

    rule      := or
    or        := and ("or" and)*
    and       := unary ("and" unary)*
    unary     := "not" unary | "(" or ")" | predicate
    predicate := ATTR compare_tail
               | CALL                           # has_condition("E11"), opened(within=30d)
               | VALUE_CALL compare_tail ["within" DURATION]    # lab(...), visits(...)
    compare_tail := ("=="|"!="|"<"|"<="|">"|">=") literal
               | ["not"] "in" list | "starts_with" (string | list)
               | "between" literal "and" literal
    ATTR      := age | sex | state | postal_code | city | language | insurance_type | stage
               | attr.NAME
    literal   := "string" | number | true | false       list := "[" literal ("," literal)* "]"
    DURATION  := digits ("d" | "w")                        # days or weeks

Every error is a RuleError with line, column, what was expected and, for an unknown
attribute, function or stage, the nearest known name.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

from carepost.segments import ast as A
from carepost.segments.ast import RuleError
from carepost.segments.stage import STAGES

MAX_LENGTH = 20_000
_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<duration>\d+[dw](?![A-Za-z0-9_]))
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|=)
  | (?P<punct>[()\[\],.])
    """,
    re.VERBOSE,
)
KEYWORDS = {"and", "or", "not", "in", "between", "within", "true", "false", "starts_with"}
_KEYWORD_ARGS = {
    "has_condition": ("code", ()),
    "has_medication": ("code", ("within",)),
    "vaccinated": ("code", ("within",)),
    "had_procedure": ("code", ("within",)),
    "lab": ("code", ()),
    "visits": (None, ("within",)),
    "no_shows": (None, ("within",)),
    "opened": (None, ("within", "humans_only", "step")),
    "clicked": (None, ("within", "humans_only", "step", "link")),
    "form_submitted": ("name?", ("within",)),
    "event_received": ("name", ("within",)),
    "in_segment": ("name", ()),
}
VALUE_FUNCTIONS = ("lab", *A.COUNT_KINDS)


@dataclass(frozen=True)
class Token:
    kind: str  # ident, keyword, number, string, duration, op, punct, end
    text: str
    value: Any
    line: int
    column: int


def nearest(name: str, known: tuple[str, ...] | list[str]) -> str | None:
    found = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return found[0] if found else None


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        column = pos - line_start + 1
        if m is None:
            ch = text[pos]
            if ch == '"':
                raise RuleError(
                    "unterminated string", line=line, column=column, expected=('a closing "',)
                )
            raise RuleError(f"unexpected character {ch!r}", line=line, column=column)
        kind = m.lastgroup or ""
        raw = m.group()
        if kind == "ws":
            for i, ch in enumerate(raw):
                if ch == "\n":
                    line += 1
                    line_start = pos + i + 1
        elif kind == "duration":
            try:
                n = int(raw[:-1])
            except ValueError:
                raise RuleError("number too long", line=line, column=column) from None
            days = n * 7 if raw[-1] == "w" else n
            tokens.append(Token("duration", raw, days, line, column))
        elif kind == "number":
            try:
                value: Any = float(raw) if any(c in raw for c in ".eE") else int(raw)
            except ValueError:  # an integer past Python's 4,300-digit conversion limit
                raise RuleError("number too long", line=line, column=column) from None
            tokens.append(Token("number", raw, value, line, column))
        elif kind == "string":
            try:
                value = json.loads(raw)
            except ValueError:
                raise RuleError("invalid escape in string", line=line, column=column) from None
            tokens.append(Token("string", raw, value, line, column))
        elif kind == "ident":
            tokens.append(Token("keyword" if raw in KEYWORDS else "ident", raw, raw, line, column))
        else:
            tokens.append(Token(kind, raw, raw, line, column))
        pos = m.end()
    tokens.append(Token("end", "", None, line, pos - line_start + 1))
    return tokens


def _describe(tok: Token) -> str:
    return "the end of the rule" if tok.kind == "end" else repr(tok.text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    # --- helpers ---------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def error(
        self, message: str, tok: Token | None = None, *expected: str, suggestion: str | None = None
    ) -> RuleError:
        t = tok or self.tok
        return RuleError(
            message, line=t.line, column=t.column, expected=expected, suggestion=suggestion
        )

    def is_kw(self, word: str) -> bool:
        return self.tok.kind == "keyword" and self.tok.text == word

    def expect_punct(self, ch: str) -> Token:
        if self.tok.kind == "punct" and self.tok.text == ch:
            return self.advance()
        raise self.error(f"unexpected {_describe(self.tok)}", None, repr(ch))

    def build(self, tok: Token, ctor: Any, *args: Any) -> Any:
        try:
            return ctor(*args)
        except RuleError as exc:
            raise RuleError(exc.message, line=tok.line, column=tok.column) from None

    # --- grammar ---------------------------------------------------------------------------
    def parse(self) -> A.Node:
        if self.tok.kind == "end":
            raise self.error("empty rule", None, "a condition such as age >= 50")
        node = self.parse_or()
        if self.tok.kind != "end":
            raise self.error(f"unexpected {_describe(self.tok)}", None, "and", "or", "the end")
        return node

    def parse_or(self) -> A.Node:
        self.depth += 1
        if self.depth > A.MAX_DEPTH:
            raise self.error("rule nested too deeply")
        items = [self.parse_and()]
        while self.is_kw("or"):
            self.advance()
            items.append(self.parse_and())
        self.depth -= 1
        return items[0] if len(items) == 1 else A.Or(tuple(items))

    def parse_and(self) -> A.Node:
        items = [self.parse_unary()]
        while self.is_kw("and"):
            self.advance()
            items.append(self.parse_unary())
        return items[0] if len(items) == 1 else A.And(tuple(items))

    def parse_unary(self) -> A.Node:
        if self.is_kw("not"):
            self.advance()
            self.depth += 1
            if self.depth > A.MAX_DEPTH:
                raise self.error("rule nested too deeply")
            negated = A.Not(self.parse_unary())
            self.depth -= 1
            return negated
        if self.tok.kind == "punct" and self.tok.text == "(":
            self.advance()
            node = self.parse_or()
            self.expect_punct(")")
            return node
        return self.parse_predicate()

    def parse_predicate(self) -> A.Node:
        tok = self.tok
        if tok.kind != "ident":
            raise self.error(
                f"unexpected {_describe(tok)}", None, "an attribute", "a function", "not", "("
            )
        self.advance()
        name = tok.text
        is_call = self.tok.kind == "punct" and self.tok.text == "("
        if is_call:
            if name not in A.FUNCTIONS:
                raise self.error(
                    f"unknown function {name!r}",
                    tok,
                    "one of " + ", ".join(A.FUNCTIONS),
                    suggestion=nearest(name, A.FUNCTIONS),
                )
            return self.parse_call(tok)
        if name == "attr":
            self.expect_punct(".")
            sub = self.tok
            if sub.kind not in ("ident", "keyword"):
                raise self.error(f"unexpected {_describe(sub)}", None, "a custom attribute name")
            self.advance()
            name = f"attr.{sub.text}"
        elif name not in A.ATTRIBUTES:
            if name in A.FUNCTIONS:
                raise self.error(f"{name} is a function", self.tok, f"{name}(...)")
            known = (*A.ATTRIBUTES, *A.FUNCTIONS)
            raise self.error(
                f"unknown attribute {name!r}",
                tok,
                "an attribute (" + ", ".join(A.ATTRIBUTES) + ", attr.NAME) or a function",
                suggestion=nearest(name, known),
            )
        op, value = self.parse_compare_tail(name)
        if name == A.STAGE_ATTR:
            for v in value if isinstance(value, tuple) else (value,):
                if isinstance(v, str) and v not in STAGES:
                    raise self.error(
                        f"unknown stage {v!r}", tok, *STAGES, suggestion=nearest(v, STAGES)
                    )
        if name == "sex":
            for v in value if isinstance(value, tuple) else (value,):
                if isinstance(v, str) and v.casefold() not in A.SEXES:
                    raise self.error(
                        f"unknown sex {v!r}", tok, *A.SEXES, suggestion=nearest(v, A.SEXES)
                    )
        return self.build(tok, A.Compare, name, op, value)  # type: ignore[no-any-return]

    def parse_literal(self) -> A.Scalar:
        tok = self.tok
        if tok.kind in ("string", "number"):
            self.advance()
            return tok.value  # type: ignore[no-any-return]
        if tok.kind == "keyword" and tok.text in ("true", "false"):
            self.advance()
            return tok.text == "true"
        raise self.error(
            f"unexpected {_describe(tok)}", None, "a string", "a number", "true", "false"
        )

    def parse_list(self) -> tuple[A.Scalar, ...]:
        self.expect_punct("[")
        items = [self.parse_literal()]
        while self.tok.kind == "punct" and self.tok.text == ",":
            self.advance()
            items.append(self.parse_literal())
        self.expect_punct("]")
        return tuple(items)

    def parse_compare_tail(self, subject: str) -> tuple[str, Any]:
        tok = self.tok
        if tok.kind == "op" and tok.text != "=":
            self.advance()
            return tok.text, self.parse_literal()
        if self.is_kw("not"):
            self.advance()
            if not self.is_kw("in"):
                raise self.error(f"unexpected {_describe(self.tok)}", None, "in")
            self.advance()
            return "not in", self.parse_list()
        if self.is_kw("in"):
            self.advance()
            return "in", self.parse_list()
        if self.is_kw("starts_with"):
            self.advance()
            if self.tok.kind == "punct" and self.tok.text == "[":
                return "starts_with", self.parse_list()
            return "starts_with", (self.parse_literal(),)
        if self.is_kw("between"):
            self.advance()
            lo = self.parse_literal()
            if not self.is_kw("and"):
                raise self.error(f"unexpected {_describe(self.tok)}", None, "and")
            self.advance()
            return "between", (lo, self.parse_literal())
        hint = "==" if tok.text == "=" else None
        raise self.error(
            f"unexpected {_describe(tok)} after {subject}",
            None,
            "==",
            "!=",
            "<",
            "<=",
            ">",
            ">=",
            "in",
            "not in",
            "between",
            "starts_with",
            suggestion=hint,
        )

    def parse_call(self, name_tok: Token) -> A.Node:
        name = name_tok.text
        positional_kind, allowed = _KEYWORD_ARGS[name]
        self.expect_punct("(")
        positional: str | None = None
        kwargs: dict[str, Any] = {}
        first = True
        while not (self.tok.kind == "punct" and self.tok.text == ")"):
            if not first:
                self.expect_punct(",")
            tok = self.tok
            if tok.kind == "string" and first and positional_kind is not None:
                positional = tok.value
                self.advance()
            elif tok.kind in ("ident", "keyword") and tok.kind != "end":
                self.advance()
                if tok.text not in allowed:
                    raise self.error(
                        f"{name}() takes no argument {tok.text!r}",
                        tok,
                        *(f"{a}=" for a in allowed),
                        suggestion=nearest(tok.text, list(allowed)),
                    )
                if tok.text in kwargs:
                    raise self.error(f"{tok.text} given twice", tok)
                if not (self.tok.kind == "op" and self.tok.text == "="):
                    raise self.error(f"unexpected {_describe(self.tok)}", None, "=")
                self.advance()
                kwargs[tok.text] = self.parse_kwarg(tok.text)
            else:
                wanted = ['a "string"'] if first and positional_kind else []
                wanted += [f"{a}=" for a in allowed] + ["')'"]
                raise self.error(f"unexpected {_describe(tok)} in {name}()", None, *wanted)
            first = False
        self.advance()
        if positional_kind in ("code", "name") and positional is None:
            raise self.error(f"{name}() needs a {positional_kind}", name_tok, f'{name}("...")')
        within = kwargs.get("within")
        if name in VALUE_FUNCTIONS:
            op, value = self.parse_compare_tail(f"{name}()")
            if op in ("in", "not in", "starts_with"):
                raise self.error(
                    f"{name}() is compared with a number", name_tok, "<", ">", "between"
                )
            if name == "lab" and self.is_kw("within"):
                self.advance()
                if self.tok.kind != "duration":
                    raise self.error(
                        f"unexpected {_describe(self.tok)}", None, "a window like 180d"
                    )
                within = self.advance().value
            if name == "lab":
                return self.build(name_tok, A.Lab, positional, op, value, within)  # type: ignore[no-any-return]
            return self.build(name_tok, A.Count, name, op, value, within)  # type: ignore[no-any-return]
        if name == "has_condition":
            return self.build(name_tok, A.HasCondition, positional)  # type: ignore[no-any-return]
        if name == "has_medication":
            return self.build(name_tok, A.HasMedication, positional, within)  # type: ignore[no-any-return]
        if name == "vaccinated":
            return self.build(name_tok, A.Vaccinated, positional, within)  # type: ignore[no-any-return]
        if name == "had_procedure":
            return self.build(name_tok, A.HadProcedure, positional, within)  # type: ignore[no-any-return]
        if name == "in_segment":
            return self.build(name_tok, A.InSegment, positional)  # type: ignore[no-any-return]
        return self.build(  # type: ignore[no-any-return]
            name_tok,
            A.Engaged,
            name,
            positional,
            within,
            kwargs.get("humans_only", True),
            kwargs.get("step"),
            kwargs.get("link"),
        )

    def parse_kwarg(self, key: str) -> Any:
        tok = self.tok
        if key == "within":
            if tok.kind != "duration":
                raise self.error(f"unexpected {_describe(tok)}", None, "a window like 30d or 4w")
            self.advance()
            return tok.value
        if key == "step":
            if tok.kind != "string":
                raise self.error(f"unexpected {_describe(tok)}", None, 'a step id like "welcome"')
            self.advance()
            return tok.value
        if key == "link":
            if tok.kind != "number" or not isinstance(tok.value, int):
                raise self.error(f"unexpected {_describe(tok)}", None, "a link index like 2")
            self.advance()
            return tok.value
        if tok.kind == "keyword" and tok.text in ("true", "false"):
            self.advance()
            return tok.text == "true"
        raise self.error(f"unexpected {_describe(tok)}", None, "true", "false")


def parse(text: str) -> A.Node:
    """Parse rule text; raises RuleError (with line and column) for anything wrong."""
    if not isinstance(text, str):
        raise RuleError("a rule is text")
    if len(text) > MAX_LENGTH:
        raise RuleError(f"rule longer than {MAX_LENGTH} characters")
    return _Parser(text).parse()
