"""The account-wide settings, their defaults, and the one way to change them (with its
audit row in the same transaction). Services never commit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.account.models import AccountSetting
from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock


class SettingError(ValueError):
    pass


@dataclass(frozen=True)
class Definition:
    key: str
    default: bool | int | str  # the type of the default is the setting's type
    help: str
    minimum: int = 0  # for whole-number settings
    maximum: int = 1_000_000
    check: Callable[[str], str | None] | None = None  # text settings: why a value is wrong


def zone_problem(text: str) -> str | None:
    """Why `text` is not an IANA time zone name (None: it is one)."""
    if not text or len(text) > 64 or text.startswith(("/", ".")) or ".." in text:
        return "an IANA time zone name like Europe/Paris or UTC"
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        return "an IANA time zone name like Europe/Paris or UTC"
    return None


# Statistics leave machine events (privacy proxies, link scanners) out by default: raw
# open rates are fiction since Apple Mail Privacy Protection. Raw events are always kept.
EXCLUDE_MACHINE_EVENTS = Definition(
    "tracking.exclude_machine_events",
    True,
    "Leave machine opens and clicks out of headline statistics (raw events are kept).",
)

# Marketing frequency cap across journeys and campaigns (journeys.engine's may_send).
MARKETING_PER_WEEK = Definition(
    "journeys.marketing_per_week",
    3,
    "At most this many marketing messages per contact in any 7 days (journeys skip the rest).",
    0,
    1000,
)

# The zone of contacts without their own (contacts.time_zone): times of day in journeys.
DEFAULT_TIME_ZONE = Definition(
    "journeys.default_time_zone",
    "UTC",
    "The time zone of contacts without one of their own (journey times of day, date triggers).",
    check=zone_problem,
)

DEFINITIONS = {d.key: d for d in (EXCLUDE_MACHINE_EVENTS, MARKETING_PER_WEEK, DEFAULT_TIME_ZONE)}

_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}


def parse_bool(key: str, text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingError(f"setting {key!r} takes true or false, not {text!r}")


def parse_int(definition: Definition, text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise SettingError(
            f"setting {definition.key!r} takes a whole number, not {text!r}"
        ) from None
    if not definition.minimum <= value <= definition.maximum:
        raise SettingError(
            f"setting {definition.key!r} takes a whole number from {definition.minimum} "
            f"to {definition.maximum}"
        )
    return value


def parse_text(definition: Definition, text: str) -> str:
    value = text.strip()
    problem = definition.check(value) if definition.check else None
    if problem:
        raise SettingError(f"setting {definition.key!r} takes {problem}")
    return value


def parse(definition: Definition, text: str) -> bool | int | str:
    if isinstance(definition.default, bool):
        return parse_bool(definition.key, text)
    if isinstance(definition.default, str):
        return parse_text(definition, text)
    return parse_int(definition, text)


def get_bool(session: Session, definition: Definition) -> bool:
    stored = session.scalar(
        select(AccountSetting.value).where(AccountSetting.key == definition.key)
    )
    return bool(definition.default) if stored is None else parse_bool(definition.key, stored)


def get_int(session: Session, definition: Definition) -> int:
    stored = session.scalar(
        select(AccountSetting.value).where(AccountSetting.key == definition.key)
    )
    return int(definition.default) if stored is None else parse_int(definition, stored)


def get_str(session: Session, definition: Definition) -> str:
    stored = session.scalar(
        select(AccountSetting.value).where(AccountSetting.key == definition.key)
    )
    return str(definition.default) if stored is None else parse_text(definition, stored)


def all_values(session: Session) -> dict[str, bool | int | str]:
    stored = {
        key: value
        for key, value in session.execute(select(AccountSetting.key, AccountSetting.value))
    }
    return {
        key: (d.default if key not in stored else parse(d, stored[key]))
        for key, d in DEFINITIONS.items()
    }


def do_set_setting(
    session: Session, key: str, text: str, *, actor: Actor, clock: Clock = system_clock
) -> bool | int | str:
    """Change one setting; the audit row commits with it."""
    definition = DEFINITIONS.get(key)
    if definition is None:
        raise SettingError(f"unknown setting {key!r}; known: {', '.join(sorted(DEFINITIONS))}")
    value = parse(definition, text)
    before = all_values(session)[key]
    row = session.get(AccountSetting, key)
    now = clock()
    if row is None:
        session.add(AccountSetting(key=key, value=_stored(value), updated_at=now, actor=actor.id))
    else:
        row.value, row.updated_at, row.actor = _stored(value), now, actor.id
    audit.append(
        session,
        actor=actor,
        action="account.setting_changed",
        details={"key": key, "from": before, "to": value},
        clock=clock,
    )
    session.flush()
    return value


def _stored(value: bool | int | str) -> str:
    # Zone names are case-sensitive; true/false are stored lower-case.
    return value if isinstance(value, str) else str(value).lower()
