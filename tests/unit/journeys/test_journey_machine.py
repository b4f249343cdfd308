"""The step machine, on explicit times: paths, waits, events, guards and effects."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from carepost.journeys import machine as M
from carepost.journeys.document import load
from carepost.segments import ast as A

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "journeys"
T0 = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)


def world(decide: bool = True, cap: bool = True) -> M.World:
    return M.World(
        decide=lambda rule, state: decide,
        zone=lambda contact: ZoneInfo("America/Chicago"),
        may_send=lambda contact, cls: cap,
    )


def test_refill_reminder_without_a_click_times_out_into_the_fallback() -> None:
    j = load((EXAMPLES / "refill-reminder.yaml").read_text())
    first = M.run(j, M.start(j, "c1"), T0, world())
    assert first.effects == (M.SendEffect("remind", 1, "refill-reminder", "treatment"),)
    assert first.state.status == "waiting"
    assert first.state.waiting_for == "clicked:remind:0"
    assert first.state.wake_at == T0 + timedelta(days=3)
    # Before the timeout nothing moves.
    assert M.run(j, first.state, T0 + timedelta(days=2), world()).state == first.state
    later = M.run(j, first.state, T0 + timedelta(days=3), world())
    assert later.effects == (M.SendEffect("fallback", 3, "refill-fallback", "treatment"),)
    assert [t.outcome for t in later.transitions] == ["timed_out", "sent", "exited"]
    assert (later.state.status, later.state.exit_reason) == ("exited", "exit_step")


def test_a_click_ends_the_wait_and_skips_the_fallback() -> None:
    j = load((EXAMPLES / "refill-reminder.yaml").read_text())
    waiting = M.run(j, M.start(j, "c1"), T0, world()).state
    # Another event does not match; the awaited one does, once.
    assert M.deliver_event(j, waiting, "clicked:remind:1", T0) == waiting
    woken = M.deliver_event(j, waiting, "clicked:remind:0", T0 + timedelta(hours=1))
    assert M.deliver_event(j, woken, "clicked:remind:0", T0) == woken
    done = M.run(j, woken, T0 + timedelta(hours=1), world())
    assert done.effects == ()
    assert done.state.exit_reason == "exit_step"
    assert done.state.sent == (("remind", 1),)


def test_branches_follow_the_decision_and_a_frequency_cap_skips_marketing() -> None:
    j = load((EXAMPLES / "welcome-series.yaml").read_text())
    s = M.run(j, M.start(j, "c1"), T0, world()).state
    s = M.run(j, s, T0 + timedelta(days=3), world()).state
    engaged = M.run(j, s, T0 + timedelta(days=7), world(decide=True))
    assert [e.step for e in engaged.effects if isinstance(e, M.SendEffect)] == ["invite"]
    not_engaged = M.run(j, s, T0 + timedelta(days=7), world(decide=False))
    assert not_engaged.effects == ()
    assert "branched_else" in [t.outcome for t in not_engaged.transitions]
    capped = M.run(j, M.start(j, "c2"), T0, world(cap=False))
    assert capped.effects == ()
    assert capped.transitions[0] == M.Transition("welcome", "skipped", "frequency_cap")


def test_a_revisited_step_exits_by_the_loop_guard_unless_allowed() -> None:
    text = (
        "name: loop\ntrigger:\n  manual: {}\nsteps:\n"
        "  - {id: a, send: {template: t, class: treatment}}\n"
        "  - {id: b, goto: {step: a}}\n"
    )
    j = load(text)
    result = M.run(j, M.start(j, "c"), T0, world())
    assert len(result.effects) == 1
    assert result.state.exit_reason == "loop_guard"
    allowed = load(text.replace("}}\n", "}, allow_revisit: true}\n"))
    capped = M.run(allowed, M.start(allowed, "c"), T0, world())
    # It may loop now, and the step limit (100 by default) ends it.
    assert capped.state.exit_reason == "step_limit"
    assert len(capped.effects) == 50
    visits = [e.visit for e in capped.effects if isinstance(e, M.SendEffect)]
    assert visits == list(range(1, 100, 2))  # each visit has its own outbox key


def test_time_of_day_waits_use_the_contacts_zone() -> None:
    j = load(
        "name: tod\ntrigger: {manual: {}}\nsteps:\n"
        "  - {id: w, wait: {time_of_day: '09:00'}}\n"
        "  - {id: s, send: {template: t, class: treatment}}\n"
    )
    waiting = M.run(j, M.start(j, "c"), T0, world()).state  # 02:00 in Chicago
    assert waiting.wake_at == datetime(2027, 3, 1, 15, 0, tzinfo=UTC)  # 09:00 CST
    assert M.next_time_of_day(T0, time(1, 0), ZoneInfo("America/Chicago")) == datetime(
        2027, 3, 2, 7, 0, tzinfo=UTC
    )


def test_effects_of_every_other_step_kind() -> None:
    j = load(
        "name: all\ntrigger: {manual: {}}\nsteps:\n"
        "  - {id: u, update_contact: {set: {attr.flag: true}}}\n"
        "  - {id: add, add_to_segment: {segment: vip}}\n"
        "  - {id: rm, remove_from_segment: {segment: old}}\n"
        "  - {id: sj, start_journey: {journey: other}}\n"
        "  - {id: wh, webhook: {url: 'https://hooks.example/x', timeout: 5s}}\n"
    )
    result = M.run(j, M.start(j, "c"), T0, world())
    assert result.effects == (
        M.UpdateEffect("u", {"attr.flag": True}),
        M.SegmentEffect("add", "vip", True),
        M.SegmentEffect("rm", "old", False),
        M.StartJourneyEffect("sj", "other"),
        M.WebhookEffect("wh", 5, "https://hooks.example/x", timedelta(seconds=5)),
    )
    assert result.state.exit_reason == "completed"


def test_the_branch_sees_the_rule_and_the_enrolment() -> None:
    j = load((EXAMPLES / "welcome-series.yaml").read_text())
    seen: list[tuple[A.Node, tuple[tuple[str, int], ...]]] = []

    def decide(rule: A.Node, state: M.Enrolment) -> bool:
        seen.append((rule, state.sent))
        return False

    w = M.World(decide=decide, zone=lambda c: UTC)
    s = M.run(j, M.start(j, "c"), T0, w).state
    s = M.run(j, s, T0 + timedelta(days=3), w).state
    M.run(j, s, T0 + timedelta(days=7), w)
    assert len(seen) == 1
    assert [p.step for p in A.journey_predicates(seen[0][0])] == ["welcome", "tips"]
    assert seen[0][1] == (("welcome", 1), ("tips", 3))


PAUSE_THEN_WAIT = """
name: pause-then-wait
trigger: {manual: {}}
steps:
  - id: hello
    send: {template: hello, class: treatment}
  - id: pause
    wait: {duration: 1d}
  - id: read
    wait: {event: clicked, step: hello, link: 1, timeout: 3d, on_timeout: nudge}
    next: done
  - id: nudge
    send: {template: nudge, class: treatment}
  - id: done
    exit: {}
