"""The labelled user-agent samples of the shared third-party lists (test data only; carepost
never reads them at runtime). See $CAREPOST_SHARED_DATA/user-agents/PROVENANCE.md."""

from __future__ import annotations

import json
from pathlib import Path

# Agents the lists call bots but carepost deliberately counts as a person's fetch: mail
# providers' image proxies fetch when the person opens (classifier.py explains), and
# Outlook/Office fetch images and links for the person using them (isbot lists them as
# browsers; Crawler-Detect as bots: the lists disagree).
PERSON_AGENTS = (
    "googleimageproxy",
    "via ggpht.com",
    "yahoomailproxy",
    "microsoft office",
    "microsoft outlook",
    "macoutlook/",
    "outlook-ios",
    "outlook-express",
)


def _is_person_agent(ua: str) -> bool:
    low = ua.lower()
    return any(token in low for token in PERSON_AGENTS)


def browsers(folder: Path) -> list[str]:
    """Real browser and app UAs (isbot's fixtures/browsers.yml): expected not bots."""
    return _yaml_items(folder / "isbot" / "browsers.yml")


def bots(folder: Path) -> list[str]:
    """Real crawler UAs from three lists, less the agents that stand for a person."""
    found: list[str] = []
    found += _yaml_items(folder / "isbot" / "crawlers.yml")
    text = (folder / "crawler-detect" / "crawlers-sample-user-agents.txt").read_text(
        encoding="utf-8", errors="replace"
    )
    found += text.splitlines()
    entries = json.loads(
        (folder / "monperrus-crawler-user-agents" / "crawler-user-agents.json").read_text(
            encoding="utf-8"
        )
    )
    found += [ua for entry in entries for ua in entry.get("instances", [])]
    unique = dict.fromkeys(ua.strip() for ua in found if ua.strip())
    return [ua for ua in unique if not _is_person_agent(ua)]


def _yaml_items(path: Path) -> list[str]:
    """The list items of isbot's fixture files (a map of name -> list of strings). Read by
    hand so the tests need no YAML library; the files use only plain and quoted scalars."""
    items: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("  - "):
            continue
        value = line[4:].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            quote, value = value[0], value[1:-1]
            value = value.replace("''", "'") if quote == "'" else value.replace('\\"', '"')
        if value:
            items.append(value)
    return items
