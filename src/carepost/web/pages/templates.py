"""Page templates (Jinja2, autoescaped). Kept in code so the wheel needs no data files."""

from __future__ import annotations

from jinja2 import DictLoader, Environment, select_autoescape

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{ title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;
line-height:1.5}button{font-size:1rem;padding:.6rem 1.2rem}label{display:block;margin:.4rem 0}
.note{color:#555;font-size:.9rem}</style></head>
<body><main>{% block body %}{% endblock %}</main></body></html>"""

_UNSUBSCRIBE = """{% extends "base.html" %}{% block body %}
<h1>Unsubscribe</h1>
<p>Stop {{ channel_name }} messages about <strong>{{ topic }}</strong>?</p>
<form method="post" action="/u/{{ token }}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form>
<p class="note">Nothing changes until you press the button.
<a href="/p/{{ token }}">Manage all your preferences</a>.</p>
{% endblock %}"""

_DONE = """{% extends "base.html" %}{% block body %}
<h1>{{ heading }}</h1><p>{{ message }}</p>
{% if token %}<p class="note"><a href="/p/{{ token }}">Manage all your preferences</a>.</p>
{% endif %}
{% endblock %}"""

_PREFERENCES = """{% extends "base.html" %}{% block body %}
<h1>Your {{ channel_name }} preferences</h1>
<form method="post" action="/p/{{ token }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
{% for topic, receiving in topics %}
<input type="hidden" name="shown" value="{{ topic }}">
<label><input type="checkbox" name="receive" value="{{ topic }}"
{%- if receiving %} checked{% endif %}>
{{ topic }}</label>
{% endfor %}
<hr>
<label><input type="checkbox" name="unsubscribe_all" value="yes"
{%- if unsubscribed_all %} checked disabled{% endif %}>
Unsubscribe from everything on this channel</label>
<p class="note">Unsubscribing from everything also stops appointment, care and account
messages on this channel
{%- if unsubscribed_all %} (already in effect; to undo it, contact us){% endif %}.</p>
<button type="submit">Save</button></form>
{% if saved %}<p><strong>Saved.</strong> Changes apply immediately.</p>{% endif %}
{% endblock %}"""

env = Environment(
    loader=DictLoader(
        {
            "base.html": _BASE,
            "unsubscribe.html": _UNSUBSCRIBE,
            "done.html": _DONE,
            "preferences.html": _PREFERENCES,
        }
    ),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def render(name: str, **context: object) -> str:
    return env.get_template(name).render(**context)
