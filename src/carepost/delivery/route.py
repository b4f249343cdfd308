"""How one campaign's messages travel: the TLS policy of their envelope, and what a
recipient server that cannot give that TLS leads to. Pure: plain values in, a `Route` out.

The rules, in order:

* A template marked `secure_delivery` may carry PHI in its subject (content.template
  checks that only such templates do), so the message itself is never handed to a mail
  server: the recipient gets the PHI-free portal notice and reads it in the portal
  (`portal_only`). Without a portal (no public URL) such a message is refused.
* Anything that may carry PHI needs `tls="required"`: a verified certificate and TLS 1.2
  or newer, or nothing is sent. A message carries PHI when its template declares a PHI
  field, and also, whatever its template says, when its class was not declared PHI-free
  by the operator (`CAREPOST_PHI_FREE_CLASSES`): a reminder that a patient HAS an
  appointment already says something about their health.
* Only a message of a class declared PHI-free, from a template without PHI fields, may go
  `opportunistic` (TLS when offered, plaintext otherwise).
* When the recipient's server cannot do the required TLS, the sender profile decides:
  `portal` (the default: the message waits in the portal, the recipient gets a notice)
  or `fail` (the message fails with the TLS reason, never retried). With no portal
  configured the answer is always `fail`.

Reason codes this adds to delivery's (delivery.outcome.REASONS):
  portal_notice       the recipient was sent a portal notice; the message is in the portal
  portal_unavailable  the message needs the portal and no public URL is configured
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from carepost.consent.records import MESSAGE_CLASSES
from carepost.delivery.smtp import TlsPolicy

Fallback = Literal["portal", "fail"]
Verification = Literal["code", "dob"]
FALLBACKS: tuple[Fallback, ...] = ("portal", "fail")
VERIFICATIONS: tuple[Verification, ...] = ("code", "dob")
PORTAL_NOTICE = "portal_notice"
PORTAL_UNAVAILABLE = "portal_unavailable"
SECURE_DELIVERY = "secure_delivery"


class RouteError(ValueError):
    """A setting the route cannot use; the message names the setting, never a value of
    a contact."""


@dataclass(frozen=True)
class Route:
    tls: TlsPolicy
    on_tls_failure: Fallback
    # secure_delivery: only the notice is mailed; the message waits in the portal.
    portal_only: bool
    # Set when the message cannot travel at all (a reason code); nothing is sent.
    refused: str | None
    verification: Verification
    # Why the TLS policy is what it is: "phi_fields", "secure_delivery",
    # "class_not_phi_free" or "phi_free_class" (for the documentation and tests).
    why: str


def phi_free_classes(text: str | Iterable[str]) -> frozenset[str]:
    """The configured PHI-free classes (comma or space separated), checked by name."""
    names = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    unknown = sorted(set(names) - set(MESSAGE_CLASSES))
    if unknown:
        raise RouteError(
            "CAREPOST_PHI_FREE_CLASSES: unknown message class "
            + ", ".join(repr(n) for n in unknown)
            + f"; one of {', '.join(sorted(MESSAGE_CLASSES))}"
        )
    return frozenset(names)


def decide(
    *,
    message_class: str,
    phi_fields: Iterable[str],
    secure_delivery: bool,
    tls_fallback: str,
    portal_verification: str,
    phi_free: frozenset[str],
    portal_available: bool,
) -> Route:
    if message_class not in MESSAGE_CLASSES:
        raise RouteError(f"message class: unknown ({', '.join(sorted(MESSAGE_CLASSES))})")
    if tls_fallback not in FALLBACKS:
        raise RouteError(f"sender profile tls_fallback: one of {', '.join(FALLBACKS)}")
    if portal_verification not in VERIFICATIONS:
        raise RouteError(f"sender profile portal_verification: one of {', '.join(VERIFICATIONS)}")
    unknown = phi_free - set(MESSAGE_CLASSES)
    if unknown:
        raise RouteError("PHI-free classes: unknown message class in the configuration")
    verification: Verification = "dob" if portal_verification == "dob" else "code"
    declares_phi = any(True for _ in phi_fields)
    if secure_delivery:
        why = SECURE_DELIVERY
    elif declares_phi:
        why = "phi_fields"
    elif message_class not in phi_free:
        why = "class_not_phi_free"
    else:
        why = "phi_free_class"
    tls: TlsPolicy = "opportunistic" if why == "phi_free_class" else "required"
    fallback: Fallback = "portal" if tls_fallback == "portal" and portal_available else "fail"
    return Route(
        tls=tls,
        on_tls_failure=fallback,
        portal_only=secure_delivery,
        refused=PORTAL_UNAVAILABLE if secure_delivery and not portal_available else None,
        verification=verification,
        why=why,
    )
