"""The classifier over the shared, third-party-labelled bounce corpus, and the offline
`carepost bounce classify` command as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from carepost.bounces.corpus import Score, score_folder
from cli_runner import CarepostCli
from conftest import shared_data


def _report(score: Score) -> str:
    lines = [f"{o.file}: expected {o.expected}, got {o.got} {o.detail}" for o in score.misses]
    return "\n".join(lines)


def test_corpus_accuracy_on_hard_soft_and_complaints() -> None:
    score = score_folder(shared_data("bounce-emails"))
    assert len(score.scored) >= 40
    # Issue 6's bar on hard/soft/complaint, a delay notice counting as soft (corpus.py
    # says why), and on the decision the platform acts on: suppress, opt out, or not.
    assert score.scored_severity_accuracy >= 0.95, _report(score)
    assert score.scored_action_accuracy >= 0.95, _report(score)
    # Exact categories: the corpus labels some delay warnings (RFC 3464 "Action: delayed",
    # Gmail's "THIS IS A WARNING MESSAGE ONLY") as soft bounces, which carepost calls
    # "delayed" as the issue asks; this floor catches regressions, the misses are printed
    # by benchmarks/bounce_accuracy.py.
    assert score.scored_accuracy >= 0.93, _report(score)
    assert all(o.got != "error" for o in score.outcomes), _report(score)


def test_bounce_classify_json_without_a_workspace(carepost: CarepostCli, tmp_path: Path) -> None:
    folder = shared_data("bounce-emails")
    broken = tmp_path / "broken.eml"
    broken.write_bytes(b"")
    files = [str(folder / "lhost-outlook-04.eml"), str(folder / "arf-02.eml"), str(broken)]
    run = carepost("bounce", "classify", "--json", *files, check=False)
    assert run.returncode == 1
    doc = json.loads(run.stdout)
    mixed, complaint, failed = doc["files"]
    assert mixed["category"] == "bounce-hard"
    assert mixed["mixed"] is True
    assert {r["bounce"] for r in mixed["recipients"]} == {"hard", "soft"}
    assert all(r["status"] for r in mixed["recipients"])
    assert complaint["category"] == "complaint"
    assert failed["file"] == str(broken)
    assert "cannot parse" in failed["error"]
    assert doc["failed"] == 1


def test_bounce_classify_text_names_a_missing_file(carepost: CarepostCli, tmp_path: Path) -> None:
    message = tmp_path / "ooo.eml"
    message.write_bytes(b"From: a@b.example\nSubject: Automatic reply: hi\n\nAway.\n")
    run = carepost("bounce", "classify", str(message), str(tmp_path / "nope.eml"), check=False)
    assert run.returncode == 1
    assert f"{message}: auto-reply" in run.stdout
    assert "nope.eml" in run.stderr
    assert "cannot read" in run.stderr
