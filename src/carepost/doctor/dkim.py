"""DKIM (RFC 6376 3.6.1): the key published at `<selector>._domainkey.<domain>`.

Checks the record's tags, the key's type and size, the testing flag, and, given the value
carepost would publish for the sender profile's private key (`delivery.dkim.
dns_record_value`), that the published key is that key: otherwise every signature fails.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from carepost.doctor.result import Check, Failed, Status, Txt, parse_tags


def record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


@dataclass(frozen=True)
class DkimKey:
    key_type: str  # rsa | ed25519
    public: bytes  # DER SubjectPublicKeyInfo (rsa) or the raw 32 bytes (ed25519)
    bits: int
    flags: tuple[str, ...]  # t=
    hashes: tuple[str, ...]  # h=, empty when absent (any)


class DkimRecordError(ValueError):
    pass


def parse_dkim(record: str) -> DkimKey:
    try:
        tags = parse_tags(record)
    except ValueError as exc:
        raise DkimRecordError(str(exc)) from None
    if "v" in tags:
        if tags["v"] != "DKIM1":
            raise DkimRecordError("v= must be DKIM1")
        if next(iter(tags)) != "v":
            raise DkimRecordError("v=DKIM1 must be the first tag")
    key_type = tags.get("k", "rsa").lower()
    if key_type not in ("rsa", "ed25519"):
        raise DkimRecordError(f"k={key_type[:16]} is not a key type receivers know")
    if "p" not in tags:
        raise DkimRecordError("the record has no p= (public key)")
    data = "".join(tags["p"].split())
    if not data:
        raise DkimRecordError("p= is empty: the key is revoked")
    try:
        public = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise DkimRecordError("p= is not valid base64") from None
    if key_type == "ed25519":
        if len(public) != 32:
            raise DkimRecordError("p= is not a 32-byte Ed25519 key")
        bits = 256
    else:
        try:
            key = load_der_public_key(public)
        except ValueError:
            raise DkimRecordError("p= is not an RSA public key") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise DkimRecordError("p= is not an RSA public key")
        bits = key.key_size
    if "s" in tags:
        services = {s.strip() for s in tags["s"].split(":")}
        if not services & {"*", "email"}:
            raise DkimRecordError("s= does not include email")
    flags = tuple(f.strip() for f in tags.get("t", "").split(":") if f.strip())
    hashes = tuple(h.strip().lower() for h in tags.get("h", "").split(":") if h.strip())
    return DkimKey(key_type, public, bits, flags, hashes)


def _looks_dkim(record: str) -> bool:
    low = record.replace(" ", "").lower()
    return low.startswith("v=dkim1") or "p=" in low or "k=" in low


def check_dkim(
    domain: str, selector: str | None, answer: Txt | None, expected: str | None
) -> Check:
    """`answer` is the TXT at the record name (None when no selector was given);
    `expected` is the record value for our private key, None when not known."""
    if selector is None or answer is None:
        return Check(
            "dkim",
            domain,
            "warn",
            "not checked: no selector (give --selector, or --sender for a profile with DKIM)",
        )
    name = record_name(selector, domain)

    def result(status: Status, summary: str, details: list[str], fix: str = "") -> Check:
        return Check("dkim", name, status, summary, tuple(details), fix)

    publish = (
        f'publish a TXT record at {name}: "{expected}"'
        if expected
        else f"publish your signing key's public half at {name} (carepost dkim ... prints it)"
    )
    if isinstance(answer, Failed):
        return result("error", f"could not look up {name}: {answer.reason}", [])
    records = [r for r in answer if _looks_dkim(r)]
    if not records:
        return result(
            "fail",
            "no DKIM key published: receivers cannot verify your signatures",
            [],
            publish,
        )
    if len(records) > 1:
        return result(
            "fail",
            f"{len(records)} DKIM records at one selector: receivers may pick either",
            [],
            "keep exactly one TXT record there",
        )
    try:
        key = parse_dkim(records[0])
    except DkimRecordError as exc:
        return result("fail", f"the DKIM record is unusable: {exc}", [], publish)
    details = [f"key: {key.key_type}, {key.bits} bits"]
    fails: list[str] = []
    warns: list[str] = []
    if key.key_type == "rsa" and key.bits < 1024:
        fails.append(f"RSA key of {key.bits} bits: receivers reject keys under 1024 bits")
    elif key.key_type == "rsa" and key.bits < 2048:
        warns.append(f"RSA key of {key.bits} bits: use 2048 bits (RFC 8301)")
    if key.hashes and "sha256" not in key.hashes:
        fails.append("h= does not allow sha256, the only hash carepost (and RFC 8301) uses")
    if "y" in key.flags:
        warns.append(
            "t=y marks the key as in testing: receivers treat signed mail like unsigned; "
            "remove t=y once signatures verify"
        )
    if expected is not None:
        mine = parse_dkim(expected)
        if (mine.key_type, mine.public) != (key.key_type, key.public):
            fails.append(
                "the published key is not the public half of the sender profile's key: "
                "every signature will fail"
            )
        else:
            details.append("the published key matches the sender profile's key")
    else:
        warns.append("not compared with a signing key: give --sender to check it is ours")
    if fails:
        return result("fail", fails[0], details + fails[1:] + warns, publish)
    if warns:
        return result("warn", warns[0], details + warns[1:], publish if "y" in key.flags else "")
    return result("ok", f"{key.key_type} key of {key.bits} bits, matching ours", details)
