"""SPF (RFC 7208): the record's syntax, its `all`, and the DNS-lookup budget.

Receivers give up after 10 DNS-querying terms (include, a, mx, ptr, exists, redirect),
counted through every include and redirect; past that SPF is a permanent error and fails
for everyone. `names_to_fetch` says which TXT answers the walk still needs, so the runner
can fetch them round by round and `check_spf` stays a pure function of the answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from carepost.doctor.result import Check, Failed, Status, Txt, TxtAnswers

LOOKUP_LIMIT = 10
MAX_DEPTH = 10
_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_QUERYING = frozenset({"include", "a", "mx", "ptr", "exists"})
_MODIFIER = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*)=(.*)$")
_TERM = re.compile(r"^([+\-~?]?)([A-Za-z][A-Za-z0-9_.-]*)([:/].*)?$")


class SpfSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Term:
    qualifier: str  # + - ~ ?
    mechanism: str
    value: str  # after ":" (domain-spec or address), "" when none


@dataclass(frozen=True)
class SpfRecord:
    terms: tuple[Term, ...]
    redirect: str | None = None
    modifiers: tuple[tuple[str, str], ...] = ()

    @property
    def all_term(self) -> Term | None:
        return next((t for t in self.terms if t.mechanism == "all"), None)

    @property
    def lookups(self) -> int:
        own = sum(1 for t in self.terms if t.mechanism in _QUERYING)
        return own + (1 if self.redirect is not None and self.all_term is None else 0)

    @property
    def includes(self) -> tuple[str, ...]:
        return tuple(t.value for t in self.terms if t.mechanism == "include")


def is_spf(record: str) -> bool:
    low = record.lower()
    return low == "v=spf1" or low.startswith("v=spf1 ")


def parse_spf(record: str) -> SpfRecord:
    parts = record.split()
    if not parts or parts[0].lower() != "v=spf1":
        raise SpfSyntaxError("the record must start with v=spf1")
    terms: list[Term] = []
    redirect: str | None = None
    modifiers: list[tuple[str, str]] = []
    for pos, part in enumerate(parts[1:], start=2):
        mod = _MODIFIER.match(part)
        if mod:
            name, value = mod.group(1).lower(), mod.group(2)
            if name == "redirect":
                if redirect is not None:
                    raise SpfSyntaxError(f"term {pos}: redirect= appears twice")
                if not value:
                    raise SpfSyntaxError(f"term {pos}: redirect= needs a domain")
                redirect = value.lower().rstrip(".")
            modifiers.append((name, value))
            continue
        m = _TERM.match(part)
        if not m or m.group(2).lower() not in _MECHANISMS:
            raise SpfSyntaxError(f"term {pos} ({part[:40]}) is not an SPF mechanism")
        mech = m.group(2).lower()
        arg = m.group(3) or ""
        value = arg[1:] if arg.startswith(":") else arg
        if mech in ("include", "exists") and not value:
            raise SpfSyntaxError(f"term {pos}: {mech} needs a domain (like {mech}:example.org)")
        if mech in ("ip4", "ip6") and not value:
            raise SpfSyntaxError(f"term {pos}: {mech} needs an address")
        if mech == "all" and arg:
            raise SpfSyntaxError(f"term {pos}: all takes no argument")
        terms.append(Term(m.group(1) or "+", mech, value.lower().rstrip(".")))
    return SpfRecord(tuple(terms), redirect, tuple(modifiers))


# --- the walk through include and redirect ---------------------------------------------
@dataclass
class _Walk:
    lookups: int = 0
    missing: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    dns_failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _spf_records(answer: Txt) -> list[str]:
    return [] if isinstance(answer, Failed) else [r for r in answer if is_spf(r)]


def _walk(name: str, answers: TxtAnswers, walk: _Walk, path: tuple[str, ...]) -> None:
    if name not in answers:
        walk.missing.add(name)
        return
    answer = answers[name]
    if isinstance(answer, Failed):
        walk.dns_failures.append(f"{name}: {answer.reason}")
        return
    records = _spf_records(answer)
    via = f" (reached through {' > '.join(path)})" if path else ""
    if len(records) != 1:
        count = "no SPF record" if not records else f"{len(records)} SPF records"
        walk.problems.append(f"{name} has {count}{via}: receivers treat that as a permanent error")
        return
    try:
        record = parse_spf(records[0])
    except SpfSyntaxError as exc:
        walk.problems.append(f"{name}: {exc}{via}")
        return
    walk.lookups += record.lookups
    if any(t.mechanism == "ptr" for t in record.terms):
        walk.notes.append(f"{name} uses ptr, which RFC 7208 says not to use (slow, unreliable)")
    targets = list(record.includes)
    if record.redirect is not None and record.all_term is None:
        targets.append(record.redirect)
    for target in targets:
        if "%" in target:
            walk.notes.append(f"{name}: {target} uses macros; its lookups are not counted")
            continue
        if target in path or target == name:
            walk.problems.append(f"{name} includes {target} in a loop")
            continue
        if len(path) >= MAX_DEPTH:
            walk.problems.append(f"{name}: includes nest deeper than {MAX_DEPTH}")
            continue
        _walk(target, answers, walk, (*path, name))


def names_to_fetch(domain: str, answers: TxtAnswers) -> set[str]:
    """TXT names the walk from `domain` reaches but `answers` does not hold yet."""
    walk = _Walk()
    _walk(domain, answers, walk, ())
    return walk.missing


def _with_all(record: str, replacement: str) -> str:
    kept = [p for p in record.split() if p.lower().lstrip("+-~?") != "all"]
    return " ".join([*kept, replacement])


def check_spf(domain: str, answers: TxtAnswers) -> Check:
    def result(status: Status, summary: str, details: list[str], fix: str = "") -> Check:
        return Check("spf", domain, status, summary, tuple(details), fix)

    answer = answers.get(domain, Failed("not looked up"))
    if isinstance(answer, Failed):
        return result("error", f"could not look up TXT for {domain}: {answer.reason}", [])
    records = _spf_records(answer)
    if not records:
        return result(
            "fail",
            "no SPF record: receivers cannot tell your servers from forgers",
            [],
            f"publish a TXT record at {domain}: \"v=spf1 include:<your relay's SPF domain> "
            '-all" (your relay documents the include)',
        )
    if len(records) > 1:
        return result(
            "fail",
            f"{len(records)} SPF records: receivers treat more than one as a permanent error",
            [],
            "merge them into one TXT record that starts with v=spf1",
        )
    record_text = records[0]
    try:
        record = parse_spf(record_text)
    except SpfSyntaxError as exc:
        return result("fail", f"the SPF record does not parse: {exc}", [record_text])
    walk = _Walk()
    _walk(domain, answers, walk, ())
    details = [f"record: {record_text}", f"DNS lookups: {walk.lookups} of {LOOKUP_LIMIT}"]
    details += walk.notes
    fails: list[str] = list(walk.problems)
    warns: list[str] = []
    fix = ""
    all_term = record.all_term
    if all_term is not None and all_term.qualifier == "+":
        fails.append("+all lets every server on the internet send as you")
        fix = f'publish "{_with_all(record_text, "-all")}"'
    elif all_term is not None and all_term.qualifier == "?":
        warns.append("?all (neutral) gives unlisted servers no verdict; spoofing is not stopped")
        fix = f'publish "{_with_all(record_text, "-all")}"'
    elif all_term is None and record.redirect is None:
        warns.append("no all at the end: mail from unlisted servers gets no verdict")
        fix = f'publish "{record_text} -all"'
    if all_term is not None and record.terms[-1] is not all_term:
        warns.append("terms after all are never reached; move all to the end")
    if all_term is not None and record.redirect is not None:
        warns.append("redirect= is ignored because the record has all")
    if walk.lookups > LOOKUP_LIMIT:
        fails.append(
            f"{walk.lookups} DNS lookups, over the limit of {LOOKUP_LIMIT}: receivers stop "
            "and SPF fails for every message"
        )
        fix = fix or "remove includes you no longer use, or replace some with ip4:/ip6: ranges"
    if fails:
        return result("fail", fails[0], details + fails[1:] + warns, fix)
    if walk.dns_failures:
        return result(
            "error", "could not follow every include: " + walk.dns_failures[0], details, fix
        )
    if warns:
        return result("warn", warns[0], details + warns[1:], fix)
    ending = "-all (unlisted servers fail)" if all_term and all_term.qualifier == "-" else ""
    if all_term and all_term.qualifier == "~":
        ending = "~all (unlisted servers soft-fail; DMARC decides)"
    if not ending:
        ending = f"redirect to {record.redirect}"
    return result("ok", f"one SPF record ending in {ending}", details)
