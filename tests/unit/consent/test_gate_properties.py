"""Properties of the gate over generated states (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from carepost.consent import gate
from carepost.consent.records import (
    MESSAGE_CLASSES,
    AuthorizationState,
    ConsentEvent,
    ContactState,
    SuppressionState,
)

BASE = datetime(2026, 1, 1, tzinfo=UTC)
CHANNELS = ("email", "sms")
TOPICS = ("newsletter", "refills")
SENDERS = ("self", "acme", "other")

times = st.integers(min_value=0, max_value=400).map(lambda d: BASE + timedelta(days=d))
opt_times = st.none() | times


@st.composite
def authorizations(draw: st.DrawFn, idx: int = 0) -> AuthorizationState:
    return AuthorizationState(
        id=f"a{draw(st.integers(0, 5))}",
        purposes=frozenset(draw(st.sets(st.sampled_from(["marketing", "research", "other"])))),
        recipients=frozenset(draw(st.sets(st.sampled_from(SENDERS)))),
        signed_at=draw(opt_times),
        expires_at=draw(opt_times),
        expiry_event_at=draw(opt_times),
        revoked_at=draw(opt_times),
        remuneration_statement=draw(st.booleans()),
        complete=draw(st.booleans() | st.just(True)),
    )


@st.composite
def contact_states(draw: st.DrawFn, cid: str = "c0") -> ContactState:
    consents = {}
    for key in draw(st.sets(st.tuples(st.sampled_from(CHANNELS), st.sampled_from(TOPICS)))):
        events = draw(
            st.lists(
                st.builds(ConsentEvent, st.sampled_from(["opted_in", "opted_out"]), times),
                min_size=1,
                max_size=3,
            )
        )
        consents[key] = tuple(sorted(events, key=lambda e: e.at))
    sups = draw(
        st.lists(
            st.builds(
                SuppressionState,
                st.sampled_from(CHANNELS),
                st.sampled_from(["hard_bounce", "spam_complaint", "manual", "unsubscribe_all"]),
                times,
                opt_times,
            ),
            max_size=2,
        )
    )
    auths = draw(st.lists(authorizations(), max_size=3))
    return ContactState(cid, consents, tuple(auths), tuple(sups))


messages = st.tuples(
    st.sampled_from(MESSAGE_CLASSES),
    st.sampled_from(CHANNELS),
    st.sampled_from(TOPICS),
    st.sampled_from(SENDERS),
    times,
)


def valid_for(a: AuthorizationState, at: datetime, sender: str, paid: bool) -> bool:
    """An independent statement of 164.508 validity for marketing at `at`."""
    return (
        a.complete
        and a.signed_at is not None
        and a.signed_at <= at
        and (a.expires_at is None or at < a.expires_at)
        and (a.expiry_event_at is None or a.expiry_event_at > at)
        and (a.revoked_at is None or a.revoked_at > at)
        and "marketing" in a.purposes
        and sender in a.recipients
        and (a.remuneration_statement or not paid)
    )


def suppressed(s: ContactState, channel: str, at: datetime) -> bool:
    return any(
        x.channel == channel and x.at <= at and (x.removed_at is None or x.removed_at > at)
        for x in s.suppressions
    )


@settings(max_examples=400)
@given(contact_states(), messages)
def test_no_marketing_without_a_valid_authorization(s: ContactState, msg: tuple) -> None:  # type: ignore[type-arg]
    cls, channel, topic, sender, at = msg
    d = gate.decide(s, cls, channel, topic, sender, at)
    if cls in ("marketing", "marketing_paid") and d.allowed:
        paid = cls == "marketing_paid"
        relied = [a for a in s.authorizations if a.id == d.authorization_id]
        assert relied, "an allowed marketing decision names the authorization it relied on"
        assert any(valid_for(a, at, sender, paid) for a in relied)
        events = [e for e in s.consents.get((channel, topic), ()) if e.at <= at]
        assert events and events[-1].status == "opted_in"
    if cls in ("marketing", "marketing_paid") and not any(
        valid_for(a, at, sender, cls == "marketing_paid") for a in s.authorizations
    ):
        assert not d.allowed


@settings(max_examples=400)
@given(contact_states(), messages)
def test_suppression_always_denies(s: ContactState, msg: tuple) -> None:  # type: ignore[type-arg]
    cls, channel, topic, sender, at = msg
    d = gate.decide(s, cls, channel, topic, sender, at)
    if suppressed(s, channel, at):
        assert not d.allowed
        assert any(r.startswith("suppressed_") for r in d.reasons)


@settings(max_examples=300)
@given(contact_states(), messages, st.randoms(use_true_random=False))
def test_decision_is_deterministic(s: ContactState, msg: tuple, rnd) -> None:  # type: ignore[no-untyped-def,type-arg]
    cls, channel, topic, sender, at = msg
    first = gate.decide(s, cls, channel, topic, sender, at)
    assert gate.decide(s, cls, channel, topic, sender, at) == first
    # Neither the order of authorizations nor of suppressions changes the answer.
    auths, sups = list(s.authorizations), list(s.suppressions)
    rnd.shuffle(auths)
    rnd.shuffle(sups)
    shuffled = ContactState(s.contact_id, s.consents, tuple(auths), tuple(sups))
    again = gate.decide(shuffled, cls, channel, topic, sender, at)
    assert (again.allowed, again.reasons) == (first.allowed, first.reasons)
    if len({a.id for a in auths}) == len(auths):
        assert again == first


@settings(max_examples=200)
@given(st.lists(contact_states(), min_size=0, max_size=8), messages)
def test_batch_equals_single(states: list[ContactState], msg: tuple) -> None:  # type: ignore[type-arg]
    cls, channel, topic, sender, at = msg
    by_id = {
        f"c{i}": ContactState(f"c{i}", s.consents, s.authorizations, s.suppressions)
        for i, s in enumerate(states)
    }
    ids = [*by_id, "missing"]
    batch = gate.decide_batch(by_id, ids, cls, channel, topic, sender, at)
    single = [gate.decide(by_id[c], cls, channel, topic, sender, at) for c in by_id]
    assert batch[:-1] == single
    assert batch[-1] == gate.Decision(False, (gate.UNKNOWN_CONTACT,), None)


@settings(max_examples=300)
@given(contact_states(), messages)
def test_reasons_are_complete_and_ordered(s: ContactState, msg: tuple) -> None:  # type: ignore[type-arg]
    cls, channel, topic, sender, at = msg
    d = gate.decide(s, cls, channel, topic, sender, at)
    if d.allowed:
        assert d.reasons in ((gate.EXEMPT_CLASS,), (gate.AUTHORIZED,))
    else:
        assert d.reasons
        ranks = [gate.DENIAL_ORDER.index(r) for r in d.reasons]
        assert ranks == sorted(set(ranks))
