"""The API process's one segment snapshot (segments/service.SegmentEngine), kept in
`app.state.segments`.

It is built on the first request that needs it, not at start-up: a build decrypts the
whole store (about 37 s and 720 MiB resident for a million contacts, see
docs/benchmarks.md), and many API processes never count. After that every answer first
refreshes it (three indexed queries when nothing changed), as the command line does, so
a committed change shows in the next count. The lock serialises builds, refreshes and
evaluations: the snapshot's arrays are replaced in place by a refresh.

The build and refreshes are audited as bulk accesses of the API process itself
(`api:segments`): the snapshot is shared by every caller, and what a caller sees of it
(counts; ids and records only through contacts/phi.py) is audited per request."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from carepost.audit.actor import Actor
from carepost.clock import Clock
from carepost.segments.service import SegmentEngine
from carepost.workspace import Workspace

T = TypeVar("T")
ACTOR_ID = "api:segments"


class SharedSegments:
    def __init__(self, workspace: Workspace, clock: Clock, *, workers: int = 2) -> None:
        self._workspace = workspace
        self._clock = clock
        self._workers = workers
        self._engine: SegmentEngine | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._engine is not None

    def use(self, work: Callable[[SegmentEngine], T]) -> T:
        """Run `work` with the engine (built on first use), one caller at a time."""
        with self._lock:
            if self._engine is None:
                self._engine = SegmentEngine(
                    self._workspace.engine,
                    self._workspace.keyring,
                    actor=Actor(ACTOR_ID, "api", socket.gethostname()[:128]),
                    workers=self._workers,
                    clock=self._clock,
                )
            return work(self._engine)
