"""A `StaticResolver` from a JSON file: local development and the CLI's tests only.

Named by the setting `CAREPOST_DEV_INSECURE_STATIC_DNS` because it replaces real DNS with
whatever the file says, MTA-STS policy hosts included (and may trust an extra CA for
them). The file:

    {"mx":    {"example.test": [[10, "mx1.example.test"]]},
     "txt":   {"example.test": ["v=spf1 -all"]},
     "hosts": {"mx1.example.test": ["127.0.0.1", "127.0.0.1:2525"]},
     "failing": ["broken.example.test"],
     "mta_sts_ca_file": "/path/to/ca.pem"}

Host entries may carry a port; a host `mta-sts.<domain>` with an address makes the
MTA-STS fetcher connect there (still verifying the certificate for that name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from carepost.delivery.resolver import SMTP_PORT, Address, StaticResolver

HTTPS_PORT = 443


class StaticDnsError(ValueError):
    pass


@dataclass(frozen=True)
class StaticDns:
    resolver: StaticResolver
    connect_to: Mapping[str, tuple[str, int]]
    ca_file: str | None


def _address(text: Any, where: str) -> Address:
    if not isinstance(text, str) or not text:
        raise StaticDnsError(f"{where}: an address must be a string like 127.0.0.1[:port]")
    ip, port = text, SMTP_PORT
    if text.count(":") == 1 or text.startswith("["):
        host, _, port_text = text.rpartition(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise StaticDnsError(f"{where}: the port must be a number from 1 to 65535")
        ip, port = host.strip("[]"), int(port_text)
    return Address(ip, port)


def _names(doc: dict[str, Any], key: str) -> dict[str, Any]:
    table = doc.get(key, {})
    if not isinstance(table, dict):
        raise StaticDnsError(f"{key}: must be an object of name -> records")
    return {str(k).rstrip(".").lower(): v for k, v in table.items()}


def load_static_dns(path: Path) -> StaticDns:
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise StaticDnsError(f"{path}: cannot read ({exc.strerror})") from None
    except orjson.JSONDecodeError as exc:
        raise StaticDnsError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise StaticDnsError(f"{path}: the top level must be an object")
    unknown = set(doc) - {"mx", "txt", "hosts", "failing", "mta_sts_ca_file"}
    if unknown:
        raise StaticDnsError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    mx: dict[str, list[tuple[int, str]]] = {}
    for name, rows in _names(doc, "mx").items():
        if not isinstance(rows, list):
            raise StaticDnsError(f"mx.{name}: must be a list of [preference, host]")
        for i, row in enumerate(rows):
            ok = isinstance(row, list) and len(row) == 2
            if not ok or not isinstance(row[0], int) or not isinstance(row[1], str):
                raise StaticDnsError(f"mx.{name}[{i}]: must be [preference, host]")
        mx[name] = [(int(r[0]), str(r[1])) for r in rows]
    txt: dict[str, list[str]] = {}
    for name, rows in _names(doc, "txt").items():
        if not isinstance(rows, list) or not all(isinstance(r, str) for r in rows):
            raise StaticDnsError(f"txt.{name}: must be a list of strings")
        txt[name] = list(rows)
    hosts: dict[str, list[Address]] = {}
    for name, rows in _names(doc, "hosts").items():
        if not isinstance(rows, list):
            raise StaticDnsError(f"hosts.{name}: must be a list of addresses")
        hosts[name] = [_address(r, f"hosts.{name}[{i}]") for i, r in enumerate(rows)]
    failing = doc.get("failing", [])
    if not isinstance(failing, list) or not all(isinstance(f, str) for f in failing):
        raise StaticDnsError("failing: must be a list of names")
    ca_file = doc.get("mta_sts_ca_file")
    if ca_file is not None and not isinstance(ca_file, str):
        raise StaticDnsError("mta_sts_ca_file: must be a path")
    resolver = StaticResolver(
        mx_records=mx,
        txt_records=txt,
        hosts=hosts,
        failing=frozenset(f.rstrip(".").lower() for f in failing),
    )
    connect_to = {
        name: (addrs[0].ip, addrs[0].port if addrs[0].port != SMTP_PORT else HTTPS_PORT)
        for name, addrs in hosts.items()
        if name.startswith("mta-sts.") and addrs
    }
    return StaticDns(resolver, connect_to, ca_file)
