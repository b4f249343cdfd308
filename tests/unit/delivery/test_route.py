"""delivery.route over every combination of its inputs, against the rules written out
independently here, plus the settings it refuses."""

from __future__ import annotations

import itertools

import pytest

from carepost.consent.records import MESSAGE_CLASSES
from carepost.delivery.route import (
    PORTAL_UNAVAILABLE,
    RouteError,
    decide,
    phi_free_classes,
)

SUBSETS = [
    frozenset(c)
    for n in range(len(MESSAGE_CLASSES) + 1)
    for c in itertools.combinations(MESSAGE_CLASSES, n)
]


def test_every_combination() -> None:
    seen = 0
    for klass, fields, secure, fallback, verification, phi_free, portal in itertools.product(
        MESSAGE_CLASSES,
        [(), ("first_name",), ("first_name", "birth_date")],
        [False, True],
        ["portal", "fail"],
        ["code", "dob"],
        SUBSETS,
        [True, False],
    ):
        r = decide(
            message_class=klass,
            phi_fields=fields,
            secure_delivery=secure,
            tls_fallback=fallback,
            portal_verification=verification,
            phi_free=phi_free,
            portal_available=portal,
        )
        may_carry_phi = bool(fields) or secure or klass not in phi_free
        assert r.tls == ("required" if may_carry_phi else "opportunistic")
        assert r.on_tls_failure == ("portal" if fallback == "portal" and portal else "fail")
        assert r.portal_only is secure
        assert r.refused == (PORTAL_UNAVAILABLE if secure and not portal else None)
        assert r.verification == verification
        seen += 1
    assert seen == 5 * 3 * 2 * 2 * 2 * 32 * 2


def test_defaults_are_the_secure_ones() -> None:
    """No class declared PHI-free (the default setting): nothing goes opportunistic, not
    even marketing without PHI fields."""
    for klass in MESSAGE_CLASSES:
        r = decide(
            message_class=klass,
            phi_fields=(),
            secure_delivery=False,
            tls_fallback="portal",
            portal_verification="code",
            phi_free=phi_free_classes(""),
            portal_available=True,
        )
        assert (r.tls, r.on_tls_failure, r.why) == ("required", "portal", "class_not_phi_free")


def test_why() -> None:
    base = {
        "tls_fallback": "portal",
        "portal_verification": "code",
        "phi_free": frozenset({"marketing"}),
        "portal_available": True,
    }
    assert decide(message_class="marketing", phi_fields=(), secure_delivery=True, **base).why == (
        "secure_delivery"
    )
    assert (
        decide(message_class="marketing", phi_fields=("city",), secure_delivery=False, **base).why
        == "phi_fields"
    )
    assert (
        decide(message_class="marketing", phi_fields=(), secure_delivery=False, **base).why
        == "phi_free_class"
    )
    assert (
        decide(message_class="treatment", phi_fields=(), secure_delivery=False, **base).why
        == "class_not_phi_free"
    )


def test_phi_free_classes_setting() -> None:
    assert phi_free_classes("marketing, marketing_paid") == {"marketing", "marketing_paid"}
    assert phi_free_classes(" ") == frozenset()
    assert phi_free_classes(["operations"]) == {"operations"}
    with pytest.raises(RouteError, match=r"CAREPOST_PHI_FREE_CLASSES.*'newsletters'"):
        phi_free_classes("marketing,newsletters")


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"message_class": "promo"}, "message class"),
        ({"tls_fallback": "plaintext"}, "tls_fallback"),
        ({"portal_verification": "sms"}, "portal_verification"),
        ({"phi_free": frozenset({"promo"})}, "PHI-free classes"),
    ],
)
def test_refuses_unknown_settings(change: dict[str, object], names: str) -> None:
    args: dict[str, object] = {
        "message_class": "treatment",
        "phi_fields": (),
        "secure_delivery": False,
        "tls_fallback": "portal",
        "portal_verification": "code",
        "phi_free": frozenset(),
        "portal_available": True,
    }
    args.update(change)
    with pytest.raises(RouteError, match=names):
        decide(**args)  # type: ignore[arg-type]
