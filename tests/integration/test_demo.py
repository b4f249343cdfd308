"""The README's run command, as a newcomer runs it: `carepost demo` on the embedded
default (SQLite, the capture mail server), twice."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from smtp_sink import free_port


def _demo(data_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPOST_")}
    env["CAREPOST_CAPTURE_PORT"] = str(free_port())
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "carepost.cli",
            "--data-dir",
            str(data_dir),
            "demo",
            "--contacts",
            "400",
        ],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_sends_a_gated_campaign_into_the_capture_server(tmp_path: Path) -> None:
    first = _demo(tmp_path / "ws", tmp_path)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    sent = int(re.search(r"(\d+) sent in", out).group(1))  # type: ignore[union-attr]
    captured = int(re.search(r"(\d+) captured", out).group(1))  # type: ignore[union-attr]
    denied = int(re.search(r"denied (\d+) at send time", out).group(1))  # type: ignore[union-attr]
    frozen = int(re.search(r"(\d+) recipients frozen", out).group(1))  # type: ignore[union-attr]
    assert sent > 0
    assert captured == sent
    assert denied > 0
    assert sent + denied == frozen
    assert "no_authorization" in out
    assert "audit chain intact" in out
    assert "@example.org" not in out + first.stderr  # no patient address printed
    second = _demo(tmp_path / "ws", tmp_path)
    assert second.returncode == 0, second.stderr
    assert "0 new" in second.stdout
    assert f"{sent} sent in" in second.stdout  # the same audience, the same decisions
