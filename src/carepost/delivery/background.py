"""Delivery running beside the web app in `carepost serve`: on the embedded default, the
capture server, the bounce listener and one worker in a thread, so one command runs the
whole system."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from carepost.bounces.listener import BounceListener, listener_for
from carepost.delivery.capture import CaptureServer
from carepost.delivery.factory import capture_folder, worker_for
from carepost.workspace import Workspace


@dataclass
class Background:
    stop: Callable[[], None]
    description: str


def start_delivery(ws: Workspace, *, idle_sleep: float = 1.0) -> Background:
    """Start what delivery needs next to the web app; `stop()` ends it cleanly (the
    worker finishes its batch, the capture server closes)."""
    stopping = threading.Event()
    capture: CaptureServer | None = None
    parts = []
    bounces: BounceListener | None = None
    if ws.settings.transport == "capture":
        capture = CaptureServer(capture_folder(ws), ws.keyring, ws.settings.capture_port)
        capture.start()
        parts.append(f"capture server on 127.0.0.1:{ws.settings.capture_port} (STARTTLS)")
        # The embedded default also receives its bounces and complaints, on loopback.
        bounces = listener_for(ws)
        bounces.start()
        parts.append(f"bounce listener on {bounces.host}:{bounces.port} (STARTTLS)")
    worker = worker_for(ws, name="serve-worker")
    thread = threading.Thread(
        target=worker.run,
        kwargs={"until_idle": False, "idle_sleep": idle_sleep, "stop": stopping.is_set},
        name="carepost-worker",
        daemon=True,
    )
    thread.start()
    parts.append(f"one worker ({ws.settings.transport} transport)")

    def stop() -> None:
        stopping.set()
        thread.join(timeout=60)
        if capture is not None:
            capture.stop()
        if bounces is not None:
            bounces.stop()

    return Background(stop, ", ".join(parts))
