"""What a User-Agent header says about who fetched a pixel or followed a link.

carepost ships its own compact, curated patterns (written here, not copied from any list):
a user's install has no third-party list files. The shared lists in the project's test data
(`$CAREPOST_SHARED_DATA/user-agents/`) are used only by the tests and the accuracy benchmark
to measure these patterns: their bots must match, their browsers must not.

All patterns are compiled once into one alternation with a named group per family, so a
lookup is one regex search (microseconds) whatever the number of patterns."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

UaFamily = Literal["google_proxy", "mail_proxy", "scanner", "bot", "generic"]

# Mail providers' image proxies fetch when a person opens the message (they do not
# prefetch on delivery), so their fetches stand for human opens. See classifier.py.
_GOOGLE_PROXY = r"GoogleImageProxy|via ggpht\.com"
_MAIL_PROXY = r"YahooMailProxy"

# Security gateways and link scanners that say who they are. Most of them send a browser
# UA instead; those are caught by network and timing, not here.
_SCANNERS = r"|".join(
    (
        r"BingPreview",
        r"Barracuda",
        r"Mimecast",
        r"Proofpoint",
        r"urldefense",
        r"Symantec",
        r"MessageLabs",
        r"IronPort",
        r"Cisco[ -]?(?:Secure|ESA)",
        r"Trend ?Micro",
        r"FortiMail|FortiGuard",
        r"Sophos",
        r"ZScaler",
        r"Forcepoint",
        r"SafeLinks?|Safe Links|ATP[ -]Safe",
        r"Microsoft Defender",
        r"Google-Safety",
        r"Checkpoint|Check Point",
        r"Virus ?Total",
        r"Mail\.RU_Bot",
        r"SkypeUriPreview",
        r"Slack(?:bot|-ImgProxy)",
        r"MailChimp",
    )
)

# Automated clients in general: crawlers, HTTP libraries, headless browsers, preview and
# monitoring fetchers. The word list is deliberately generic ("bot", "crawl", ...) with
# guards for the few phone and browser names that contain those words.
_BOTS = r"|".join(
    (
        r"(?<!cu)bot(?![a-z])",  # "Googlebot", "bot/1.0"; not "Cubot"
        r"robot",
        r"crawl",
        r"spider",
        r"scrap(?:er|y|ing)",
        r"slurp",
        r"fetcher|\bfetch/",
        r"(?:link|url|page|site|web)[ _-]?(?:check|scan|preview|monitor|inspect)",
        r"preview",
        r"monitor(?:ing)?\b",
        r"uptime",
        r"pingdom",
        r"validator",
        r"archiver?\b",
        r"headless",
        r"phantomjs",
        r"selenium",
        r"puppeteer",
        r"playwright",
        r"\bwebdriver",
        r"python|aiohttp|httpx|requests/",
        r"\bcurl\b|\bwget\b|libwww-perl|\blwp-|winhttp|wininet",
        r"\bjava/|apache-httpclient|okhttp|go-http-client|\bgo \d|node-fetch|axios|undici",
        r"\bruby\b|\bperl\b|\bphp/|guzzle|restsharp|postman",
        r"feed|rss",
        r"https?://|\+https?|www\.|(?-i:[a-z0-9]\.(?:com|net|org)\b)",
        r"health.?check|\bscan(?:ner)?\b|\bprobe|\bsurvey|synthetic|verification|\bdcv\b",
        r"catchpoint|gomez|datadog|cloudflare|lighthouse|pagespeed|apachebench|benchmark",
        r"google-|-google\b|extractor|analy[sz]er|lookup|collectd|\bagent/",
        r"facebookexternalhit|embedly|onebox|\bdiscourse",
        r"^(?:Mozilla/\d\.\d \(compatible;?\)?|-|\s*)$",
    )
)

# A bare "Mozilla/5.0" (no platform, no engine): what Apple Mail Privacy Protection's
# proxy sends. Not a bot by itself; the classifier weighs it with the source network.
_GENERIC = r"^Mozilla/5\.0$"

# Order matters: the first family that matches names the UA. Mail proxies first (their
# UAs say "via ggpht.com", which the URL-ish bot guard would otherwise take).
_COMBINED = re.compile(
    rf"(?P<google_proxy>{_GOOGLE_PROXY})"
    rf"|(?P<mail_proxy>{_MAIL_PROXY})"
    rf"|(?P<scanner>{_SCANNERS})"
    rf"|(?P<generic>{_GENERIC})"
    rf"|(?P<bot>{_BOTS})",
    re.IGNORECASE,
)

# Strings in ordinary browser and mail-app UAs that contain a bot word but are no bot.
_EXCLUSIONS = re.compile(
    r"Google Pixel|Pixel \d|CUBOT|GSA/|FBAN/|FBAV/|Instagram|Snapchat|Twitter for"
    r"|LinkedInApp|Pinterest|WhatsApp/\d+[\d.]* [AiW]",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class UaMatch:
    family: UaFamily
    token: str  # the matched text: a fixed vendor/bot word from our own patterns


# Real traffic repeats a few thousand user agents; the combined search costs ~100 µs on a
# long one, a cache hit well under one. Pure function of its argument, so safe to cache.
@functools.lru_cache(maxsize=8192)
def match(user_agent: str) -> UaMatch | None:
    """The family of a User-Agent, or None for what looks like a person's browser or mail
    app. Never raises."""
    ua = user_agent.strip()
    if not ua:
        return UaMatch("bot", "")
    found = _COMBINED.search(ua)
    if found is None:
        return None
    family = found.lastgroup
    if family == "bot" and _EXCLUSIONS.search(ua) and not _strong_bot(ua):
        return None
    assert family is not None
    return UaMatch(family, found.group(0)[:40])  # type: ignore[arg-type]


_STRONG = re.compile(r"bot\b|crawl|spider|https?://", re.IGNORECASE)


def _strong_bot(ua: str) -> bool:
    return bool(_STRONG.search(ua))
