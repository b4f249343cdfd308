"""The capture transport: a built-in SMTP server (aiosmtpd) that keeps what it receives.

It is the embedded default's mail server and the demo's, so a fresh install sends real
SMTP without a relay. It does not relax anything: it speaks STARTTLS with a certificate
from a CA made for this workspace (`capture/tls/`), the worker verifies it like any relay,
and each received message is stored sealed (AES-256-GCM under the key ring's `capture`
subkey, AAD naming the file), since what it catches is PHI.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from carepost.crypto.envelope import open_sealed, seal
from carepost.crypto.keyring import KeyRing
from carepost.delivery.smtp import RelayConfig

PURPOSE = "capture"
HOST = "127.0.0.1"
SERVER_NAME = "localhost"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def ensure_tls(folder: Path) -> TlsFiles:
    """The capture server's CA and certificate, made once (P-256, ten years, loopback)."""
    tls = folder / "tls"
    files = TlsFiles(tls / "ca.pem", tls / "server.pem", tls / "server.key")
    if files.ca.exists() and files.cert.exists() and files.key.exists():
        return files
    tls.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "carepost capture CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        files.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return files


def client_context(files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(files.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def relay_config(folder: Path, port: int, **kw: Any) -> RelayConfig:
    """How a worker reaches this workspace's capture server: STARTTLS, CA verified."""
    return RelayConfig(
        HOST, port, tls="starttls", tls_context=client_context(ensure_tls(folder)), **kw
    )


class _Store:
    def __init__(self, folder: Path, ring: KeyRing) -> None:
        self.folder = folder / "messages"
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.cipher = AESGCM(ring.subkey(PURPOSE))
        self.lock = threading.Lock()
        self.count = 0

    def save(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{digest[:16]}"
        _write_private(self.folder / name, seal(self.cipher, data, f"capture|{name}".encode()))
        with self.lock:
            self.count += 1
        return name


class _Handler:
    def __init__(self, store: _Store) -> None:
        self.store = store

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        name = self.store.save(bytes(data))
        return f"250 2.0.0 Ok: captured as {name}"


class CaptureServer:
    def __init__(self, folder: Path, ring: KeyRing, port: int) -> None:
        files = ensure_tls(folder)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(files.cert), str(files.key))
        self.store = _Store(folder, ring)
        self.port = port
        self.controller = Controller(
            _Handler(self.store),
            hostname=HOST,
            port=port,
            tls_context=ctx,
            require_starttls=True,
            server_hostname=SERVER_NAME,
            ready_timeout=10.0,
        )

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


def captured(folder: Path) -> list[str]:
    messages = folder / "messages"
    return sorted(p.name for p in messages.iterdir()) if messages.is_dir() else []


def read_captured(folder: Path, ring: KeyRing, name: str) -> bytes:
    """A captured message's bytes. It is PHI: the CLI reads it only with a purpose,
    audited, like any other decrypted read."""
    if "/" in name or name.startswith("."):
        raise ValueError("not a captured message name")
    blob = (folder / "messages" / name).read_bytes()
    return open_sealed(AESGCM(ring.subkey(PURPOSE)), blob, f"capture|{name}".encode())
