"""Write tests/data/tracking_replay.jsonl: the labelled replay set of opens and clicks.

Deterministic (fixed seed) and independent of the classifier: each scenario is labelled by
what produced it (a person, Apple's proxy, a gateway's scanner, ...), not by any rule.
Addresses: Apple's 17.0.0.0/8, Google's image-proxy networks and security vendors' blocks
where the scenario is such a fetcher; documentation ranges (RFC 5737) for people.
Run: python tests/data/make_tracking_replay.py"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

OUT = Path(__file__).with_name("tracking_replay.jsonl")
START = datetime(2026, 2, 2, 8, 0, tzinfo=UTC)

DESKTOP = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/122.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:123.0) Gecko/20100101 Firefox/123.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.3.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/121.0.0.0 Safari/537.36 Edg/121.0.2277.128",
    "Mozilla/5.0 (X11; Linux x86_64; rv:122.0) Gecko/20100101 Firefox/122.0",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
    "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Thunderbird/115.8.0",
]
MOBILE = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.3 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/122.0.6261.64 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 12; moto g(60)) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/121.0.0.0 Mobile Safari/537.36",
    "Outlook-iOS/723.4027091.prod.iphone (4.2404.0)",
]
GMAIL = [
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
]
SCANNER_BROWSER = DESKTOP[:5]
BOTS = [
    "python-requests/2.31.0",
    "curl/8.4.0",
    "Go-http-client/1.1",
    "okhttp/4.12.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/121.0.0.0 Safari/537.36",
]
SCANNER_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) BingPreview/1.0b",
    "Barracuda Sentinel (EE)",
    "Mozilla/5.0 (compatible; Mimecast URL Protect)",
]
SCANNER_NETS = [
    "40.107.{}.{}",
    "52.101.{}.{}",
    "104.47.{}.{}",
    "205.139.110.{1}",
    "148.163.{}.{}",
    "209.222.82.{1}",
]
HUMAN_NETS = ["192.0.2.{1}", "198.51.100.{1}", "203.0.113.{1}"]
BROWSER_HEADERS = {"Accept": "text/html,application/xhtml+xml", "Accept-Language": "en-US"}
IMAGE_HEADERS = {"Accept": "image/avif,image/webp,*/*"}

rng = random.Random(20260202)
lines: list[dict[str, object]] = []
counter = 0


def ip(pattern: str) -> str:
    return pattern.format(rng.randint(0, 255) if "{}" in pattern else 0, rng.randint(1, 254))


def message() -> tuple[str, datetime, int]:
    global counter
    counter += 1
    delivered = START + timedelta(minutes=rng.randint(0, 60 * 24 * 20), seconds=rng.randint(0, 59))
    return f"msg-{counter:04d}", delivered, rng.randint(2, 6)


def add(
    scenario: str,
    label: str,
    mid: str,
    delivered: datetime,
    after: timedelta,
    *,
    kind: str,
    link: int | None = None,
    method: str = "GET",
    ua: str,
    address: str,
    headers: dict[str, str] | None = None,
    links: int | None = None,
    honeypot: bool = False,
) -> None:
    at = delivered + after
    doc: dict[str, object] = {
        "message_id": mid,
        "kind": kind,
        "link_index": link,
        "method": method,
        "user_agent": ua,
        "ip": address,
        "headers": headers
        if headers is not None
        else (IMAGE_HEADERS if kind == "open" else BROWSER_HEADERS),
        "delivered_at": delivered.isoformat().replace("+00:00", "Z"),
        "at": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    if links is not None:
        doc["message_links"] = links
    if honeypot:
        doc["honeypot"] = True
    doc["label"] = label
    doc["scenario"] = scenario
    lines.append(doc)


def human_delay() -> timedelta:
    # Minutes to days: most people open within hours, some days later.
    return timedelta(
        seconds=rng.choice(
            [rng.randint(30, 600), rng.randint(600, 36000), rng.randint(36000, 5 * 86400)]
        )
    )


for _ in range(55):  # Apple MPP: bare agent from Apple's network, soon after delivery
    mid, delivered, _n = message()
    add(
        "apple_mpp_prefetch",
        "machine",
        mid,
        delivered,
        timedelta(seconds=rng.choice([rng.randint(1, 30), rng.randint(30, 3600)])),
        kind="open",
        ua="Mozilla/5.0",
        address=ip("17.{}.{}.0").rsplit(".", 1)[0] + f".{rng.randint(1, 254)}",
    )
for _ in range(35):  # Gmail proxy: the person opens; later the cache expires and it refetches
    mid, delivered, _n = message()
    first = human_delay()
    addr = ip(
        rng.choice(["66.249.{}.{}", "74.125.{}.{}"]).replace(
            "66.249.{}", f"66.249.{rng.randint(80, 95)}"
        )
    )
    add(
        "gmail_proxy_first_fetch",
        "human",
        mid,
        delivered,
        first,
        kind="open",
        ua=GMAIL[0],
        address=addr,
    )
    if rng.random() < 0.7:
        add(
            "gmail_proxy_cached_reopen",
            "human",
            mid,
            delivered,
            first + timedelta(hours=rng.randint(6, 96)),
            kind="open",
            ua=GMAIL[0],
            address=addr,
        )
for _ in range(20):  # Safe Links and other gateways: every link within a second of arrival
    mid, delivered, n = message()
    net = rng.choice(SCANNER_NETS)
    ua = rng.choice(SCANNER_BROWSER)
    start = timedelta(seconds=rng.uniform(0.5, 25))
    for link in rng.sample(range(n), n):
        add(
            "scanner_click_burst",
            "machine",
            mid,
            delivered,
            start,
            kind="click",
            link=link,
            ua=ua,
            address=ip(net),
            links=n,
        )
        start += timedelta(milliseconds=rng.randint(20, 250))
for _ in range(15):  # Scanners that name themselves, a single link, some time after arrival
    mid, delivered, n = message()
    add(
        "scanner_named_agent",
        "machine",
        mid,
        delivered,
        timedelta(seconds=rng.randint(20, 900)),
        kind="click",
        link=rng.randrange(n),
        ua=rng.choice(SCANNER_UAS),
        address=ip(rng.choice(HUMAN_NETS)),
        links=n,
    )
for _ in range(15):  # the hidden link nobody sees
    mid, delivered, n = message()
    add(
        "honeypot_hit",
        "machine",
        mid,
        delivered,
        timedelta(seconds=rng.randint(20, 7200)),
        kind="click",
        link=n,
        ua=rng.choice(DESKTOP[:5]),
        address=ip(rng.choice(HUMAN_NETS)),
        links=n,
        honeypot=True,
    )
for _ in range(15):
    mid, delivered, n = message()
    add(
        "head_request",
        "machine",
        mid,
        delivered,
        timedelta(seconds=rng.randint(20, 7200)),
        kind=(kind := rng.choice(["open", "click"])),
        link=0 if kind == "click" else None,
        method="HEAD",
        ua=rng.choice(DESKTOP[:5]),
        address=ip(rng.choice(HUMAN_NETS)),
        links=n,
    )
for _ in range(15):
    mid, delivered, n = message()
    hint = rng.choice(
        [
            {"Sec-Purpose": "prefetch"},
            {"Purpose": "prefetch"},
            {"Sec-Purpose": "prefetch;prerender"},
        ]
    )
    add(
        "prefetch_hint",
        "machine",
        mid,
        delivered,
        timedelta(seconds=rng.randint(20, 7200)),
        kind="click",
        link=rng.randrange(n),
        ua=rng.choice(DESKTOP[:5]),
        address=ip(rng.choice(HUMAN_NETS)),
        headers={**BROWSER_HEADERS, **hint},
        links=n,
    )
for _ in range(12):
    mid, delivered, n = message()
    add(
        "http_library",
        "machine",
        mid,
        delivered,
        timedelta(seconds=rng.randint(20, 86400)),
        kind=(kind := rng.choice(["open", "click"])),
        link=0 if kind == "click" else None,
        ua=rng.choice(BOTS),
        address=ip(rng.choice(HUMAN_NETS)),
        links=n,
    )
for _ in range(8):  # the hard case: a gateway we do not know, one link, a browser agent
    mid, delivered, n = message()
    add(
        "unknown_scanner_single_click",
        "machine",
        mid,
        delivered,
        timedelta(seconds=rng.randint(12, 40)),
        kind="click",
        link=rng.randrange(n),
        ua=rng.choice(SCANNER_BROWSER),
        address=ip("198.51.100.{1}"),
        links=n,
    )
for clients, scenario in ((DESKTOP, "human_desktop"), (MOBILE, "human_mobile")):
    for _ in range(45):
        mid, delivered, n = message()
        ua = rng.choice(clients)
        addr = ip(rng.choice(HUMAN_NETS))
        opened = human_delay()
        add(f"{scenario}_open", "human", mid, delivered, opened, kind="open", ua=ua, address=addr)
        if rng.random() < 0.55:
            clicked = opened + timedelta(seconds=rng.randint(4, 900))
            for link in rng.sample(range(n), rng.choice([1, 1, 1, 2])):
                add(
                    f"{scenario}_click",
                    "human",
                    mid,
                    delivered,
                    clicked,
                    kind="click",
                    link=link,
                    ua=ua,
                    address=addr,
                    links=n,
                )
                clicked += timedelta(seconds=rng.randint(5, 600))

OUT.write_text("".join(json.dumps(doc, sort_keys=False) + "\n" for doc in lines), encoding="utf-8")
print(f"{len(lines)} events -> {OUT}")
