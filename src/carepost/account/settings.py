"""The account-wide settings, their defaults, and the one way to change them (with its
audit row in the same transaction). Services never commit."""

from __future__ import annotations

from dataclasses import dataclass

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
    default: bool
    help: str


# Statistics leave machine events (privacy proxies, link scanners) out by default: raw
# open rates are fiction since Apple Mail Privacy Protection. Raw events are always kept.
EXCLUDE_MACHINE_EVENTS = Definition(
    "tracking.exclude_machine_events",
    True,
    "Leave machine opens and clicks out of headline statistics (raw events are kept).",
)

DEFINITIONS = {d.key: d for d in (EXCLUDE_MACHINE_EVENTS,)}

_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}


def parse_bool(key: str, text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingError(f"setting {key!r} takes true or false, not {text!r}")


def get_bool(session: Session, definition: Definition) -> bool:
    stored = session.scalar(
        select(AccountSetting.value).where(AccountSetting.key == definition.key)
    )
    return definition.default if stored is None else parse_bool(definition.key, stored)


def all_values(session: Session) -> dict[str, bool]:
    stored = {
        key: value
        for key, value in session.execute(select(AccountSetting.key, AccountSetting.value))
    }
    return {
        key: (d.default if key not in stored else parse_bool(key, stored[key]))
        for key, d in DEFINITIONS.items()
    }


def do_set_setting(
    session: Session, key: str, text: str, *, actor: Actor, clock: Clock = system_clock
) -> bool:
    """Change one setting; the audit row commits with it."""
    definition = DEFINITIONS.get(key)
    if definition is None:
        raise SettingError(f"unknown setting {key!r}; known: {', '.join(sorted(DEFINITIONS))}")
    value = parse_bool(key, text)
    before = get_bool(session, definition)
    row = session.get(AccountSetting, key)
    now = clock()
    if row is None:
        session.add(
            AccountSetting(key=key, value=str(value).lower(), updated_at=now, actor=actor.id)
        )
    else:
        row.value, row.updated_at, row.actor = str(value).lower(), now, actor.id
    audit.append(
        session,
        actor=actor,
        action="account.setting_changed",
        details={"key": key, "from": before, "to": value},
        clock=clock,
    )
    session.flush()
    return value
