"""Writing an export: the target is checked before any work, and the file appears whole
or not at all (a temporary file in the same folder, renamed over the target), owner-only
like everything in a workspace."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


class TargetError(ValueError):
    pass


def check_target(path: Path, option: str, suffixes: tuple[str, ...]) -> Path:
    """The path to write, or TargetError naming the option and what is wrong with it."""
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        wanted = " or ".join(suffixes)
        if option == "--chart" and suffix == ".png":
            raise TargetError(
                f"{option}: PNG is not supported; SVG is (give a file name ending in .svg)"
            )
        raise TargetError(f"{option}: the file name must end in {wanted}, not {suffix or '(none)'}")
    parent = path.parent
    if not parent.is_dir():
        raise TargetError(f"{option}: the folder {parent} does not exist")
    if path.is_dir():
        raise TargetError(f"{option}: {path} is a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TargetError(f"{option}: cannot write in the folder {parent}")
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` all at once; on any failure the target is unchanged and no
    temporary file is left behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
