"""Templates: checked when saved, compiled once per campaign, rendered per message.

The template language is Jinja2 cut down to what a message needs: flat merge fields,
`if`, comparisons, and a short list of filters. Attribute and item access, calls, loops,
includes and macros are refused when the template is saved. That shuts every known
sandbox escape (`__class__`, `|attr`, `cycler.__init__.__globals__`, ...) at the door,
and Jinja2's `SandboxedEnvironment`, with no globals, stands behind it at render time.

Save-time rules (each problem names the part, the line and the field):
- every merge field is declared (PHI) or one of the sender's fields (`NON_PHI_FIELDS`);
  every declared PHI field is known and used (minimum necessary);
- the subject uses no PHI field unless the message goes by the portal or end-to-end
  encryption;
- `marketing*` templates link `unsubscribe_url` and print `sender_postal_address` in the
  HTML and in the text (CAN-SPAM, 15 U.S.C. 7704(a)(3) and (a)(5));
- no merge field inside a link's URL: a URL travels through logs and proxies.
"""

from __future__ import annotations

import html as html_lib
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import css_inline
from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from carepost.content import fields as f
from carepost.content import flat, html_part, mime, text_part
from carepost.content.text import html_to_text

MARKETING_CLASSES = frozenset({"marketing", "marketing_paid"})
MESSAGE_CLASSES = frozenset({"treatment", "operations", "transactional", *MARKETING_CLASSES})

SAFE_FILTERS = frozenset(
    {
        "default",
        "d",
        "upper",
        "lower",
        "title",
        "capitalize",
        "trim",
        "truncate",
        "replace",
        "escape",
        "e",
        "string",
        "round",
        "int",
        "float",
    }
)
SAFE_TESTS = frozenset({"defined", "undefined", "none", "number", "string", "eq", "ne"})
_ALLOWED_NODES = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Const,
    nodes.Name,
    nodes.If,
    nodes.Filter,
    nodes.Test,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Concat,
    nodes.CondExpr,
    nodes.List,
    nodes.Tuple,
)
# Click tokens number links with up to four digits, and the honeypot takes the index
# after the last link.
MAX_LINKS = 9998
_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_URL_FIELD_ONLY = re.compile(r"^\{\{\s*([a-z_]+)\s*\}\}$")
_NEWLINE = re.compile(r"\r\n|\r|\n")  # what Jinja reads as a line end


@dataclass(frozen=True)
class TemplateProblem:
    part: str  # subject | html | text | phi_fields | message_class
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.part + (f" line {self.line}" if self.line else "")
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"part": self.part, "line": self.line, "field": self.field, "message": self.message}


class TemplateRejected(ValueError):
    def __init__(self, problems: Sequence[TemplateProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in problems))


@dataclass(frozen=True)
class TemplateSpec:
    name: str
    subject: str
    html: str
    message_class: str
    phi_fields: tuple[str, ...] = ()
    text: str | None = None
    # Delivered only by the secure portal or S/MIME/PGP: the subject may then carry PHI.
    secure_delivery: bool = False


def _env(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        autoescape=autoescape,
        finalize=lambda value: "" if value is None else value,
        keep_trailing_newline=True,
    )
    env.globals.clear()
    env.filters = {k: v for k, v in env.filters.items() if k in SAFE_FILTERS}
    env.tests = {k: v for k, v in env.tests.items() if k in SAFE_TESTS}
    return env


HTML_ENV = _env(autoescape=True)
TEXT_ENV = _env(autoescape=False)


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


def _names(part: str, source: str, problems: list[TemplateProblem]) -> dict[str, int]:
    """Merge fields used in one part (name -> first line), problems for what is refused."""
    env = HTML_ENV if part == "html" else TEXT_ENV
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        problems.append(TemplateProblem(part, exc.lineno, None, f"syntax: {exc.message}"))
        return {}
    used: dict[str, int] = {}
    for node in _walk(tree):
        line = getattr(node, "lineno", None)
        if not isinstance(node, _ALLOWED_NODES):
            kind = type(node).__name__
            hint = {
                "Getattr": "attribute access",
                "Getitem": "item access",
                "Call": "a call",
                "For": "a loop",
            }.get(kind, f"'{kind}'")
            problems.append(
                TemplateProblem(part, line, None, f"{hint} is not allowed in templates")
            )
        elif isinstance(node, nodes.Filter) and node.name not in SAFE_FILTERS:
            problems.append(
                TemplateProblem(part, line, None, f"filter '{node.name}' is not allowed")
            )
        elif isinstance(node, nodes.Test) and node.name not in SAFE_TESTS:
            problems.append(TemplateProblem(part, line, None, f"test '{node.name}' is not allowed"))
        elif isinstance(node, nodes.Name):
            used.setdefault(node.name, line or 0)
    return used


