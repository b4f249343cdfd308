"""`carepost tracking classify FILE.jsonl`: replay recorded opens and clicks through the
classifier, offline (no workspace, no database). One output line per event line; a bad line
is reported by number and field (never its value) and the others are still classified."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

from carepost.cli_support import DataDir, JsonFlag, err, fail, out, workspace
from carepost.tracking.classifier import (
    DEFAULT_APPLE_NETWORKS,
    DEFAULT_GOOGLE_PROXY_NETWORKS,
    DEFAULT_SCANNER_NETWORKS,
    Knowledge,
)
from carepost.tracking.replay import BadLine, Recorded, classify_all, read_lines

tracking_app = typer.Typer(no_args_is_help=True, help="Engagement tracking (opens, clicks).")

Networks = Annotated[
    list[str] | None,
    typer.Option(help="Replaces the default networks (repeat for several)."),
]


@tracking_app.command("classify")
def classify_cmd(
    file: Annotated[Path, typer.Argument(help="Events, one JSON object per line.")],
    json_out: JsonFlag = False,
    apple_network: Networks = None,
    google_proxy_network: Networks = None,
    scanner_network: Networks = None,
) -> None:
    """Say for each recorded event whether a person or a machine made it, and why."""
    try:
        knowledge = Knowledge.from_strings(
            apple_network or DEFAULT_APPLE_NETWORKS,
            google_proxy_network or DEFAULT_GOOGLE_PROXY_NETWORKS,
            scanner_network or DEFAULT_SCANNER_NETWORKS,
        )
    except ValueError as exc:
        fail(str(exc))
    try:
        data = file.read_bytes()
    except OSError as exc:
        fail(f"{file}: cannot read: {exc.strerror or type(exc).__name__}")
    items = list(read_lines(data.splitlines()))
    records = [item for _, item in items if isinstance(item, Recorded)]
    verdicts = iter(classify_all(records, knowledge))
    bad = 0
    for number, item in items:
        if isinstance(item, BadLine):
            bad += 1
            if json_out:
                doc = {"line": number, "error": str(item)}
                _line(orjson.dumps(doc).decode())
            else:
                err.print(f"line {number}: {item}", markup=False)
            continue
        v = next(verdicts)
        if json_out:
            doc2 = {
                "line": number,
                "message_id": item.message_id,
                "verdict": v.verdict,
                "reasons": list(v.reasons),
                "confidence": v.confidence,
            }
            _line(orjson.dumps(doc2).decode())
        else:
            reasons = ",".join(v.reasons)
            _line(f"{number}\t{v.verdict}\t{reasons}\t{v.confidence:.3f}")
    if bad:
        raise typer.Exit(1)


def _line(text: str) -> None:
    # Plain stdout, not rich: tabs and JSON must reach a pipe exactly as written.
    sys.stdout.write(text + "\n")


@tracking_app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8026,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes (all state is in the database).")
    ] = 1,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="TLS certificate (else terminate TLS in a proxy).")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Serve only the open pixel and click redirect (/t/o/..., /t/c/...), stateless, so
    it can run on its own machines beside or instead of `carepost serve`."""
    import os

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from carepost.tracking.server import create_tracking_app, knowledge_from, settle_heap
    from carepost.web.commands import server_config

    if (ssl_certfile is None) != (ssl_keyfile is None):
        fail("give both --ssl-certfile and --ssl-keyfile, or neither", 2)
    with workspace(data_dir) as ws:
        try:
            knowledge_from(ws.settings)
        except ValueError as exc:
            fail(str(exc))
        scheme = "https" if ssl_certfile else "http"
        out.print(f"tracking on {scheme}://{host}:{port} ({workers} process(es))")
        if ws.settings.tracking_benchmark_bare_route:
            err.print("[bold yellow]benchmark bare route /t/bare/ is on: not for production[/]")
        if workers == 1:
            config = server_config(
                create_tracking_app(ws), host, port, ssl_certfile, ssl_keyfile, "warning"
            )
            settle_heap()
            uvicorn.Server(config).run()
            return
        # Each worker process builds its own app from the same workspace.
        os.environ["CAREPOST_DATA_DIR"] = str(ws.settings.data_dir.resolve())
        config = server_config(
            "carepost.tracking.server:app_from_environment",
            host,
            port,
            ssl_certfile,
            ssl_keyfile,
            "warning",
            workers=workers,
        )
        Multiprocess(config, sockets=[_listening_socket(host, port)]).run()


def _listening_socket(host: str, port: int) -> socket.socket:
    """The socket the worker processes share, made here rather than by uvicorn's
    `Config.bind_socket`: that leaves the protocol number at 0, accepted connections inherit
    it, and asyncio then skips TCP_NODELAY, so every keep-alive response waits ~40 ms for the
    client's delayed ACK (uvicorn issue #3149; measured here: 1,456 responses/s instead of
    tens of thousands)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror or type(exc).__name__}")
    sock.set_inheritable(True)
    return sock
