"""Signed checkpoints (size, head hash, time), written outside the database so that a
truncated or rewritten chain is caught even by someone who can rewrite the table."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_CONTEXT = b"carepost audit checkpoint v1\n"


class CheckpointError(Exception):
    pass


@dataclass(frozen=True)
class Checkpoint:
    size: int
    head_hash: bytes
    at: str
    key_id: str
    signature: bytes

    def message(self) -> bytes:
        return _message(self.size, self.head_hash, self.at, self.key_id)

    def verify(self, key: Ed25519PublicKey) -> bool:
        try:
            key.verify(self.signature, self.message())
        except InvalidSignature:
            return False
        return True

    def to_json(self) -> bytes:
        return (
            orjson.dumps(
                {
                    "format": 1,
                    "size": self.size,
                    "head_hash": self.head_hash.hex(),
                    "at": self.at,
                    "key_id": self.key_id,
                    "signature": base64.b64encode(self.signature).decode(),
                },
                option=orjson.OPT_INDENT_2,
            )
            + b"\n"
        )


def _message(size: int, head_hash: bytes, at: str, key_id: str) -> bytes:
    body = {"size": size, "head_hash": head_hash.hex(), "at": at, "key_id": key_id}
    return _CONTEXT + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def sign(key: Ed25519PrivateKey, key_id: str, size: int, head_hash: bytes, at: str) -> Checkpoint:
    sig = key.sign(_message(size, head_hash, at, key_id))
    return Checkpoint(size, head_hash, at, key_id, sig)


def load(path: Path) -> Checkpoint:
    try:
        doc = orjson.loads(path.read_bytes())
        if doc.get("format") != 1:
            raise CheckpointError(f"{path}: unsupported checkpoint format")
        return Checkpoint(
            size=int(doc["size"]),
            head_hash=bytes.fromhex(doc["head_hash"]),
            at=str(doc["at"]),
            key_id=str(doc["key_id"]),
            signature=base64.b64decode(doc["signature"], validate=True),
        )
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint ({type(exc).__name__})") from None


def write(path: Path, checkpoint: Checkpoint) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(checkpoint.to_json())
    tmp.replace(path)
