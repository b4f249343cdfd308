"""Who did something and from where. Every write takes one (`verb_noun(..., *, actor)`)."""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    id: str  # unique and stable: "cli:<os user>", "user:<uuid>", "worker:<name>"
    source_kind: str  # cli | api | worker | system
    source_address: str  # host name or client network; never a patient's data

    @classmethod
    def cli(cls, override: str = "") -> Actor:
        return cls(override or f"cli:{getpass.getuser()}", "cli", socket.gethostname()[:128])
