"""Shared bits for the benchmark scripts: machine facts, a fresh workspace, medians."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from carepost.config import Settings
from carepost.workspace import Workspace, init_workspace


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} vCPU ({cpu}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def fresh_workspace(database_url: str = "") -> tuple[Workspace, Path]:
    folder = Path(tempfile.mkdtemp(prefix="carepost-bench-"))
    ws = init_workspace(settings=Settings(data_dir=folder / "ws", database_url=database_url))
    return ws, folder


def drop(ws: Workspace, folder: Path) -> None:
    if ws.engine.dialect.name == "postgresql":
        from carepost.models import metadata

        metadata.drop_all(ws.engine)
        with ws.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    ws.close()
    shutil.rmtree(folder, ignore_errors=True)


def median_of(runs: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    times = [fn() for _ in range(runs)]
    return statistics.median(times), times
