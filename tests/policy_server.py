"""A real HTTPS server on loopback that serves MTA-STS policy files, for the fetcher,
the policy cache and `doctor dns`. Certificates come from a trustme CA; what each host
name gets (status, media type, body, delay) is set per test, and requests are counted.
Registered for every test by `pytest_plugins` in tests/conftest.py."""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/plain"
    send_length: bool = True
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class PolicyServer:
    def __init__(self, cert: trustme.LeafCert) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host = (self.headers.get("Host") or "").split(":")[0].lower()
                server.hits[host] += 1
                route = server.routes.get(host) if self.path == "/.well-known/mta-sts.txt" else None
                if route is None:
                    route = Route(b"not found", status=404)
                if route.delay:
                    time.sleep(route.delay)
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                if route.send_length:
                    self.send_header("Content-Length", str(len(route.body)))
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                # The client may give up mid-body (size cap, timeout): expected.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    self.wfile.write(route.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(ctx)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, domain: str, route: Route) -> None:
        self.routes[f"mta-sts.{domain}"] = route

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def policy(mode: str = "enforce", mx: str = "mx1.example.test", max_age: int = 86400) -> bytes:
    return f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: {max_age}\r\n".encode()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def policy_server(ca: trustme.CA) -> Iterator[PolicyServer]:
    """Certificate for mta-sts.<d> for the test domains d = example.test, a.test ... e.test."""
    names = ["mta-sts.example.test"] + [f"mta-sts.{c}.test" for c in "abcde"]
    server = PolicyServer(ca.issue_cert(*names))
    yield server
    server.close()


@pytest.fixture(scope="module")
def wrong_name_server(ca: trustme.CA) -> Iterator[PolicyServer]:
    """Trusted CA, but the certificate names another host."""
    server = PolicyServer(ca.issue_cert("www.elsewhere.test"))
    yield server
    server.close()
