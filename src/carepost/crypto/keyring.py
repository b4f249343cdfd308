"""The workspace key file: versioned key-encryption keys, the blind-index key and the
audit signing key. The file is created owner-read-only and never overwritten in place.

Why a file and not the database: a database dump must be useless without it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_FILE_FORMAT = 1


class KeyFileError(Exception):
    """The key file is missing, unreadable, too widely readable or malformed."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _derive(master: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
        master
    )


@dataclass
class KeyRing:
    # Key material never appears in a repr: reprs end up in tracebacks and test reports.
    keks: dict[int, bytes] = field(repr=False)
    primary_version: int
    blind_index_master: bytes = field(repr=False)
    signing_seed: bytes = field(repr=False)
    _aead: dict[int, AESGCM] = field(default_factory=dict, repr=False)
    _subkeys: dict[str, bytes] = field(default_factory=dict, repr=False)
    _pads: dict[str, tuple[Any, Any]] = field(default_factory=dict, repr=False)
    _subkey_aead: dict[str, AESGCM] = field(default_factory=dict, repr=False)

    @classmethod
    def generate(cls) -> KeyRing:
        return cls(
            keks={1: AESGCM.generate_key(bit_length=256)},
            primary_version=1,
            blind_index_master=os.urandom(32),
            signing_seed=os.urandom(32),
        )

    # --- key-encryption keys -------------------------------------------------------------
    def kek(self, version: int) -> AESGCM:
        cipher = self._aead.get(version)
        if cipher is None:
            raw = self.keks.get(version)
            if raw is None:
                raise KeyFileError(f"key-encryption key version {version} is not in the key file")
            cipher = self._aead[version] = AESGCM(raw)
        return cipher

    def with_new_primary(self) -> KeyRing:
        """A copy whose primary is a fresh KEK version; old versions stay to read old wraps."""
        version = max(self.keks) + 1
        keks = dict(self.keks)
        keks[version] = AESGCM.generate_key(bit_length=256)
        return KeyRing(keks, version, self.blind_index_master, self.signing_seed)

    # --- derived keys ---------------------------------------------------------------------
    def subkey(self, purpose: str) -> bytes:
        key = self._subkeys.get(purpose)
        if key is None:
            key = self._subkeys[purpose] = _derive(self.blind_index_master, purpose)
        return key

    def subkey_aead(self, purpose: str) -> AESGCM:
        """AES-256-GCM under the purpose's derived key, set up once: two unsubscribe tokens
        go into every campaign message."""
        cipher = self._subkey_aead.get(purpose)
        if cipher is None:
            cipher = self._subkey_aead[purpose] = AESGCM(self.subkey(purpose))
        return cipher

    def hmac_hex(self, purpose: str, data: bytes) -> str:
        """HMAC-SHA256 (RFC 2104) under the purpose's derived key, as hex."""
        return self.hmac_digest(purpose, data).hex()

    def hmac_digest(self, purpose: str, data: bytes) -> bytes:
        """HMAC-SHA256 (RFC 2104) under the purpose's derived key.

        The keyed inner and outer SHA-256 states are computed once and copied per call:
        OpenSSL's one-shot HMAC sets the key up every time, which costs four times as much
        as the hashing when a bulk import computes five of these per contact.
        """
        inner_pad, outer_pad = self._hmac_pads(purpose)
        inner = inner_pad.copy()
        inner.update(data)
        outer = outer_pad.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hmac_digests(self, purpose: str, prefix: bytes, suffixes: Iterable[bytes]) -> list[bytes]:
        """`hmac_digest(purpose, prefix + suffix)` for each suffix. The inner state after
        the shared prefix is computed once: a message's twenty-odd tracking tokens differ
        only in their last characters."""
        inner_pad, outer_pad = self._hmac_pads(purpose)
        head = inner_pad.copy()
        head.update(prefix)
        digests = []
        for suffix in suffixes:
            inner = head.copy()
            inner.update(suffix)
            outer = outer_pad.copy()
            outer.update(inner.digest())
            digests.append(outer.digest())
        return digests

    def _hmac_pads(self, purpose: str) -> tuple[hashlib._Hash, hashlib._Hash]:
        pads = self._pads.get(purpose)
        if pads is None:
            key = self.subkey(purpose).ljust(64, b"\0")
            pads = self._pads[purpose] = (
                hashlib.sha256(bytes(b ^ 0x36 for b in key)),
                hashlib.sha256(bytes(b ^ 0x5C for b in key)),
            )
        return pads

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.signing_seed)

    @property
    def verify_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    def verify_key_id(self) -> str:
        raw = self.verify_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return raw.hex()[:16]

    # --- file form ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        doc = {
            "format": KEY_FILE_FORMAT,
            "primary_kek_version": self.primary_version,
            "keks": {str(v): _b64(k) for v, k in sorted(self.keks.items())},
            "blind_index_key": _b64(self.blind_index_master),
            "audit_signing_seed": _b64(self.signing_seed),
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> KeyRing:
        try:
            doc = orjson.loads(data)
            if doc.get("format") != KEY_FILE_FORMAT:
                raise KeyFileError(f"{source}: unsupported key file format {doc.get('format')!r}")
            keks = {int(v): _unb64(k) for v, k in doc["keks"].items()}
            ring = cls(
                keks=keks,
                primary_version=int(doc["primary_kek_version"]),
                blind_index_master=_unb64(doc["blind_index_key"]),
                signing_seed=_unb64(doc["audit_signing_seed"]),
            )
        except KeyFileError:
            raise
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
            # The message names the problem class only: key material must not reach logs.
            raise KeyFileError(f"{source}: malformed key file ({type(exc).__name__})") from None
        if ring.primary_version not in ring.keks:
            raise KeyFileError(f"{source}: primary key version is missing")
        if any(len(k) != 32 for k in ring.keks.values()):
            raise KeyFileError(f"{source}: every key-encryption key must be 256 bits")
        return ring


def create_key_file(path: Path, ring: KeyRing) -> None:
    """Write a new key file, owner-read-only. Refuses to replace an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{path} already exists; carepost never overwrites a key file "
            "(losing it makes every encrypted record unreadable)"
        ) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(ring.to_bytes())
        fh.flush()
        os.fsync(fh.fileno())


def replace_key_file(path: Path, ring: KeyRing) -> None:
    """Atomically replace the key file (rotation). The new file is owner-read-only too."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(ring.to_bytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_key_file(path: Path) -> KeyRing:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path} not found; run `carepost init` first") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            "run `chmod 600` on it"
        )
    return KeyRing.from_bytes(path.read_bytes(), str(path))
