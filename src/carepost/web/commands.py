"""`carepost serve`: the public web app under uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from carepost.cli_support import DataDir, err, fail, out, workspace


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8025,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="TLS certificate (else terminate TLS in a proxy).")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key.")] = None,
    delivery: Annotated[
        bool,
        typer.Option(
            "--delivery/--no-delivery",
            help="Also run one worker and, on the capture transport, the capture server.",
        ),
    ] = True,
    data_dir: DataDir = None,
) -> None:
    """Serve the public pages (unsubscribe with RFC 8058 one-click, preferences, portal,
    the tracking pixel and click redirect, /healthz) and, on the embedded default, one
    delivery worker and the capture mail server."""
    import uvicorn

    from carepost.web.app import create_app

    if (ssl_certfile is None) != (ssl_keyfile is None):
        fail("give both --ssl-certfile and --ssl-keyfile, or neither", 2)
    with workspace(data_dir) as ws:
        from carepost.tracking.server import knowledge_from

        try:
            knowledge_from(ws.settings)
        except ValueError as exc:
            fail(str(exc))
        if ws.settings.dev_insecure:
            err.print(
                "[bold yellow]DEV_INSECURE is set: plain-http links allowed. "
                "Never use this setting in production.[/]"
            )
        if ssl_certfile is None and ws.settings.transport == "capture" and _loopback(host):
            # The embedded default: https with the workspace's own certificate (CA in
            # capture/tls/ca.pem), so the links the demo's messages carry really work.
            from carepost.delivery.capture import ensure_tls
            from carepost.delivery.factory import capture_folder

            files = ensure_tls(capture_folder(ws))
            ssl_certfile, ssl_keyfile = files.cert, files.key
            out.print(f"TLS from the workspace's local CA ({files.ca}); trust it to browse")
        background = None
        if delivery and not ws.settings.public_url:
            err.print(
                "[bold yellow]CAREPOST_PUBLIC_URL is not set: serving the pages only; "
                "no worker runs (messages need their https links).[/]"
            )
        elif delivery:
            from carepost.delivery.background import start_delivery

            background = start_delivery(ws)
            out.print(f"delivery: {background.description}")
        app = create_app(ws)
        scheme = "https" if ssl_certfile else "http"
        out.print(f"serving on {scheme}://{host}:{port} (HSTS on; put TLS in front if http)")
        try:
            uvicorn.Server(server_config(app, host, port, ssl_certfile, ssl_keyfile)).run()
        finally:
            if background is not None:
                background.stop()


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")


def server_config(
    app: Any,
    host: str,
    port: int,
    ssl_certfile: Path | None = None,
    ssl_keyfile: Path | None = None,
    log_level: str = "info",
    *,
    workers: int = 1,
) -> Any:
    """The uvicorn configuration `carepost serve` and `carepost tracking serve` run (tests
    start the same one). With `workers` > 1, `app` is the import string of a factory."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        access_log=False,  # paths carry tokens; they stay out of logs
        server_header=False,
        log_level=log_level,
        workers=workers,
        factory=workers > 1,
        http="httptools",
        # Not uvloop even when installed: the SMTP client (portal code mails from the web
        # process) is written against asyncio's transports.
        loop="asyncio",
    )
