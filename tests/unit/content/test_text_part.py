"""The flat template's text part (content.text_part) against the general path: for any
values, `render_parts` gives exactly the bytes of `mime.qp_body(render(...).text, known)`."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from carepost.content.mime import MimeLayout, qp_body, qp_known_lines
from carepost.content.template import CompiledTemplate, TemplateSpec, compile_template

BOUNDARY = MimeLayout.alternative().boundary
FIELDS = ("first_name", "city")
HTML = '<p>{{ first_name }} {{ city }} <a href="https://clinic.example/a">A</a></p>'

TEXTS = {
    "ends-with-field": "Hi {{ first_name }},\n\nWe are open late.\n{{ city }}",
    "ends-with-line-end": "Hi {{ first_name }},\n\nWe are open late.\n{{ city }}\n",
    "ends-with-two": "{{ first_name }}\n{{ city }}\n\n",
    "one-field": "{{ first_name }}{{ city }}",
    "fixed-last": "{{ first_name }} in {{ city }}\nThanks · the clinic",
    "link": "Read {{ first_name }}: https://clinic.example/a\n{{ city }}",
    "long-line": "x" * 90 + " {{ first_name }} " + "y" * 90 + "\n{{ city }}=",
    "trailing-space": "{{ first_name }} \n\t{{ city }}\t\n",
}


def compiled(text: str | None) -> CompiledTemplate:
    return compile_template(
        TemplateSpec(
            name="t",
            subject="Notice",
            html=HTML,
            text=text,
            message_class="treatment",
            phi_fields=FIELDS,
        )
    )


TEMPLATES = {name: compiled(text) for name, text in TEXTS.items()}


def both(template: CompiledTemplate, context: dict[str, Any]) -> tuple[bytes, bytes]:
    links = [f"https://m.example/t/c/tok{i}" for i in range(len(template.links))]
    known = qp_known_lines(template.fixed_text_lines)
    general = template.render(context, links, "https://m.example/t/o/x", "https://m.example/h")
    parts = template.render_parts(
        context, links, "https://m.example/t/o/x", "https://m.example/h", BOUNDARY, known
    )
    return parts.text_part, qp_body(general.text, known)


def test_every_shape_gets_a_plan() -> None:
    assert all(t.text_plan is not None for t in TEMPLATES.values())


hostile = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.text(alphabet=" \t=\n\r.é·From", max_size=12),
    st.sampled_from(["", " ", "We are open late.", "x" * 200]),
)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(TEXTS)), first=hostile, city=hostile)
@example(name="ends-with-field", first="a", city="")
@example(name="ends-with-line-end", first="", city="")
@example(name="one-field", first="", city="")
@example(name="ends-with-two", first="", city="")
def test_the_plan_makes_the_general_paths_bytes(name: str, first: Any, city: Any) -> None:
    plan_part, general_part = both(TEMPLATES[name], {"first_name": first, "city": city})
    assert plan_part == general_part


@pytest.mark.parametrize(
    ("context", "why"),
    [
        ({"first_name": "a\nb", "city": ""}, "a line end in a value"),
        ({"first_name": "a\rb", "city": ""}, "a carriage return"),
        ({"first_name": 3, "city": ""}, "not a str"),
        ({"first_name": "x"}, "a field the context lacks"),
    ],
)
def test_values_the_plan_cannot_carry_go_the_general_way(context: dict[str, Any], why: str) -> None:
    template = TEMPLATES["ends-with-field"]
    assert template.text_plan is not None
    assert template.text_plan.part(context, {}, {}) is None, why
    plan_part, general_part = both(template, context)
    assert plan_part == general_part


def test_a_text_with_a_condition_keeps_the_general_path() -> None:
    template = compiled("{% if city %}{{ city }}{% endif %} {{ first_name }}")
    assert template.text_plan is None
    plan_part, general_part = both(template, {"first_name": "Ana", "city": "Leeds"})
    assert plan_part == general_part


PLAIN_EDGES = [
    *("a" * n for n in (0, 1, 74, 75, 76, 77, 149, 150, 151, 152, 225, 226, 227)),
    "." * 76,  # a soft break leaves a lone "." on the next line
    "b" * 75 + " " + "c",  # a space just before the soft break
    "https://m.example/t/c/" + "A" * 90,  # a tracked link's shape
]
NOT_PLAIN_CHARACTERS = ["a=b", "é", "a\tb", "a\x7fb"]
NOT_PLAIN_LINES = [".", "a ", "x" * 80 + " "]  # plain characters, but QP encodes them


@pytest.mark.parametrize("value", PLAIN_EDGES + NOT_PLAIN_CHARACTERS + NOT_PLAIN_LINES)
def test_plain_lines_and_their_edges_match_binascii(value: str) -> None:
    """Plain lines take string slices, the rest binascii: both give binascii's bytes at
    the soft-break lengths, and a line that is only a dot or ends in a space is encoded."""
    template = TEMPLATES["ends-with-two"]
    plan_part, general_part = both(template, {"first_name": value, "city": "Leeds"})
    assert plan_part == general_part
    first_line = plan_part.split(b"\r\n\r\n")[0] if value else b""
    assert all(len(line) <= 76 for line in first_line.split(b"\r\n"))


@pytest.mark.parametrize("value", PLAIN_EDGES)
def test_the_slice_encoder_is_binascii_for_plain_lines(value: str) -> None:
    import binascii

    from carepost.content import text_part

    assert text_part._is_plain(value)
    assert text_part._plain_line(value).encode() == binascii.b2a_qp((value + "\r\n").encode())


@pytest.mark.parametrize("value", NOT_PLAIN_CHARACTERS)
def test_what_is_not_plain(value: str) -> None:
    from carepost.content import text_part

    assert not text_part._is_plain(value)