"""


def test_an_engagement_wait_entered_after_the_click_is_passed_at_once() -> None:
    j = load(PAUSE_THEN_WAIT)
    asked: list[str] = []

    def engaged_world(answer: bool) -> M.World:
        def engaged(state: M.Enrolment, key: str) -> bool:
            asked.append(key)
            return answer

        return M.World(
            decide=lambda rule, state: True,
            zone=lambda contact: ZoneInfo("UTC"),
            engaged=engaged,
        )

    paused = M.run(j, M.start(j, "c1"), T0, engaged_world(True)).state
    assert asked == []  # a timer is not an engagement wait
    assert (paused.step, paused.waiting_for) == ("pause", None)
    passed = M.run(j, paused, T0 + timedelta(days=1), engaged_world(True))
    assert asked == ["clicked:hello:1"]
    assert [(t.step, t.outcome, t.detail) for t in passed.transitions] == [
        ("pause", "woke", ""),
        ("read", "waiting", "clicked:hello:1"),
        ("read", "woke", "already"),
        ("done", "exited", "exit_step"),
    ]
    assert passed.effects == ()
    # Not clicked yet: the wait waits, for the click or the timeout.
    waits = M.run(j, paused, T0 + timedelta(days=1), engaged_world(False)).state
    assert (waits.status, waits.waiting_for) == ("waiting", "clicked:hello:1")
    assert waits.wake_at == T0 + timedelta(days=4)
