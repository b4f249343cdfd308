"""numpy against polars on the segment engine's hot operations (1,000,000 contacts,
2,000,000 fact rows, 3,000,000 events; random data): the measurement behind choosing
numpy for `segments/evaluator.py`. polars is not a carepost dependency; install it in a
scratch venv to run this (`pip install polars numpy`).

    python benchmarks/numpy_vs_polars.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

try:
    import polars as pl
except ImportError:  # pragma: no cover
    raise SystemExit("polars is not installed: pip install polars (in a scratch venv)") from None

rng = np.random.default_rng(1)
N, F, E = 1_000_000, 2_000_000, 3_000_000
row = np.sort(rng.integers(0, N, F).astype(np.int32))
code = rng.integers(0, 200, F).astype(np.int32)
t = rng.integers(0, 10**8, F).astype(np.int64)
val = rng.normal(7, 1, F)
ev_row = rng.integers(0, N, E).astype(np.int32)
ev_kind = rng.integers(0, 4, E).astype(np.int8)
ev_t = rng.integers(0, 10**8, E).astype(np.int64)
lut = np.zeros(201, bool)
lut[[3, 17, 42]] = True
df = pl.DataFrame({"row": row, "code": code, "t": t, "val": val})
ev = pl.DataFrame({"row": ev_row, "kind": ev_kind, "t": ev_t})


def med(fn: Callable[[], object], k: int = 9) -> float:
    xs = []
    for _ in range(k):
        s = time.perf_counter()
        fn()
        xs.append((time.perf_counter() - s) * 1000)
    return statistics.median(xs)


def mask(rows: np.ndarray) -> np.ndarray:
    m = np.zeros(N, bool)
    m[rows] = True
    return m


def np_code() -> np.ndarray:
    return mask(row[lut[code] & (t <= 9 * 10**7)])


def pl_code() -> np.ndarray:
    q = df.lazy().filter(pl.col("code").is_in([3, 17, 42]) & (pl.col("t") <= 9 * 10**7))
    return mask(q.select("row").collect()["row"].to_numpy())


def np_latest() -> np.ndarray:
    sel = (code == 5) & (t >= 5 * 10**7)
    r, tt, v = row[sel], t[sel], val[sel]
    o = np.lexsort((v, tt, r))
    r, v = r[o], v[o]
    last = np.ones(len(r), bool)
    last[:-1] = r[1:] != r[:-1]
    return mask(r[last][v[last] > 7])


def pl_latest() -> np.ndarray:
    q = (
        df.lazy()
        .filter((pl.col("code") == 5) & (pl.col("t") >= 5 * 10**7))
        .sort(["row", "t", "val"])
        .group_by("row")
        .agg(pl.col("val").last())
        .filter(pl.col("val") > 7)
    )
    return mask(q.collect()["row"].to_numpy())


def np_events() -> np.ndarray:
    return mask(ev_row[(ev_kind == 0) & (ev_t >= 9 * 10**7)])


def pl_events() -> np.ndarray:
    q = ev.lazy().filter((pl.col("kind") == 0) & (pl.col("t") >= 9 * 10**7))
    return mask(q.select("row").collect()["row"].to_numpy())


def np_count() -> np.ndarray:
    return np.bincount(row[t >= 5 * 10**7], minlength=N) >= 2  # type: ignore[no-any-return]


def pl_count() -> np.ndarray:
    q = df.lazy().filter(pl.col("t") >= 5 * 10**7).group_by("row").len()
    return mask(q.filter(pl.col("len") >= 2).collect()["row"].to_numpy())


def main() -> None:
    total_np = total_pl = 0.0
    for name, a, b in [
        ("coded facts -> contact mask", np_code, pl_code),
        ("latest lab value in a window", np_latest, pl_latest),
        ("events in a window", np_events, pl_events),
        ("count per contact", np_count, pl_count),
    ]:
        assert (a() == b()).all(), name
        x, y = med(a), med(b)
        total_np += x
        total_pl += y
        print(f"{name}: numpy {x:.1f} ms, polars {y:.1f} ms")
    print(f"sum: numpy {total_np:.1f} ms, polars {total_pl:.1f} ms")


if __name__ == "__main__":
    main()
