"""Segment use cases: save dynamic segments (versioned rules) and static lists, list
them, count and preview over the snapshot, and freeze a campaign's membership.

Services never commit: the command or worker owns the transaction, and each change
commits with its audit entry. `SegmentEngine` is the long-lived part: it owns the
snapshot of one process and refreshes it before every answer, so a committed change to a
contact, fact or event shows in the next count.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.contacts.models import Contact
from carepost.contacts.store import new_id
from carepost.crypto.keyring import KeyRing
from carepost.db import bulk_insert, read_only
from carepost.segments import ast as A
from carepost.segments import evaluator
from carepost.segments.ast import RuleError
from carepost.segments.models import (
    FrozenMember,
    Segment,
    SegmentFreeze,
    SegmentVersion,
    StaticMember,
)
from carepost.segments.parser import parse
from carepost.segments.printer import print_rule
from carepost.segments.snapshot import Snapshot, build_snapshot
from carepost.segments.stage import DEFAULT_RULES, StageRules
from carepost.staff.principal import Principal

NAME_MAX = 128
FREEZE_CHUNK = 10_000


class SegmentError(ValueError):
    pass


class SegmentNotFound(SegmentError):
    pass


def _require(principal: Principal | None, *permissions: str) -> None:
    # None is the trusted caller (the command line on the server, workers).
    if principal is not None:
        principal.require(*permissions)


@dataclass(frozen=True)
class SegmentSummary:
    id: str
    name: str
    kind: str
    version: int
    rule: str | None
    members: int | None  # static lists only (dynamic ones are counted on demand)
    updated_at: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "version": self.version,
            "rule": self.rule,
            "static_members": self.members,
            "updated_at": self.updated_at.isoformat(),
        }


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        raise SegmentError(f"a segment name is 1 to {NAME_MAX} characters")
    return name


def get_segment(session: Session, name: str) -> Segment:
    seg = session.scalars(select(Segment).where(Segment.name == name)).one_or_none()
    if seg is None:
        known = list(session.scalars(select(Segment.name)))
        from carepost.segments.parser import nearest

        hint = nearest(name, known)
        raise SegmentNotFound(
            f"no segment named {name!r}" + (f"; did you mean {hint!r}?" if hint else "")
        )
    return seg


def current_rule(session: Session, seg: Segment) -> SegmentVersion | None:
    if seg.kind != "dynamic":
        return None
    return session.scalars(
        select(SegmentVersion).where(
            SegmentVersion.segment_id == seg.id, SegmentVersion.version == seg.current_version
        )
    ).one()


def definitions(session: Session) -> dict[str, evaluator.SegmentDef]:
    """Every segment as the evaluator resolves `in_segment`: a rule or a set of ids."""
    out: dict[str, evaluator.SegmentDef] = {}
    rows = session.execute(
        select(Segment.name, SegmentVersion.rule_json)
        .join(SegmentVersion, SegmentVersion.segment_id == Segment.id)
        .where(Segment.kind == "dynamic", SegmentVersion.version == Segment.current_version)
    )
    for name, rule_json in rows:
        out[name] = A.from_json(orjson.loads(rule_json))
    members: dict[str, set[str]] = {}
    for name, cid in session.execute(
        select(Segment.name, StaticMember.contact_id).join(
            StaticMember, StaticMember.segment_id == Segment.id
        )
    ):
        members.setdefault(name, set()).add(cid)
    for name in session.scalars(select(Segment.name).where(Segment.kind == "static")):
        out[name] = frozenset(members.get(name, set()))
    return out


def find_cycle(defs: Mapping[str, evaluator.SegmentDef], start: str) -> list[str] | None:
    """A path start -> ... -> start through in_segment references, if there is one."""
    path: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        node = defs.get(name)
        if node is None or isinstance(node, frozenset):
            return None
        path.append(name)
        for ref in sorted(A.segment_refs(node)):
            found = visit(ref)
            if found:
                return found
        path.pop()
        done.add(name)
        return None

    return visit(start)


def check_references(session: Session, name: str, node: A.Node) -> dict[str, evaluator.SegmentDef]:
    defs = definitions(session)
    for ref in sorted(A.segment_refs(node)):
        if ref != name and ref not in defs:
            raise RuleError(f"in_segment({ref!r}): no segment with that name")
    defs[name] = node
    cycle = find_cycle(defs, name)
    if cycle:
        raise evaluator.SegmentCycle(
            "segments refer to each other in a cycle: " + " -> ".join(cycle)
        )
    return defs


def save_segment(
    session: Session,
    name: str,
    rule: str | A.Node,
    *,
    actor: Actor,
    description: str = "",
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> tuple[Segment, int, bool]:
    """Create a dynamic segment or give it a new rule version. Returns (segment, version,
    changed); saving the same rule again changes nothing. Cycles are rejected."""
    _require(principal, "segments:write")
    name = _check_name(name)
    node = parse(rule) if isinstance(rule, str) else rule
    if A.journey_predicates(node):
        raise A.RuleError("opened(step=...) and clicked(step=...) belong in a journey's branch")
    check_references(session, name, node)
    text = print_rule(node)
    rule_json = orjson.dumps(A.to_json(node), option=orjson.OPT_SORT_KEYS).decode()
    now = clock()
    seg = session.scalars(select(Segment).where(Segment.name == name)).one_or_none()
    if seg is not None and seg.kind != "dynamic":
        raise SegmentError(f"{name!r} is a static list; choose another name")
    if seg is not None:
        cur = current_rule(session, seg)
        if cur is not None and cur.rule_json == rule_json:
            return seg, seg.current_version, False
        seg.current_version += 1
        seg.updated_at = now
        if description:
            seg.description = description
    else:
        seg = Segment(
            id=new_id(),
            name=name,
            kind="dynamic",
            description=description,
            current_version=1,
            created_at=now,
            created_by=actor.id,
            updated_at=now,
        )
        session.add(seg)
        session.flush()
    session.add(
        SegmentVersion(
            id=new_id(),
            segment_id=seg.id,
            version=seg.current_version,
            rule_text=text,
            rule_json=rule_json,
            created_at=now,
            created_by=actor.id,
        )
    )
    audit.append(
        session,
        actor=actor,
        action="segments.saved",
        details={"segment": seg.id, "name": name, "version": seg.current_version, "rule": text},
        clock=clock,
    )
    session.flush()
    return seg, seg.current_version, True


def save_static_list(
    session: Session,
    name: str,
    contact_ids: Sequence[str],
    *,
    actor: Actor,
    description: str = "",
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> Segment:
    """Create or replace a static list of explicit members (contacts must exist)."""
    _require(principal, "segments:write")
    name = _check_name(name)
    ids = sorted(set(contact_ids))
    found: set[str] = set()
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        found.update(session.scalars(select(Contact.id).where(Contact.id.in_(chunk))))
    missing = [c for c in ids if c not in found]
    if missing:
        raise SegmentError(f"{len(missing)} contact id(s) not found, e.g. {missing[0]}")
    now = clock()
    seg = session.scalars(select(Segment).where(Segment.name == name)).one_or_none()
    if seg is not None and seg.kind != "static":
        raise SegmentError(f"{name!r} is a dynamic segment; choose another name")
    if seg is None:
        seg = Segment(
            id=new_id(),
            name=name,
            kind="static",
            description=description,
            current_version=0,
            created_at=now,
            created_by=actor.id,
            updated_at=now,
        )
        session.add(seg)
        session.flush()
    else:
        session.execute(delete(StaticMember).where(StaticMember.segment_id == seg.id))
        seg.updated_at = now
    session.add_all(StaticMember(segment_id=seg.id, contact_id=c, added_at=now) for c in ids)
    audit.append(
        session,
        actor=actor,
        action="segments.static_list_saved",
        subjects=ids,
        details={"segment": seg.id, "name": name, "members": len(ids)},
        clock=clock,
    )
    session.flush()
    return seg


@dataclass(frozen=True)
class MembersChanged:
    added: int
    removed: int
    members: int


def do_change_static_members(
    session: Session,
    name: str,
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    actor: Actor,
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> MembersChanged:
    """Add and remove members of a static list (added contacts must exist; adding a
    member or removing a non-member changes nothing). One audit entry names the
    contacts actually added or removed."""
    _require(principal, "segments:write")
    seg = get_segment(session, name)
    if seg.kind != "static":
        raise SegmentError(f"{name!r} is a dynamic segment; its rule decides its members")
    to_add, to_remove = set(add), set(remove)
    if to_add & to_remove:
        raise SegmentError("a contact id is both added and removed")
    wanted = sorted(to_add | to_remove)
    current: set[str] = set()
    found: set[str] = set()
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start : start + 1000]
        current.update(
            session.scalars(
                select(StaticMember.contact_id).where(
                    StaticMember.segment_id == seg.id, StaticMember.contact_id.in_(chunk)
                )
            )
        )
        found.update(session.scalars(select(Contact.id).where(Contact.id.in_(chunk))))
    missing = sorted(to_add - found)
    if missing:
        raise SegmentError(f"{len(missing)} contact id(s) not found, e.g. {missing[0]}")
    added = sorted(to_add - current)
    removed = sorted(to_remove & current)
    now = clock()
    session.add_all(StaticMember(segment_id=seg.id, contact_id=c, added_at=now) for c in added)
    for start in range(0, len(removed), 1000):
        session.execute(
            delete(StaticMember).where(
                StaticMember.segment_id == seg.id,
                StaticMember.contact_id.in_(removed[start : start + 1000]),
            )
        )
    if added or removed:
        seg.updated_at = now
        audit.append(
            session,
            actor=actor,
            action="segments.static_list_changed",
            subjects=added + removed,
            details={"segment": seg.id, "name": name, "added": len(added), "removed": len(removed)},
            clock=clock,
        )
    session.flush()
    members = int(
        session.scalar(select(func.count()).where(StaticMember.segment_id == seg.id)) or 0
    )
    return MembersChanged(len(added), len(removed), members)


def _summary(session: Session, seg: Segment) -> SegmentSummary:
    cur = current_rule(session, seg)
    members = None
    if seg.kind == "static":
        members = int(
            session.scalar(select(func.count()).where(StaticMember.segment_id == seg.id)) or 0
        )
    return SegmentSummary(
        seg.id,
        seg.name,
        seg.kind,
        seg.current_version,
        cur.rule_text if cur else None,
        members,
        seg.updated_at,
    )


def list_segments(session: Session) -> list[SegmentSummary]:
    return [
        _summary(session, seg) for seg in session.scalars(select(Segment).order_by(Segment.name))
    ]


def segment_page(
    session: Session,
    *,
    after: str | None,
    limit: int,
    principal: Principal | None = None,
) -> list[SegmentSummary]:
    """Up to `limit` segments in id (creation) order after the id `after`: the API's
    cursor pages, keyed on ids only."""
    _require(principal, "segments:read")
    query = select(Segment).order_by(Segment.id).limit(limit)
    if after is not None:
        query = query.where(Segment.id > after)
    return [_summary(session, seg) for seg in session.scalars(query)]


@dataclass(frozen=True)
class VersionInfo:
    version: int
    rule: str
    created_at: datetime
    created_by: str


def segment_versions(
    session: Session, name: str, *, principal: Principal | None = None
) -> tuple[SegmentSummary, list[VersionInfo]]:
    """A segment's summary and every rule version, newest first (none for a list)."""
    _require(principal, "segments:read")
    seg = get_segment(session, name)
    rows = session.scalars(
        select(SegmentVersion)
        .where(SegmentVersion.segment_id == seg.id)
        .order_by(SegmentVersion.version.desc())
    )
    versions = [VersionInfo(v.version, v.rule_text, v.created_at, v.created_by) for v in rows]
    return _summary(session, seg), versions


