"""Nonces drawn from a per-thread block: every byte handed out once, in any thread or
forked child."""

from __future__ import annotations

import os
import threading

import pytest

from carepost.crypto import nonces


def test_sizes_and_no_repeats_across_many_blocks() -> None:
    drawn = [nonces.random_bytes(12) for _ in range(3 * nonces.BLOCK // 12)]
    assert {len(d) for d in drawn} == {12}
    # 96-bit values: any repeat means a byte range was handed out twice.
    assert len(set(drawn)) == len(drawn)


def test_a_draw_that_does_not_fit_starts_a_new_block() -> None:
    nonces.random_bytes(nonces.BLOCK - 5)  # leaves 5 (or starts a block and leaves 5)
    tail = nonces.random_bytes(9)
    assert len(tail) == 9
    assert nonces._block.at == 9


def test_larger_than_a_block_comes_straight_from_the_kernel() -> None:
    before = nonces._block.at
    big = nonces.random_bytes(nonces.BLOCK + 1)
    assert len(big) == nonces.BLOCK + 1
    assert nonces._block.at == before


def test_threads_draw_from_blocks_of_their_own() -> None:
    results: dict[int, list[bytes]] = {}

    def draw(i: int) -> None:
        results[i] = [nonces.random_bytes(16) for _ in range(500)]

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [n for batch in results.values() for n in batch]
    assert len(set(everything)) == len(everything) == 2000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_next_bytes() -> None:
    nonces.random_bytes(16)  # the parent now holds a block with bytes still to hand out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first draw and leave at once
        try:
            os.write(write, nonces.random_bytes(16))
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    parent = nonces.random_bytes(16)
    assert len(child) == 16
    assert child != parent
