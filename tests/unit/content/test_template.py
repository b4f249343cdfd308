"""Templates: save-time rules, the sandbox, rendering, links and the text part."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from carepost.content.fields import phi_context
from carepost.content.template import (
    TemplateRejected,
    TemplateSpec,
    check,
    compile_template,
)
from carepost.content.text import html_to_text

FOOTER = '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · {{ sender_postal_address }}</p>'


def spec(**kw) -> TemplateSpec:  # type: ignore[no-untyped-def]
    base = {
        "name": "t",
        "subject": "Flu shots are here",
        "html": "<p>Hi {{ first_name }}</p>" + FOOTER,
        "message_class": "marketing",
        "phi_fields": ("first_name",),
    }
    return TemplateSpec(**{**base, **kw})


def problems(**kw) -> list[tuple[str, int | None, str | None]]:  # type: ignore[no-untyped-def]
    return [(p.part, p.line, p.field) for p in check(spec(**kw))]


def test_a_good_template_passes() -> None:
    assert check(spec()) == []


def test_undeclared_field_is_named_with_its_line() -> None:
    html = "<p>Hi {{ first_name }}</p>\n<p>Due {{ next_appointment_date }}</p>" + FOOTER
    found = check(spec(html=html))
    assert [(p.part, p.line, p.field) for p in found] == [("html", 2, "next_appointment_date")]
    assert "not declared" in found[0].message


def test_unknown_field_suggests_the_nearest() -> None:
    found = check(spec(html="<p>{{ frist_name }}</p>" + FOOTER, phi_fields=()))
    assert found[0].field == "frist_name"
    assert "did you mean 'first_name'" in found[0].message
    declared = check(spec(phi_fields=("first_name", "last_nme")))
    assert any("did you mean 'last_name'" in p.message for p in declared)


def test_declared_but_unused_is_refused() -> None:
    assert ("phi_fields", None, "mrn") in problems(phi_fields=("first_name", "mrn"))


def test_non_phi_fields_need_no_declaration_and_cannot_be_declared() -> None:
    assert ("phi_fields", None, "sender_name") in problems(phi_fields=("first_name", "sender_name"))


def test_phi_in_subject_only_by_secure_delivery() -> None:
    assert ("subject", 1, "first_name") in problems(subject="Hi {{ first_name }}")
    assert problems(subject="Hi {{ first_name }}", secure_delivery=True) == []
    # Undeclared PHI in a subject is refused for both reasons.
    both = problems(subject="{{ mrn }}")
    assert ("subject", 1, "mrn") in both


@pytest.mark.parametrize("klass", ["marketing", "marketing_paid"])
def test_marketing_needs_unsubscribe_and_postal_address(klass: str) -> None:
    bare = problems(message_class=klass, html="<p>Hi {{ first_name }}</p>")
    assert ("html", None, "unsubscribe_url") in bare
    assert ("html", None, "sender_postal_address") in bare
    text_missing = problems(message_class=klass, text="Hi {{ first_name }}")
    assert ("text", None, "unsubscribe_url") in text_missing


@pytest.mark.parametrize("klass", ["treatment", "operations", "transactional"])
def test_exempt_classes_need_no_footer(klass: str) -> None:
    assert problems(message_class=klass, html="<p>Hi {{ first_name }}</p>") == []


def test_unknown_class_is_refused() -> None:
    assert ("message_class", None, None) in problems(message_class="newsletter")


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ first_name.__class__ }}",
        "{{ first_name|attr('__class__') }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ self._TemplateReference__context }}",
        "{{ request.application.__globals__ }}",
        "{{ config.items() }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
        "{% include '/etc/passwd' %}",
        "{% import 'x' as y %}",
        "{% macro m() %}{% endmacro %}",
        "{{ first_name|map('upper')|list }}",
        "{{ first_name['__class__'] }}",
        "{% set x = 1 %}",
        "{{ range(10) }}",
    ],
)
def test_sandbox_escapes_are_refused_at_save(attack: str) -> None:
    found = check(spec(html="<p>" + attack + "</p>" + FOOTER))
    assert found, attack
    with pytest.raises(TemplateRejected):
        compile_template(spec(html="<p>" + attack + "</p>" + FOOTER))


def test_syntax_errors_name_the_line() -> None:
    found = check(spec(html="<p>ok</p>\n<p>{{ first_name </p>" + FOOTER))
    assert found[0].part == "html"
    assert found[0].line == 2
    assert found[0].message.startswith("syntax:")


def test_merge_fields_in_link_urls_are_refused() -> None:
    html = (
        '<p>{{ first_name }}</p>\n<a href="https://x.example/?id={{ first_name }}">x</a>' + FOOTER
    )
    found = check(spec(html=html))
    assert [(p.part, p.line) for p in found] == [("html", 2)]


def test_render_escapes_html_and_rewrites_links() -> None:
    html = (
        "<html><head><style>p { color: #123456 }</style></head><body>"
        "<p>Hi {{ first_name }}</p>"
        '<a href="https://clinic.example/flu?a=1&amp;b=2">Book</a>'
        '<a href="https://clinic.example/about">About</a>'
        '<a href="mailto:help@clinic.example">Mail us</a>' + FOOTER + "</body></html>"
    )
    compiled = compile_template(spec(html=html))
    assert compiled.links == ("https://clinic.example/flu?a=1&b=2", "https://clinic.example/about")
    out = compiled.render(
        {
            "first_name": "<script>alert(1)</script>",
            "unsubscribe_url": "https://c.example/u/T",
            "sender_postal_address": "1 Main St, Boston MA",
        },
        ["https://t.example/c/0", "https://t.example/c/1"],
        "https://t.example/o/X",
    )
    assert "<script>" not in out.html
    assert "&lt;script&gt;" in out.html
    assert 'style="color: #123456;"' in out.html
    assert 'href="https://t.example/c/0"' in out.html
    assert 'href="https://t.example/c/1"' in out.html
    assert "clinic.example/flu" not in out.html
    assert 'href="mailto:help@clinic.example"' in out.html
    assert out.html.count('<img src="https://t.example/o/X"') == 1
    assert out.html.index("<img") < out.html.index("</body>")
    assert "Book (https://t.example/c/0)" in out.text
    assert "<script>alert(1)</script>" in out.text  # plain text is not HTML
    assert "img" not in out.text
    assert not re.search(r"cpmark", out.html + out.text)


def test_no_pixel_when_not_tracked() -> None:
    out = compile_template(spec()).render(
        {"first_name": "A", "unsubscribe_url": "u", "sender_postal_address": "p"}, [], None
    )
    assert "<img" not in out.html


def test_rendered_value_cannot_forge_a_marker() -> None:
    compiled = compile_template(
        spec(html='<a href="https://a.example">a</a>{{ first_name }}' + FOOTER)
    )
    nonce = compiled._marker.pattern
    out = compiled.render(
        {
            "first_name": "cpmark0000000000000000x",
            "unsubscribe_url": "u",
            "sender_postal_address": "p",
        },
        ["https://t.example/c/0"],
        None,
    )
    assert "cpmark0000000000000000x" in out.html
    assert nonce  # the real marker carries a random nonce the value could not know


def test_context_holds_only_declared_fields() -> None:
    record = {
        "name": {"given": ["Ana"], "family": "Diaz"},
        "birth_date": "1970-01-02",
        "mrn": "M1",
        "attributes": {"plan": "gold"},
    }
    facts = [
        {"kind": "appointment", "date": "2026-12-01", "status": "booked"},
        {"kind": "appointment", "date": "2026-11-30", "status": "cancelled"},
        {"kind": "appointment", "date": "2026-01-01", "status": "booked"},
        {"kind": "encounter", "date": "2026-10-01"},
        {"kind": "encounter", "date": "2027-10-01"},
    ]
    at = datetime(2026, 11, 24, tzinfo=UTC)
    ctx = phi_context(
        ["first_name", "next_appointment_date", "last_visit_date", "attr_plan", "data_result"],
        record,
        facts,
        at,
        {"result": "ready"},
    )
    assert ctx == {
        "first_name": "Ana",
        "next_appointment_date": "2026-12-01",
        "last_visit_date": "2026-10-01",
        "attr_plan": "gold",
        "data_result": "ready",
    }
    assert "mrn" not in ctx
    assert "birth_date" not in ctx


def test_missing_values_render_empty_not_none() -> None:
    out = compile_template(spec(html="<p>Hi {{ first_name }}!</p>" + FOOTER)).render(
        {"first_name": None, "unsubscribe_url": "u", "sender_postal_address": "p"}, [], None
    )
    assert "Hi !" in out.html
    assert "None" not in out.html


def test_html_to_text_reads_well() -> None:
    text = html_to_text(
        "<html><head><title>x</title><style>p{}</style></head><body>"
        "<h1>Flu   season</h1><p>Book <a href='https://a.example'>here</a>.</p>"
        "<ul><li>one</li><li>two</li></ul><p>a<br>b</p><script>x()</script></body></html>"
    )
    assert text == "Flu season\n\nBook here (https://a.example).\n\n- one\n- two\n\na\nb\n"


def test_every_marker_is_swapped_in_both_parts() -> None:
    links = "".join(f'<p><a href="https://clinic.example/{i}">Link {i}</a></p>' for i in range(12))
    compiled = compile_template(
        spec(html=f"<html><body>{links}{FOOTER}</body></html>", phi_fields=())
    )
    urls = [f"https://t.example/c/{i}" for i in range(12)]
    out = compiled.render(
        {"first_name": "A", "unsubscribe_url": "u", "sender_postal_address": "p"},
        urls,
        "https://t.example/o/X",
    )
    for i, url in enumerate(urls):
        assert f'href="{url}"' in out.html
        assert f"Link {i} ({url})" in out.text
    assert out.html.count("https://t.example/o/X") == 1
    assert "cpmark" not in out.html + out.text


def test_fixed_text_lines_hold_no_merge_field_and_no_link() -> None:
    compiled = compile_template(
        spec(
            html='<p>Hi {{ first_name }}</p><p>Same for all.</p><a href="https://a.example">a</a>'
            + FOOTER
        )
    )
    assert "Same for all." in compiled.fixed_text_lines
    assert not any("{" in line or "cpmark" in line for line in compiled.fixed_text_lines)


def test_a_subject_without_fields_is_made_once() -> None:
    fixed = compile_template(spec(subject="Flu  shots\nare here"))
    assert fixed.fixed_subject == "Flu shots are here"
    context = {"first_name": "A", "unsubscribe_url": "u", "sender_postal_address": "p"}
    assert fixed.render(context, [], None).subject == "Flu shots are here"
    merged = compile_template(spec(subject="News from {{ organization_name }}"))
    assert merged.fixed_subject is None
    out = merged.render({**context, "organization_name": "Clinic  One"}, [], None)
    assert out.subject == "News from Clinic One"


def test_honeypot_is_hidden_first_in_the_body_and_only_in_html() -> None:
    compiled = compile_template(
        spec(
            html='<html><body class="x"><a href="https://a.example">a</a>{{ first_name }}'
            + FOOTER
            + "</body>"
        )
    )
    context = {"first_name": "A", "unsubscribe_url": "u", "sender_postal_address": "p"}
    out = compiled.render(context, ["https://t.example/c/0"], None, "https://t.example/c/1")
    hidden = (
        '<a href="https://t.example/c/1" style="display:none" aria-hidden="true" tabindex="-1"></a>'
    )
    assert out.html.startswith('<html><head></head><body class="x">' + hidden)
    assert out.html.count("https://t.example/c/1") == 1
    assert "t.example/c/1" not in out.text
    assert "t.example/c/0" in out.text
    assert compiled.links == ("https://a.example",)  # not a link of the template
    assert "display:none" not in compiled.render(context, ["https://t.example/c/0"], None).html


def test_too_many_links_are_refused_at_save_time() -> None:
    links = "".join(f'<a href="https://a.example/{i}">x</a>' for i in range(9999))
    hi = "<p>Hi {{ first_name }}</p>"
    assert problems(html=hi + links + FOOTER) == [("html", None, None)]
    allowed = links[: links.index('<a href="https://a.example/9998"')]
    assert problems(html=hi + allowed + FOOTER) == []
