"""Settings from CAREPOST_* environment variables and the workspace's settings file.

Secure values are the defaults. Anything that weakens them exists only for local
development and carries DEV_INSECURE in its name.
"""

from __future__ import annotations

import os
import tomllib
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from carepost.tracking.classifier import (
    DEFAULT_APPLE_NETWORKS,
    DEFAULT_GOOGLE_PROXY_NETWORKS,
    DEFAULT_SCANNER_NETWORKS,
)

SETTINGS_FILE_NAME = "carepost.toml"
DEFAULT_DATA_DIR = "carepost-data"


class DirectDomainLimits(BaseModel):
    max_connections: int = Field(default=5, ge=1, le=100)
    per_minute: float = Field(default=120.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAREPOST_", extra="ignore")

    data_dir: Path = Field(default=Path(DEFAULT_DATA_DIR))
    # Empty means the SQLite database inside data_dir.
    database_url: str = ""
    # Empty means keys.json inside data_dir.
    key_file: str = ""
    # Who the command line acts as in the audit log; empty means cli:<os user>.
    actor: str = ""
    # Contacts per database round trip during imports.
    import_batch_size: int = Field(default=2000, ge=1, le=100_000)
    # Base of the public links carepost puts in mail (unsubscribe, preferences), e.g.
    # https://mail.example.org. Must be https unless dev_insecure is set.
    public_url: str = ""
    # Local development only: allows a plain-http public_url. Never in production.
    dev_insecure: bool = False
    # How workers hand mail over: "capture" (the built-in local SMTP server, the embedded
    # default), "smtp" (a relay: STARTTLS or implicit TLS, always verified), "direct" (to
    # each recipient domain's own MX hosts, see the direct_* settings) or "null".
    transport: Literal["capture", "smtp", "direct", "null"] = "capture"
    capture_port: int = Field(default=2525, ge=1, le=65535)
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_tls: Literal["starttls", "implicit"] = "starttls"
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    # A CA bundle for a private relay; empty means the system's trust store.
    smtp_ca_file: str = ""
    smtp_timeout: float = Field(default=30.0, gt=0)
    smtp_pool_size: int = Field(default=8, ge=1, le=256)
    smtp_messages_per_connection: int = Field(default=100, ge=1)
    # Each body written with the next message's commands (RFC 2920); off for a relay that
    # announces PIPELINING but drops what follows a body's final dot.
    smtp_pipeline_messages: bool = True
    # Direct delivery (transport "direct"). EHLO name: this server's public host name,
    # which receivers check against its reverse DNS; empty means the host name.
    direct_ehlo_name: str = ""
    direct_timeout: float = Field(default=60.0, gt=0)
    direct_mx_cache_seconds: float = Field(default=300.0, ge=0)
    # Per recipient domain, per worker process: connections at once and messages a
    # minute. `direct_domain_limits` adds to or replaces the built-in ones for the large
    # receivers (delivery.throttle.KNOWN_DOMAINS), e.g. {"gmail.com": {"max_connections":
    # 10, "per_minute": 600}}.
    direct_max_connections: int = Field(default=5, ge=1, le=100)
    direct_per_minute: float = Field(default=120.0, gt=0)
    direct_domain_limits: dict[str, DirectDomainLimits] = Field(default_factory=dict)
    # Warm-up of a new sending IP: daily caps from the start date (UTC days), then none.
    # No start date: the IP is established and has no cap.
    direct_warmup_start: date | None = None
    direct_warmup_schedule: list[int] = Field(
        default_factory=lambda: [50, 100, 500, 1000, 5000, 10_000, 20_000, 50_000, 100_000]
    )
    # Operator TLS policy per recipient domain: "required" makes even messages of
    # PHI-free classes need verified TLS there. Nothing can loosen a message's policy.
    direct_tls_overrides: dict[str, Literal["required"]] = Field(default_factory=dict)
    worker_batch_size: int = Field(default=200, ge=1, le=10_000)
    worker_concurrency: int = Field(default=16, ge=1, le=1024)
    # Minutes a worker holds claimed messages before another may take them back.
    worker_lease_minutes: float = Field(default=5.0, gt=0)
    # Inbound bounces and complaints (`carepost bounce listen`, and beside `serve`).
    bounce_host: str = "127.0.0.1"
    bounce_port: int = Field(default=2526, ge=1, le=65535)
    # Comma-separated domains the listener accepts mail for; empty means the domains of
    # the sender profiles' return paths.
    bounce_domains: str = ""
    # STARTTLS certificate and key; empty means the workspace CA's loopback certificate.
    bounce_tls_cert_file: str = ""
    bounce_tls_key_file: str = ""
    bounce_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Delivered messages a campaign (or a domain in 24 h) needs before its complaint
    # rate can raise an alert (bounces/rates.py says why 1,000).
    bounce_complaint_min_delivered: int = Field(default=1000, ge=1)
    # Local development and tests only: a JSON file of static DNS answers that replaces
    # real DNS for `doctor dns` (see delivery/static_dns.py). Never in production.
    dev_insecure_static_dns: str = ""
    # Message classes declared PHI-free (comma separated, e.g. "marketing"): only their
    # messages, from templates without PHI fields, may travel with opportunistic TLS.
    # Empty, the default: every message requires verified TLS (delivery.route).
    phi_free_classes: str = ""
    # Tracking endpoints (/t/o/ and /t/c/ under `carepost serve`, or alone with
    # `carepost tracking serve`). What the classifier knows of networks: comma-separated
    # CIDR blocks (checked when the server starts). Replace the defaults with the ranges
    # Apple, Google and your mail security vendors publish now.
    tracking_apple_networks: str = ",".join(DEFAULT_APPLE_NETWORKS)
    tracking_google_proxy_networks: str = ",".join(DEFAULT_GOOGLE_PROXY_NETWORKS)
    tracking_scanner_networks: str = ",".join(DEFAULT_SCANNER_NETWORKS)
    # Group commit: a batch of events is written once it holds this many, or once its
    # first event has waited this many milliseconds, whichever comes first. A request is
    # answered only after its batch committed.
    tracking_batch_size: int = Field(default=500, ge=1, le=10_000)
    tracking_batch_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    # Benchmarks only: also serve /t/bare/<anything>, the pixel with no token check and no
    # write, to compare the full endpoint with on the same server. Off in production.
    tracking_benchmark_bare_route: bool = False
    # Staff sessions (staff/sessions.py): signed out after this long without a request,
    # and after this long whatever happens (HIPAA automatic logoff, 164.312(a)(2)(iii)).
    staff_session_idle_minutes: float = Field(default=15.0, gt=0, le=24 * 60)
    staff_session_absolute_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # Break-glass grants (staff/breakglass.py): their length, and the most one may ask for.
    staff_break_glass_minutes: int = Field(default=60, ge=1, le=24 * 60)
    # REST API (api/): idempotency keys are kept this long (Stripe: at least 24 h); an
    # in-flight key older than the lease is taken to be a crashed request's and reused.
    api_idempotency_hours: float = Field(default=24.0, ge=24, le=24 * 90)
    api_idempotency_lease_seconds: float = Field(default=60.0, gt=0, le=3600)
    # Token bucket per API key (or per user for sessions): refill rate and burst size.
    # Counted in each server process alone (api/ratelimit.py).
    api_rate_per_minute: float = Field(default=600.0, gt=0)
    api_rate_burst: int = Field(default=100, ge=1)
    # Journey webhook steps (journeys/webhook.py): the HMAC key their requests are signed
    # with (never logged; without one a webhook step fails and takes on_failure), and an
    # escape hatch: comma-separated CIDR blocks a webhook may reach although they are
    # loopback, private, link-local or otherwise not public. Empty in production.
    journey_webhook_secret: SecretStr = SecretStr("")
    journey_webhook_allow_networks: str = ""

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'carepost.db').resolve()}"

    @property
    def resolved_key_file(self) -> Path:
        return Path(self.key_file) if self.key_file else self.data_dir / "keys.json"

    @property
    def settings_file(self) -> Path:
        return self.data_dir / SETTINGS_FILE_NAME