def _line_of(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


def check(spec: TemplateSpec) -> list[TemplateProblem]:
    problems: list[TemplateProblem] = []
    if spec.message_class not in MESSAGE_CLASSES:
        problems.append(
            TemplateProblem(
                "message_class",
                None,
                None,
                f"unknown message class; one of {', '.join(sorted(MESSAGE_CLASSES))}",
            )
        )
    declared = list(spec.phi_fields)
    for name in declared:
        if name in f.NON_PHI_FIELDS:
            problems.append(
                TemplateProblem("phi_fields", None, name, f"'{name}' is not PHI; do not declare it")
            )
        elif not f.is_known_phi_field(name):
            near = f.nearest(name)
            hint = f" (did you mean '{near}'?)" if near else ""
            problems.append(
                TemplateProblem("phi_fields", None, name, f"unknown field '{name}'{hint}")
            )
    parts = {"subject": spec.subject, "html": spec.html}
    if spec.text is not None:
        parts["text"] = spec.text
    used_by_part = {part: _names(part, source, problems) for part, source in parts.items()}
    allowed = set(declared) | f.NON_PHI_FIELDS
    for part, used in used_by_part.items():
        for name, line in used.items():
            if name in allowed:
                continue
            if f.is_known_phi_field(name):
                message = f"'{name}' is used but not declared in phi_fields"
            else:
                near = f.nearest(name)
                message = f"unknown field '{name}'" + (f" (did you mean '{near}'?)" if near else "")
            problems.append(TemplateProblem(part, line, name, message))
    used_anywhere = set().union(*used_by_part.values())
    for name in declared:
        if f.is_known_phi_field(name) and name not in used_anywhere:
            problems.append(
                TemplateProblem(
                    "phi_fields",
                    None,
                    name,
                    f"'{name}' is declared but never used (minimum necessary)",
                )
            )
    if not spec.secure_delivery:
        for name, line in used_by_part["subject"].items():
            if name in declared or f.is_known_phi_field(name):
                problems.append(
                    TemplateProblem(
                        "subject",
                        line,
                        name,
                        f"'{name}' is PHI; a subject may carry PHI only by portal or "
                        "end-to-end encryption",
                    )
                )
    tracked = 0
    for match in _HREF.finditer(spec.html):
        url = match.group(3).strip()
        tracked += url.lower().startswith(("http://", "https://"))
        if "{{" in url or "{%" in url:
            only = _URL_FIELD_ONLY.match(url)
            if only is None or only.group(1) not in f.URL_FIELDS:
                problems.append(
                    TemplateProblem(
                        "html",
                        _line_of(spec.html, match.start(3)),
                        None,
                        "a link's URL may hold no merge field except a whole "
                        + ", ".join(sorted(f.URL_FIELDS)),
                    )
                )
    if tracked > MAX_LINKS:
        problems.append(
            TemplateProblem("html", None, None, f"more than {MAX_LINKS} links in one message")
        )
    if spec.message_class in MARKETING_CLASSES:
        for part in ("html", "text") if spec.text is not None else ("html",):
            used = used_by_part[part]
            for required in ("unsubscribe_url", "sender_postal_address"):
                if required not in used:
                    problems.append(
                        TemplateProblem(
                            part,
                            None,
                            required,
                            f"marketing messages must include {{{{ {required} }}}} (CAN-SPAM)",
                        )
                    )
    return problems


def validate(spec: TemplateSpec) -> None:
    problems = check(spec)
    if problems:
        raise TemplateRejected(problems)


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class RenderedParts:
    """A message's rendered parts as `mime.build_parts` takes them: encoded, by the flat
    template's plans where they could be (content.text_part, content.html_part)."""

    subject: str
    text_part: bytes  # quoted-printable, `mime.qp_body`'s answer
    html_part: tuple[bool, bytes]  # (7bit, bytes) or (base64, bytes)


@dataclass(frozen=True)
class CompiledTemplate:
    """A checked template made ready for one campaign: CSS inlined, tracked links replaced
    by markers that no rendered value can contain, the text part made if absent, and
    places for the open pixel and the honeypot link (HTML only)."""

    spec: TemplateSpec
    links: tuple[str, ...]  # destination URL of link index i
    _subject: Any = field(repr=False)
    _html: Any = field(repr=False)
    _text: Any = field(repr=False)
    _marker: re.Pattern[str] = field(repr=False)
    # Lines of the text part's source with no template syntax and no link: they render
    # the same for every recipient, so their encoding can be made once per campaign.
    fixed_text_lines: frozenset[str] = field(default=frozenset(), repr=False)
    fixed_subject: str | None = None  # the subject, when it has no template syntax
    # The parts' fixed text encoded once when the template is flat (content.flat); None
    # for any other template, and for a plan that failed its check against the general
    # path (_checked_plan).
    html_plan: html_part.HtmlPlan | None = field(default=None, repr=False)
    text_plan: text_part.TextPlan | None = field(default=None, repr=False)

    def render(
        self,
        context: Mapping[str, Any],
        link_urls: Sequence[str],
        open_url: str | None,
        honeypot_url: str | None = None,
    ) -> Rendered:
        """`link_urls[i]` replaces link i (the signed click URL); `open_url` is the
        pixel's source, or None for no pixel; `honeypot_url` the hidden link's, or None
        for none (untracked messages have neither)."""
        swaps = link_swaps(link_urls, open_url, honeypot_url)
        ctx = dict(context)
        html = self._swap(self._html.render(ctx), swaps)
        return Rendered(self._render_subject(ctx), html, self._swap(self._text.render(ctx), swaps))

    def render_parts(
        self,
        context: Mapping[str, Any],
        link_urls: Sequence[str],
        open_url: str | None,
        honeypot_url: str | None,
        boundary: bytes,
        known_text: Mapping[str, bytes],
    ) -> RenderedParts:
        """`render`, with the parts encoded for a MIME layout with `boundary`
        (`known_text` is `mime.qp_known_lines` of `fixed_text_lines`): what a campaign
        message needs, and for a flat template without rendering either part whole."""
        swaps = link_swaps(link_urls, open_url, honeypot_url)
        ctx = dict(context)
        html = self.html_plan.part(ctx, swaps, boundary) if self.html_plan else None
        text = self.text_plan.part(ctx, swaps, known_text) if self.text_plan else None
        return RenderedParts(
            self._render_subject(ctx),
            text
            if text is not None
            else mime.qp_body(self._swap(self._text.render(ctx), swaps), known_text),
            (True, html)
            if html is not None
            else mime.html_body(self._swap(self._html.render(ctx), swaps), boundary),
        )

    def _render_subject(self, ctx: dict[str, Any]) -> str:
        if self.fixed_subject is not None:
            return self.fixed_subject
        return " ".join(self._subject.render(ctx).split())

    def _swap(self, rendered: str, swaps: Mapping[str, str]) -> str:
        # Splitting on the marker leaves its captured index at every odd position: one
        # C-level pass instead of a Python callback per link.
        pieces = self._marker.split(rendered)
        pieces[1::2] = [swaps[key] for key in pieces[1::2]]
        return "".join(pieces)


def link_swaps(
    link_urls: Sequence[str], open_url: str | None, honeypot_url: str | None
) -> dict[str, str]:
    swaps = {str(i): url for i, url in enumerate(link_urls)}
    swaps["o"] = _PIXEL.format(src=html_lib.escape(open_url)) if open_url else ""
    swaps["h"] = _HONEYPOT.format(href=html_lib.escape(honeypot_url)) if honeypot_url else ""
    return swaps


_PIXEL = '<img src="{src}" width="1" height="1" alt="" style="display:block;border:0">'
# The honeypot: a link no person sees or reaches (no text, not displayed, hidden from
# screen readers, out of the tab order) but that link scanners follow like any other. A
# click on it is a machine's (tracking.classifier, reason "honeypot").
_HONEYPOT = '<a href="{href}" style="display:none" aria-hidden="true" tabindex="-1"></a>'
_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


def compile_template(spec: TemplateSpec) -> CompiledTemplate:
    validate(spec)
    nonce = secrets.token_hex(8)
    marker = re.compile(rf"cpmark{nonce}([0-9]+|o|h)x")
    inlined = css_inline.inline(spec.html)
    links: list[str] = []

    def tracked(match: re.Match[str]) -> str:
        url = html_lib.unescape(match.group(3).strip())
        if not url.lower().startswith(("http://", "https://")) or "{{" in url:
            return match.group(0)
        links.append(url)
        return f"{match.group(1)}{match.group(2)}cpmark{nonce}{len(links) - 1}x{match.group(2)}"

    html_source = _HREF.sub(tracked, inlined)
    # The text part is made before the pixel goes in; its links carry the same markers.
    text_source = spec.text if spec.text is not None else html_to_text(html_source)
    pixel = f"cpmark{nonce}ox"
    at = html_source.lower().rfind("</body>")
    html_source = html_source[:at] + pixel + html_source[at:] if at >= 0 else html_source + pixel
    # The honeypot goes first in the body, HTML only (the text part is already made, so
    # it never carries it): scanners that follow only the first links still meet it.
    body = _BODY_OPEN.search(html_source)
    at = body.end() if body else 0
    html_source = f"{html_source[:at]}cpmark{nonce}hx{html_source[at:]}"
    subject = TEXT_ENV.from_string(spec.subject)
    html = HTML_ENV.from_string(html_source)
    text = TEXT_ENV.from_string(text_source)
    return CompiledTemplate(
        spec,
        tuple(links),
        subject,
        html,
        text,
        marker,
        frozenset(
            line
            for line in _NEWLINE.split(text_source)
            if "{" not in line and f"cpmark{nonce}" not in line
        ),
        " ".join(subject.render().split()) if "{" not in spec.subject else None,
        _checked_plan(html_part.plan(HTML_ENV.parse(html_source), marker), html, marker),
        _checked_text_plan(text_part.plan(TEXT_ENV.parse(text_source), marker), text, marker),
    )


def _sentinels(slots: Sequence[flat.Slot]) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """Values for the plan's check: distinct ones, then empty ones (a line may vanish)."""
    for mark in ("v{}x", ""):
        fields = {n: mark.format(i) for i, (kind, n) in enumerate(slots) if kind == flat.FIELD}
        swaps = {n: mark.format(i) for i, (kind, n) in enumerate(slots) if kind == flat.SWAP}
        yield fields, swaps


def _rendered(
    template: Any, marker: re.Pattern[str], fields: dict[str, str], swaps: dict[str, str]
) -> str:
    pieces = marker.split(template.render(fields))
    pieces[1::2] = [swaps[key] for key in pieces[1::2]]
    return "".join(pieces)


# A plan that did not make what the general path makes for sentinel values would be a bug
# in content.html_part or content.text_part: the general path is always right.
def _checked_plan(
    plan: html_part.HtmlPlan | None, html: Any, marker: re.Pattern[str]
) -> html_part.HtmlPlan | None:
    if plan is None:
        return None
    boundary = b"=_cp_plan_check"
    for fields, swaps in _sentinels(plan.slots.items):
        expected = mime.html_body(_rendered(html, marker, fields, swaps), boundary)
        if expected != (True, plan.part(fields, swaps, boundary)):
            return None
    return plan


def _checked_text_plan(
    plan: text_part.TextPlan | None, text: Any, marker: re.Pattern[str]
) -> text_part.TextPlan | None:
    if plan is None:
        return None
    for fields, swaps in _sentinels(plan.slots.items):
        if mime.qp_body(_rendered(text, marker, fields, swaps), {}) != plan.part(fields, swaps, {}):
            return None
    return plan
