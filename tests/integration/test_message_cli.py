"""`carepost message send|status` as a real process, on both engines."""

from __future__ import annotations

import json
from collections.abc import Callable

from carepost.audit.actor import Actor
from carepost.workspace import Workspace
from cli_runner import Run
from message_support import setup_one_off

SECRET = "Ferritin-3318-marker"


def test_send_then_status_and_refusals(
    workspace: Workspace, actor: Actor, carepost: Callable[..., Run]
) -> None:
    ids = setup_one_off(workspace, actor, ["pat@patients.example"])
    args = ("message", "send", "--contact", ids[0], "--template", "lab-result")
    sent = carepost(
        *args,
        "--class",
        "treatment",
        "--data-file",
        "-",
        "--json",
        stdin=json.dumps({"test_name": SECRET, "reference": "r-1"}),
    )
    queued = json.loads(sent.stdout)
    assert queued["status"] == "queued"
    assert SECRET not in sent.stdout + sent.stderr
    status = json.loads(carepost("message", "status", queued["id"], "--json").stdout)
    assert status["status"] == "queued"
    assert [s["state"] for s in status["timeline"]] == ["queued"]
    evidence = json.loads(carepost("message", "evidence", queued["id"], "--json").stdout)
    assert evidence["campaign"]["message_class"] == "treatment"

    undeclared = carepost(
        *args, "--class", "treatment", "--data", json.dumps({"secret": SECRET}), check=False
    )
    assert undeclared.returncode == 1
    assert "data.secret: not declared" in undeclared.stderr
    assert SECRET not in undeclared.stderr + undeclared.stdout
    marketing = carepost(*args, "--class", "marketing", check=False)
    assert marketing.returncode == 1
    assert "marketing goes by a campaign" in " ".join(marketing.stderr.split())
    bad_json = carepost(*args, "--class", "treatment", "--data", '{"a": ' + SECRET, check=False)
    assert bad_json.returncode == 2
    assert SECRET not in bad_json.stderr
