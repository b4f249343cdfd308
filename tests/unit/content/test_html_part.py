"""The flat template's HTML part (content.html_part) against the general path: for any
values, `render_parts` gives exactly the bytes of `mime.html_body(render(...).html)`."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from carepost.content import html_part
from carepost.content.mime import MimeLayout, html_body, qp_body
from carepost.content.template import (
    HTML_ENV,
    CompiledTemplate,
    TemplateSpec,
    compile_template,
    link_swaps,
)

BOUNDARY = MimeLayout.alternative().boundary
FIELDS = ("first_name", "last_name", "city")

FLAT = (
    "<html><head><style>p { color: red }</style></head><body>\n"
    "{{ first_name }} {{ last_name }}<br>\n"
    "<p>Dear {{ first_name }}, your clinic in {{ city }} · opens at 9.</p>\n"
    '<p><a href="https://clinic.example/a">A</a> <a href="https://clinic.example/b">B</a></p>\n'
    "{{ city }}\n"
    "</body></html>"
)


def compiled(html: str, message_class: str = "treatment") -> CompiledTemplate:
    return compile_template(
        TemplateSpec(
            name="t",
            subject="Notice",
            html=html,
            message_class=message_class,
            phi_fields=FIELDS,
        )
    )


def both(template: CompiledTemplate, context: dict[str, Any]) -> tuple[object, object]:
    links = [f"https://m.example/t/c/tok{i}" for i in range(len(template.links))]
    general = template.render(context, links, "https://m.example/t/o/x", "https://m.example/h")
    parts = template.render_parts(
        context, links, "https://m.example/t/o/x", "https://m.example/h", BOUNDARY, {}
    )
    assert parts.text_part == qp_body(general.text, {})
    assert parts.subject == general.subject
    return parts.html_part, html_body(general.html, BOUNDARY)


FLAT_TEMPLATE = compiled(FLAT)

hostile = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.text(alphabet="\x80\x85\x9f\u00b7\u2028é\n\r\0&<>'\"#;0123456789 From", max_size=20),
    st.sampled_from(["From the clinic", BOUNDARY.decode(), "x" * 1200, "&#130;", "<style>"]),
)


@settings(max_examples=300, deadline=None)
@given(first=hostile, last=hostile, city=hostile)
@example(first="From here", last="", city="")
@example(first="a\nFrom b", last="", city="")
@example(first="\x85", last="", city="")
@example(first="y" * 990, last="", city="")
def test_the_plan_makes_the_general_paths_bytes(first: Any, last: Any, city: Any) -> None:
    plan_part, general_part = both(
        FLAT_TEMPLATE, {"first_name": first, "last_name": last, "city": city}
    )
    assert plan_part == general_part


def test_ordinary_values_take_the_plan() -> None:
    plan = FLAT_TEMPLATE.html_plan
    assert plan is not None
    context = {"first_name": "Ana", "last_name": "O'Neil & Sons", "city": "Zürich"}
    swaps = link_swaps(
        [f"https://m.example/t/c/tok{i}" for i in range(len(FLAT_TEMPLATE.links))],
        "https://m.example/t/o/x",
        "https://m.example/h",
    )
    made = plan.part(context, swaps, BOUNDARY)
    assert made is not None
    assert b"O&#39;Neil &amp; Sons" in made
    assert b"Z&#252;rich" in made
    assert both(FLAT_TEMPLATE, context) == ((True, made), (True, made))


@pytest.mark.parametrize(
    ("context", "why"),
    [
        ({"first_name": "a\nb", "last_name": "", "city": ""}, "a line end in a value"),
        ({"first_name": "\x9f", "last_name": "", "city": ""}, "a C1 control"),
        ({"first_name": 3, "last_name": "", "city": ""}, "not a str"),
        ({"first_name": "x", "last_name": ""}, "a field the context lacks"),
        ({"first_name": "x" * 999, "last_name": "", "city": ""}, "a line over 998"),
        ({"first_name": "", "last_name": "", "city": BOUNDARY.decode()}, "the boundary"),
    ],
)
def test_values_the_plan_cannot_carry_go_the_general_way(context: dict[str, Any], why: str) -> None:
    plan = FLAT_TEMPLATE.html_plan
    assert plan is not None
    swaps = {key: f"https://m.example/{key}" for key in plan.slots.swap_keys}
    assert plan.part(context, swaps, BOUNDARY) is None, why
    plan_part, general_part = both(FLAT_TEMPLATE, context)
    assert plan_part == general_part


@pytest.mark.parametrize(
    "html",
    [
        "<p>{% if city %}{{ city }}{% endif %} {{ first_name }} {{ last_name }}</p>",
        "<p>{{ city | upper }} {{ first_name }} {{ last_name }}</p>",
        '<script>var s = "{{ city }}";</script><p>{{ first_name }} {{ last_name }}</p>',
        '<script>var s = "&#38;";</script><p>· {{ city }} {{ first_name }} {{ last_name }}</p>',
        "<p>" + "z" * 1000 + "</p><p>{{ city }} {{ first_name }} {{ last_name }}</p>",
    ],
    ids=["if", "filter", "in-script", "always-base64", "long"],
)
def test_templates_that_are_not_flat_keep_the_general_path(html: str) -> None:
    template = compiled(html)
    assert template.html_plan is None
    plan_part, general_part = both(
        template, {"first_name": "Ana", "last_name": "Lee", "city": "Leeds"}
    )
    assert plan_part == general_part


def test_a_reference_in_a_script_stays_7bit_until_a_value_is_not_ascii() -> None:
    # mime.html_body sends such a part as base64 once any character is beyond ASCII.
    template = compiled(
        '<script>var s = "&#38;";</script><p>{{ city }} {{ first_name }} {{ last_name }}</p>'
    )
    assert template.html_plan is not None
    assert template.html_plan.base64_unless_ascii
    plan_part, general_part = both(
        template, {"first_name": "Ana", "last_name": "Lee", "city": "Leeds"}
    )
    assert plan_part == general_part
    assert general_part[0] is True  # type: ignore[index]
    plan_part, general_part = both(
        template, {"first_name": "Zoë", "last_name": "Lee", "city": "Leeds"}
    )
    assert plan_part == general_part
    assert general_part[0] is False  # type: ignore[index]


@pytest.mark.parametrize(
    "source",
    [
        "<p>&#1{{ city }}30;</p>",  # the value could finish a reference
        "<p><{{ city }}>x</p>",  # or a tag's name
        "<style>p { content: '{{ city }}' }</style>",  # raw text: references differ there
    ],
    ids=["open-reference", "open-tag", "in-style"],
)
def test_a_value_that_could_change_the_fixed_texts_meaning_gets_no_plan(source: str) -> None:
    # compile_template's CSS inlining rewrites such HTML before a plan is made; the plan
    # still refuses it when handed it as it is.
    assert html_part.plan(HTML_ENV.parse(source), re.compile(r"cpmark([0-9]+|o|h)x")) is None


def test_a_link_with_a_character_reference_goes_the_general_way() -> None:
    # carepost's tracking URLs never hold one; an odd public URL could.
    context = {"first_name": "Ana", "last_name": "Lee", "city": "Leeds"}
    links = [f"https://m.example/t/c/tok{i}&#1" for i in range(len(FLAT_TEMPLATE.links))]
    plan = FLAT_TEMPLATE.html_plan
    assert plan is not None
    assert plan.part(context, link_swaps(links, None, None), BOUNDARY) is None
    general = FLAT_TEMPLATE.render(context, links, None, None)
    parts = FLAT_TEMPLATE.render_parts(context, links, None, None, BOUNDARY, {})
    assert parts.html_part == html_body(general.html, BOUNDARY)