def segment_node(session: Session, seg: Segment) -> A.Node:
    """The rule to evaluate for a segment: its current rule, or membership of the list."""
    cur = current_rule(session, seg)
    return A.from_json(orjson.loads(cur.rule_json)) if cur else A.InSegment(seg.name)


def members_digest(contact_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(contact_ids)).encode()).hexdigest()


def freeze_membership(
    session: Session,
    segment: Segment,
    *,
    at: datetime,
    actor: Actor,
    campaign_id: str,
    snapshot: Snapshot,
    rules: StageRules = DEFAULT_RULES,
    clock: Clock = system_clock,
    progress: Callable[[int], None] | None = None,
) -> SegmentFreeze:
    """Evaluate the segment at `at` over `snapshot` (refresh it first) and keep, as
    evidence for the campaign, which contacts, which rule version and when. `progress`
    gets the number of member rows of each chunk as it is written."""
    if not campaign_id.strip():
        raise SegmentError("a campaign id is required")
    defs = definitions(session)
    node = segment_node(session, segment)
    name = segment.name if segment.kind == "dynamic" else None
    ids = sorted(evaluator.member_ids(node, snapshot, at, segments=defs, rules=rules, name=name))
    freeze = SegmentFreeze(
        id=new_id(),
        segment_id=segment.id,
        segment_name=segment.name,
        version=segment.current_version,
        rule_text=print_rule(node),
        campaign_id=campaign_id.strip(),
        evaluated_at=at,
        frozen_at=clock(),
        frozen_by=actor.id,
        member_count=len(ids),
        members_sha256=members_digest(ids),
    )
    session.add(freeze)
    session.flush()
    for start in range(0, len(ids), FREEZE_CHUNK):
        chunk = ids[start : start + FREEZE_CHUNK]
        bulk_insert(
            session,
            FrozenMember.__table__,
            ("freeze_id", "contact_id"),
            [(freeze.id, c) for c in chunk],
        )
        if progress is not None:
            progress(len(chunk))
    refs = {r: defs.get(r) is not None for r in A.segment_refs(node)}
    audit.append(
        session,
        actor=actor,
        action="segments.membership_frozen",
        details={
            "freeze": freeze.id,
            "segment": segment.id,
            "name": segment.name,
            "version": segment.current_version,
            "campaign": freeze.campaign_id,
            "evaluated_at": at.isoformat(),
            "members": len(ids),
            "members_sha256": freeze.members_sha256,
            "references": sorted(refs),
        },
        clock=clock,
    )
    return freeze


