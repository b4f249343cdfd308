"""The text/plain part from the HTML, for templates that give none.

Readable rather than faithful: blocks become paragraphs, list items get a dash, links
read "label (url)", and styles, scripts and images disappear. Jinja tags in text nodes
pass through untouched, so the result is itself a template.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK = frozenset(
    {
        "p", "div", "tr", "table", "ul", "ol", "blockquote", "section", "article", "header",
        "footer", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "center", "main", "nav",
    }
)  # fmt: skip
_SKIP = frozenset({"style", "script", "head", "title", "template"})


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.href: list[str | None] = []
        self.label: list[int] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag in _BLOCK:
            self.out.append("\n\n")
        elif tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag == "a":
            self.href.append(dict(attrs).get("href"))
            self.label.append(len(self.out))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.out.append("\n")
        elif tag == "hr":
            self.out.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK:
            self.out.append("\n\n")
        elif tag == "a" and self.href:
            href = self.href.pop()
            start = self.label.pop()
            label = "".join(self.out[start:]).strip()
            if href and not href.startswith("#") and href != label:
                target = href.removeprefix("mailto:")
                self.out.append(f" ({target})" if label else target)

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.out).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
