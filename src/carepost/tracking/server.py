"""Assembling the tracking app from a workspace: the classifier's knowledge from the
settings (bad values stop the start with the setting named), the event store, the batch
writer and the ASGI app. `carepost serve` mounts what `create_tracking_app` returns at /t;
`carepost tracking serve` runs it alone, and with several uvicorn workers each process
calls `app_from_environment`."""

from __future__ import annotations

import gc
import ipaddress

from carepost.clock import Clock, system_clock
from carepost.config import Settings
from carepost.content.tokens import TokenSigner
from carepost.tracking.classifier import Knowledge, Network
from carepost.tracking.endpoints import TrackingApp
from carepost.tracking.ingest import BatchWriter, EventStore
from carepost.workspace import Workspace, open_workspace


def knowledge_from(settings: Settings) -> Knowledge:
    """The classifier's networks from the CAREPOST_TRACKING_*_NETWORKS settings; a bad
    entry raises ValueError naming the setting and the entry's position."""
    return Knowledge(
        apple_networks=_networks(settings.tracking_apple_networks, "APPLE"),
        google_proxy_networks=_networks(settings.tracking_google_proxy_networks, "GOOGLE_PROXY"),
        scanner_networks=_networks(settings.tracking_scanner_networks, "SCANNER"),
    )


def _networks(value: str, which: str) -> tuple[Network, ...]:
    setting = f"CAREPOST_TRACKING_{which}_NETWORKS"
    nets: list[Network] = []
    for position, part in enumerate(value.split(","), start=1):
        if not part.strip():
            continue  # "a,,b" and a trailing comma are forgiven; positions stay as written
        try:
            nets.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{setting}: entry {position} is not an IP network") from None
    return tuple(nets)


def create_tracking_app(
    workspace: Workspace, *, clock: Clock = system_clock, knowledge: Knowledge | None = None
) -> TrackingApp:
    settings = workspace.settings
    store = EventStore(workspace.engine, knowledge or knowledge_from(settings))
    writer = BatchWriter(
        store,
        max_events=settings.tracking_batch_size,
        max_wait=settings.tracking_batch_wait_ms / 1000,
    )
    return TrackingApp(
        TokenSigner(workspace.keyring),
        writer,
        clock=clock,
        bare_route=settings.tracking_benchmark_bare_route,
    )


def app_from_environment() -> TrackingApp:
    """uvicorn's factory in each worker process (`--workers` > 1): the workspace named by
    CAREPOST_DATA_DIR and the other CAREPOST_* variables the parent set."""
    ws = open_workspace()
    ws.check_schema()
    app = create_tracking_app(ws)
    settle_heap()
    return app


def settle_heap() -> None:
    """Take what a serving process has built so far (modules, the app, the engine) out of
    the cyclic GC's view. Otherwise every full collection walks all of it while requests
    wait: measured, p99 latency 98 ms with and 27 ms without. Only for processes that do
    nothing but serve (frozen objects are never collected)."""
    gc.collect()
    gc.freeze()