def frozen_members(session: Session, freeze_id: str) -> list[str]:
    return list(
        session.scalars(
            select(FrozenMember.contact_id)
            .where(FrozenMember.freeze_id == freeze_id)
            .order_by(FrozenMember.contact_id)
        )
    )


class SegmentEngine:
    """One process's snapshot and the answers computed from it.

    The snapshot is built on first use (audited) and refreshed before every answer: the
    refresh costs three indexed queries when nothing changed, so a committed change shows
    in the next count (well within a second). `min_refresh_interval` can throttle it for
    callers that count many times a second.
    """

    def __init__(
        self,
        engine: Engine,
        ring: KeyRing,
        *,
        actor: Actor,
        workers: int = 2,
        rules: StageRules = DEFAULT_RULES,
        min_refresh_interval: float = 0.0,
        clock: Clock = system_clock,
    ) -> None:
        self.engine = engine
        self.ring = ring
        self.actor = actor
        self.workers = workers
        self.rules = rules
        self.min_refresh_interval = min_refresh_interval
        self.clock = clock
        self._snapshot: Snapshot | None = None
        self._refreshed = 0.0

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = build_snapshot(
                self.engine, self.ring, actor=self.actor, workers=self.workers, clock=self.clock
            )
            self._refreshed = time.monotonic()
        return self._snapshot

    def refresh(self, *, force: bool = False) -> dict[str, int]:
        snap = self.snapshot
        if not force and time.monotonic() - self._refreshed < self.min_refresh_interval:
            return {"contacts": 0, "events": 0}
        result = snap.refresh(self.engine, self.ring, actor=self.actor, clock=self.clock)
        self._refreshed = time.monotonic()
        return result

    def _defs(self) -> dict[str, evaluator.SegmentDef]:
        with read_only(self.engine) as conn, Session(bind=conn) as session:
            return definitions(session)

    def evaluate(
        self, rule: str | A.Node, at: datetime | None = None, *, name: str | None = None
    ) -> evaluator.B:
        node = parse(rule) if isinstance(rule, str) else rule
        defs = self._defs() if A.segment_refs(node) else {}
        self.refresh()
        return evaluator.evaluate(
            node, self.snapshot, at or self.clock(), segments=defs, rules=self.rules, name=name
        )

    def count(
        self,
        rule: str | A.Node,
        at: datetime | None = None,
        *,
        name: str | None = None,
        principal: Principal | None = None,
    ) -> int:
        _require(principal, "segments:read")
        return int(self.evaluate(rule, at, name=name).sum())

    def members(
        self,
        rule: str | A.Node,
        at: datetime | None = None,
        *,
        name: str | None = None,
        principal: Principal | None = None,
    ) -> list[str]:
        """Member ids (in snapshot order). Ids are not PHI; what is read about them is."""
        _require(principal, "segments:read")
        mask = self.evaluate(rule, at, name=name)
        snap = self.snapshot
        return [snap.ids[i] for i in mask.nonzero()[0]]
