"""Settings from CAREPOST_* environment variables and the workspace's settings file.

Secure values are the defaults. Anything that weakens them exists only for local
development and carries DEV_INSECURE in its name.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SETTINGS_FILE_NAME = "carepost.toml"
DEFAULT_DATA_DIR = "carepost-data"


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
    # default), "smtp" (a relay: STARTTLS or implicit TLS, always verified) or "null".
    transport: Literal["capture", "smtp", "null"] = "capture"
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
    worker_batch_size: int = Field(default=200, ge=1, le=10_000)
    worker_concurrency: int = Field(default=16, ge=1, le=1024)
    # Minutes a worker holds claimed messages before another may take them back.
    worker_lease_minutes: float = Field(default=5.0, gt=0)
    # Message classes declared PHI-free (comma separated, e.g. "marketing"): only their
    # messages, from templates without PHI fields, may travel with opportunistic TLS.
    # Empty, the default: every message requires verified TLS (delivery.route).
    phi_free_classes: str = ""

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