def load_settings(data_dir: Path | None = None) -> Settings:
    """Environment wins over the settings file; an explicit data_dir wins over both."""
    env_dir = os.environ.get("CAREPOST_DATA_DIR")
    base = data_dir or (Path(env_dir) if env_dir else Path(DEFAULT_DATA_DIR))
    file_values: dict[str, Any] = {}
    settings_path = base / SETTINGS_FILE_NAME
    if settings_path.is_file():
        with settings_path.open("rb") as fh:
            file_values = tomllib.load(fh).get("carepost", {})
    init: dict[str, Any] = {k: v for k, v in file_values.items() if _env_name(k) not in os.environ}
    init["data_dir"] = base
    return Settings(**init)


def _env_name(field: str) -> str:
    return f"CAREPOST_{field.upper()}"


def render_settings_file(settings: Settings) -> str:
    lines = [
        "# carepost workspace settings. CAREPOST_* environment variables override these.",
        "[carepost]",
        f'database_url = "{settings.database_url}"  # empty: SQLite in this folder',
        f'key_file = "{settings.key_file}"  # empty: keys.json in this folder',
        f"import_batch_size = {settings.import_batch_size}",
        "# Public https base of `carepost serve`, used in unsubscribe links:",
        f'public_url = "{settings.public_url}"',
        "",
    ]
    return "\n".join(lines)


def set_file_setting(settings: Settings, key: str, value: str) -> None:
    """Write `key = "value"` into the workspace's settings file, replacing the line that
    sets it (the file `init` writes names every setting) or adding one."""
    if key not in Settings.model_fields or any(c in value for c in '"\\\n'):
        raise ValueError(f"cannot write setting {key!r}")
    path = settings.settings_file
    lines = path.read_text().splitlines() if path.exists() else ["[carepost]"]
    line = f'{key} = "{value}"'
    for i, existing in enumerate(lines):
        if existing.split("=", 1)[0].strip() == key:
            lines[i] = line
            break
    else:
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
