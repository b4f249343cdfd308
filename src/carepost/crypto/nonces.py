"""Random bytes for nonces and ids, drawn from the operating system a block at a time.

`os.urandom` lets go of the GIL for its system call. In a delivery worker the signing
threads then take the GIL, and the composing thread waits for it back: 187 µs a call
beside a busy Python thread against 0.6 µs alone (docs/benchmarks.md). A campaign message
draws two nonces on the composing thread (its unsubscribe token and its archive seal),
so each thread here keeps a block of the kernel's random bytes and hands them out in
order, each byte once: the wait comes once a block instead of twice a message.

Only values that are public once used come from here: a GCM nonce travels beside its
ciphertext, an id is shown wherever the row is. Keys and secrets (data keys, session
tokens, API keys) take `os.urandom` or `secrets` directly, so that bytes waiting in this
process's memory never decide a secret.
"""

from __future__ import annotations

import os
import threading

BLOCK = 4096


class _Block(threading.local):
    data = b""
    at = 0


_block = _Block()


def random_bytes(n: int) -> bytes:
    """`n` bytes from the kernel's CSPRNG that no other caller in any process gets."""
    block = _block
    start = block.at
    end = start + n
    if end > len(block.data):
        if n > BLOCK:
            return os.urandom(n)
        block.data = os.urandom(BLOCK)
        start, end = 0, n
    block.at = end
    return block.data[start:end]


def _forget() -> None:
    # A forked child holds a copy of the forking thread's block: it must not hand out
    # the bytes its parent will.
    _block.data = b""
    _block.at = 0


os.register_at_fork(after_in_child=_forget)
