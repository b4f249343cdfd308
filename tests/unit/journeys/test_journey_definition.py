"""Journey definitions: the example journeys load; every mistake is named by its place."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

import pytest

from carepost.journeys import definition as D
from carepost.journeys.document import load, parse_document
from carepost.segments import ast as A

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "journeys"


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(D.DefinitionError) as caught:
        load(text)
    return caught.value.problems


def test_every_example_journey_loads() -> None:
    names = sorted(p.stem for p in EXAMPLES.glob("*.yaml"))
    assert names == [
        "birthday",
        "lab-result",
        "post-visit-survey",
        "re-engagement",
        "refill-reminder",
        "welcome-series",
    ]
    for path in EXAMPLES.glob("*.yaml"):
        assert load(path.read_text()).name == path.stem


def test_refill_reminder_reads_as_written() -> None:
    j = load((EXAMPLES / "refill-reminder.yaml").read_text())
    assert j.trigger == D.EventTrigger("refill_due", {})
    assert (j.reentry, j.reentry_after_days, j.goal_event) == ("after", 25, "purchase")
    assert [s.id for s in j.steps] == ["remind", "wait-click", "fallback", "done"]
    remind, wait, fallback, done = j.steps
    assert remind.action == D.Send("refill-reminder", "treatment")
    assert remind.next == "wait-click"  # the following step by default
    assert wait.action == D.Wait(
        event="clicked", step="remind", link=0, timeout=timedelta(days=3), on_timeout="fallback"
    )
    assert j.exits_from(wait) == ("done", "fallback")
    assert fallback.next == "done"
    assert j.exits_from(done) == ()


def test_triggers_of_every_kind() -> None:
    base = "steps: [{id: a, exit: {}}]\nname: t\n"
    assert load(base + "trigger: {segment: {name: older, on: leave}}").trigger == (
        D.SegmentTrigger("older", "leave")
    )
    assert load(base + "trigger: {manual: {}}").trigger == D.ManualTrigger()
    assert load(base + "trigger: {inactivity: {days: 90}}").trigger == D.InactivityTrigger(90)
    date = load(base + "trigger: {date: {attribute: next_appointment, offset_days: -2}}")
    assert date.trigger == D.DateTrigger("next_appointment", -2, time(9))
    event = load(base + "trigger: {event: {name: purchase, where: {sku: rx-1, qty: 2}}}")
    assert event.trigger == D.EventTrigger("purchase", {"sku": "rx-1", "qty": 2})


def test_branch_rules_use_the_segment_language_with_journey_predicates() -> None:
    j = load((EXAMPLES / "welcome-series.yaml").read_text())
    branch = j.step("engaged").action
    assert isinstance(branch, D.Branch)
    assert [p.step for p in A.journey_predicates(branch.rule)] == ["welcome", "tips"]
    assert (branch.then, branch.otherwise) == ("invite", "done")


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("name: Bad Name\ntrigger: {manual: {}}\nsteps: [{id: a, exit: {}}]", "name", "lower-case"),
        (
            "name: t\ntrigger: {manual: {}, inactivity: {days: 3}}\nsteps: [{id: a, exit: {}}]",
            "trigger",
            "exactly one of",
        ),
        ("name: t\ntrigger: {manual: {}}\nsteps: []", "steps", "at least one step"),
        (
            "name: t\ntrigger: {manual: {}}\nsteps: [{id: a, send: {template: x, class: promo}}]",
            "steps[0] (a).send.class",
            "one of treatment",
        ),
        (
            "name: t\ntrigger: {manual: {}}\n"
            "steps: [{id: a, send: {template: x}, wait: {duration: 1d}}]",
            "steps[0] (a)",
            "exactly one step type",
        ),
        (
            "name: t\ntrigger: {manual: {}}\nsteps: [{id: a, wait: {duration: 3 days}}]",
            "steps[0] (a).wait.duration",
            "a duration like",
        ),
        (
            "name: t\ntrigger: {manual: {}}\nsteps: [{id: a, wait: {event: purchase}}]",
            "steps[0] (a).wait.timeout",
            "needs a timeout",
        ),
        (
            "name: t\ntrigger: {manual: {}}\nsteps: [{id: a, wait: {event: clicked, timeout: 1d}}]",
            "steps[0] (a).wait.step",
            "needs the send step",
        ),
        (
            "name: t\ntrigger: {manual: {}}\nsteps: [{id: a, goto: {step: nowhere}}]",
            "steps[0] (a).goto.step",
            "no step with id 'nowhere'",
        ),
        (
            "name: t\ntrigger: {manual: {}}\nsteps: [{id: a, exit: {}}, {id: b, exit: {}}]",
            "steps[1] (b)",
            "no way leads to this step",
        ),
        (
            "name: t\ntrigger: {manual: {}}\nsteps: [{id: a, exit: {}}, {id: a, exit: {}}]",
            "steps[1].id",
            "already steps[0]'s id",
        ),
        (
            "name: t\ntrigger: {manual: {}}\n"
            "steps: [{id: a, branch: {rule: 'age >', then: a, else: a}}]",
            "steps[0] (a).branch.rule",
            "unexpected",
        ),
        (
            "name: t\ntrigger: {manual: {}}\nsteps: [{id: a, branch: {rule: 'opened(step=\"z\")', "
            "then: a, else: a}}]",
            "steps[0] (a).branch.rule",
            "'z' is not a send step",
        ),
        (
            "name: t\ntrigger: {manual: {}}\nsteps: [{id: a, update_contact: {set: {email: x}}}]",
            "steps[0] (a).update_contact.set",
            "only custom attributes",
        ),
        (
            "name: t\ntrigger: {manual: {}}\nsteps: [{id: a, webhook: {url: 'https://u:p@h/x'}}]",
            "steps[0] (a).webhook.url",
            "without credentials",
        ),
        (
            "name: t\ntrigger: {manual: {}}\nreentry: sometimes\nsteps: [{id: a, exit: {}}]",
            "reentry",
            "never, always",
        ),
        (
            "name: t\ntrigger: {manual: {}}\nmax_steps: 0\nsteps: [{id: a, exit: {}}]",
            "max_steps",
            "from 1 to 1000",
        ),
        (
            "name: t\ntrigger: {manual: {}}\nsteps: [{id: a, exit: {}, next: a}]",
            "steps[0] (a).next",
            "names its own way on",
        ),
        (
            "name: t\ntrigger: {manual: {}}\nfoo: 1\nsteps: [{id: a, exit: {}}]",
            "foo",
            "unknown key",
        ),
    ],
)
def test_mistakes_are_named_by_place(text: str, where: str, what: str) -> None:
    found = problems(text)
    assert any(w == where and what in msg for w, msg in found), found


def test_all_problems_are_reported_at_once() -> None:
    found = problems(
        "name: t\ntrigger: {manual: {}}\nsteps:\n"
        "  - {id: a, send: {template: X, class: marketing}}\n"
        "  - {id: b, wait: {duration: 0d}}\n"
    )
    assert [w for w, _ in found] == ["steps[0] (a).send.template", "steps[1] (b).wait.duration"]


def test_documents_refuse_aliases_duplicates_and_bad_yaml_with_line_and_column() -> None:
    with pytest.raises(D.DefinitionError, match="line 2, column 1: duplicate key 'name'"):
        parse_document("name: a\nname: b\n")
    with pytest.raises(D.DefinitionError, match=r"line 2, column 4: aliases \(\*name\)"):
        parse_document("a: &x [1, 2]\nb: *x\n")
    with pytest.raises(D.DefinitionError, match="line 2, column 1: expected ','"):
        parse_document("name: [unclosed\n")
    with pytest.raises(D.DefinitionError, match="not UTF-8 text"):
        parse_document(b"name: \xff\n")
    with pytest.raises(D.DefinitionError, match="at most 256 KB"):
        parse_document("#" * (300 * 1024))


def test_yaml_1_1_booleans_stay_text() -> None:
    assert parse_document("on: enter\nanswer: no\nflag: true\n") == {
        "on": "enter",
        "answer": "no",
        "flag": True,
    }


def test_json_is_read_too() -> None:
    j = load('{"name": "j", "trigger": {"manual": {}}, "steps": [{"id": "a", "exit": {}}]}')
    assert j.name == "j"
