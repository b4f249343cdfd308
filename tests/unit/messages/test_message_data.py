"""The pure half of one-off message data: what may be given, and the sealing's binding."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carepost.crypto.envelope import DecryptionError
from carepost.messages.data import (
    DataRejected,
    check_data,
    declared_keys,
    open_data,
    seal_data,
)

SECRET = "glucose-7734-marker"


def test_declared_keys_are_the_data_fields_without_prefix() -> None:
    assert declared_keys(["first_name", "data_test", "attr_x", "data_ref"]) == ("test", "ref")


def test_exact_keys_pass_and_come_back_sorted() -> None:
    assert check_data(("b", "a"), {"a": 1, "b": None}) == {"a": 1, "b": None}


def test_every_problem_is_named_by_key_never_by_value() -> None:
    with pytest.raises(DataRejected) as info:
        check_data(
            ("test", "ref", "when"),
            {"test": SECRET, "diagnosis": SECRET, "ref": {"nested": SECRET}},
        )
    problems = info.value.problems
    assert [key for key, _ in problems] == ["diagnosis", "ref", "when"]
    assert "not declared" in problems[0][1]
    assert "string, number" in problems[1][1]
    assert "missing" in problems[2][1]
    assert SECRET not in str(info.value)


def test_over_long_value_refused() -> None:
    with pytest.raises(DataRejected, match=r"data\.note: longer than"):
        check_data(("note",), {"note": "x" * 5000})


def test_sealed_data_opens_only_for_its_row() -> None:
    cipher = AESGCM(os.urandom(32))
    blob = seal_data(cipher, "a" * 32, 1, {"test": SECRET})
    assert SECRET.encode() not in blob
    assert open_data(cipher, "a" * 32, 1, blob) == {"test": SECRET}
    with pytest.raises(DecryptionError):
        open_data(cipher, "b" * 32, 1, blob)
