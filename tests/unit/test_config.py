"""Writing one setting into the workspace settings file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from carepost.config import Settings, load_settings, render_settings_file, set_file_setting


def test_replaces_the_line_init_wrote(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    s.settings_file.write_text(render_settings_file(s))
    set_file_setting(s, "public_url", "https://mail.example.org")
    set_file_setting(s, "public_url", "https://mail2.example.org")
    parsed = tomllib.loads(s.settings_file.read_text())["carepost"]
    assert parsed["public_url"] == "https://mail2.example.org"
    assert load_settings(tmp_path).public_url == "https://mail2.example.org"


def test_adds_a_missing_line_and_refuses_bad_input(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    set_file_setting(s, "capture_port", "2626")
    assert tomllib.loads(s.settings_file.read_text())["carepost"]["capture_port"] == "2626"
    with pytest.raises(ValueError, match="cannot write"):
        set_file_setting(s, "not_a_setting", "x")
    with pytest.raises(ValueError, match="cannot write"):
        set_file_setting(s, "public_url", 'x"\nkey_file = "/tmp/evil')
