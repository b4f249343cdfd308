"""`carepost serve` on the embedded default runs the whole system: the pages over https
with the workspace's own certificate, a worker and the capture mail server."""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from smtp_sink import free_port


def test_serve_delivers_a_new_campaign_and_serves_pages(tmp_path: Path) -> None:
    data = tmp_path / "ws"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPOST_")}
    bounce_port = free_port()
    env.update(
        CAREPOST_DATA_DIR=str(data),
        CAREPOST_CAPTURE_PORT=str(free_port()),
        CAREPOST_BOUNCE_PORT=str(bounce_port),
    )

    def carepost(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "carepost.cli", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    carepost("demo", "--contacts", "300")
    campaign = json.loads(
        carepost(
            "campaign",
            "create",
            "--name",
            "again",
            "--segment",
            "flu-outreach",
            "--template",
            "flu-outreach",
            "--sender",
            "riverside-clinic",
            "--topic",
            "flu-clinic",
            "--json",
        )
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "carepost.cli", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ctx = ssl.create_default_context(cafile=str(data / "capture" / "tls" / "ca.pem"))
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"https://localhost:{port}/healthz", verify=ctx, timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert health.status_code == 200
        # The bounce listener runs beside it, with STARTTLS from the same CA.
        with smtplib.SMTP("127.0.0.1", bounce_port, timeout=10) as smtp:
            smtp.starttls(context=ctx)
            assert smtp.ehlo()[0] == 250
        started = json.loads(carepost("campaign", "start", campaign["id"], "--json"))
        assert started["recipients"] > 0
        while True:  # the worker inside `serve` picks it up
            status = json.loads(carepost("campaign", "status", campaign["id"], "--json"))
            if status["status"] == "done":
                break
            assert time.monotonic() < deadline + 60, status
            time.sleep(0.5)
        assert status["states"].get("sent", 0) > 0
        assert set(status["states"]) <= {"sent", "denied"}
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=60)
    assert server.returncode in (0, -15), stderr
    assert "@example.org" not in stderr
