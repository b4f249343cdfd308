"""Moving running enrolments to another version of their journey, explicitly
(`carepost journey migrate NAME --from-version N [--to-version M] [--map old=new ...]`).

Each unfinished enrolment of version N moves to the step of the same id in version M, or
to the step `--map` names for its step. All or nothing: if any enrolment's step has no
target, or its target cannot hold it as it is (a waiting enrolment needs a wait step
waiting for the same thing; one calling a webhook needs a webhook step), nothing moves
and the refusal lists every such step with its count. Each moved enrolment gets a
`migrated` transition; one audit entry names them all, in the same transaction.
`plan` is the pure part.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.db import bulk_update, driver_value, insert_if_absent
from carepost.journeys import definition as D
from carepost.journeys import machine as M
from carepost.journeys import service
from carepost.journeys.models import JourneyEnrolment, JourneyTransition, JourneyVersion


class MigrationRefused(service.JourneyError):
    pass


@dataclass(frozen=True)
class Running:
    id: str
    step: str
    status: str  # active | waiting | calling
    waiting_for: str | None


def parse_map(items: Sequence[str]) -> dict[str, str]:
    """`old=new` pairs; an error names the item by position."""
    out: dict[str, str] = {}
    for i, item in enumerate(items, 1):
        old, sep, new = item.partition("=")
        if not sep or not D.STEP_ID.match(old.strip()) or not D.STEP_ID.match(new.strip()):
            raise service.JourneyError(f"--map item {i}: write old-step=new-step")
        out[old.strip()] = new.strip()
    return out


def _holds(target: D.Step, e: Running) -> bool:
    action = target.action
    if e.status == "calling":
        return isinstance(action, D.Webhook)
    if e.status == "waiting":
        if not isinstance(action, D.Wait):
            return False
        return M.waiting_key(action) == e.waiting_for
    return True


def plan(
    old: D.Journey, new: D.Journey, running: Sequence[Running], mapping: Mapping[str, str]
) -> dict[str, str]:
    """enrolment id -> its step in `new`, or MigrationRefused listing every problem."""
    problems: list[str] = []
    old_ids = {s.id for s in old.steps}
    new_ids = {s.id for s in new.steps}
    for src, dst in sorted(mapping.items()):
        if src not in old_ids:
            problems.append(f"--map {src}={dst}: the old version has no step {src!r}")
        if dst not in new_ids:
            problems.append(f"--map {src}={dst}: the new version has no step {dst!r}")
    if problems:
        raise MigrationRefused("; ".join(problems))
    out: dict[str, str] = {}
    missing: Counter[str] = Counter()
    unfit: Counter[str] = Counter()
    for e in running:
        target = mapping.get(e.step, e.step)
        if target not in new_ids:
            missing[e.step] += 1
        elif not _holds(new.step(target), e):
            unfit[f"{e.step} -> {target} ({e.status})"] += 1
        else:
            out[e.id] = target
    if missing or unfit:
        lines = [
            f"step {s!r}: {n} enrolments, no step to go to" for s, n in sorted(missing.items())
        ]
        lines += [
            f"{s}: {n} enrolments, the target cannot hold them as they are"
            for s, n in sorted(unfit.items())
        ]
        raise MigrationRefused("nothing moved; " + "; ".join(lines))
    return out


def do_migrate_enrolments(
    session: Session,
    name: str,
    from_version: int,
    to_version: int | None = None,
    mapping: Mapping[str, str] | None = None,
    *,
    actor: Actor,
    clock: Clock = system_clock,
) -> int:
    """Move version `from_version`'s unfinished enrolments to `to_version` (default: the
    newest). Returns how many moved."""
    rows = {
        r.version: r
        for r in session.scalars(select(JourneyVersion).where(JourneyVersion.name == name))
    }
    if not rows:
        raise service.JourneyError(f"no journey {name!r}")
    target_version = to_version if to_version is not None else max(rows)
    for v in (from_version, target_version):
        if v not in rows:
            raise service.JourneyError(f"journey {name!r} has no version {v}")
    if from_version == target_version:
        raise service.JourneyError("--from-version and --to-version are the same version")
    src, dst = rows[from_version], rows[target_version]
    t = JourneyEnrolment
    query = select(t.id, t.step, t.status, t.waiting_for, t.seq).where(
        t.journey_id == src.id, t.status != "exited"
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=t)  # the engine skips what we hold (SKIP LOCKED)
    found = session.execute(query).all()
    moves = plan(
        service.definition_of(src),
        service.definition_of(dst),
        [Running(r.id, r.step or "", r.status, r.waiting_for) for r in found],
        dict(mapping or {}),
    )
    now = clock()
    at = driver_value(session, JourneyTransition.__table__.c.at, now)
    states = []
    transitions = []
    for r in found:
        step = moves[r.id]
        states.append((dst.id, step, r.seq + 1, now, r.id))
        detail = f"v{from_version} {r.step} -> v{target_version} {step}"
        transitions.append((r.id, r.seq, step, "migrated", detail[:512], at))
    bulk_update(session, t.__table__, ("journey_id", "step", "seq", "updated_at"), ("id",), states)
    insert_if_absent(
        session,
        JourneyTransition.__table__,
        ("enrolment_id", "seq", "step", "outcome", "detail", "at"),
        transitions,
    )
    audit.append(
        session,
        actor=actor,
        action="journeys.migrated",
        subjects=sorted(moves),
        details={
            "name": name,
            "from": from_version,
            "to": target_version,
            "moved": len(moves),
            "map": dict(sorted((mapping or {}).items())),
        },
        clock=clock,
    )
    return len(moves)
