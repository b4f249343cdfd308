"""schemathesis against the live REST API: the whole web app served by uvicorn over HTTPS
on loopback, an owner's API key, every check (`--checks all`) and every phase (examples,
coverage, fuzzing, and stateful sequences that follow the document's links).

CI runs it at a bounded example count (tests/integration/test_api_schemathesis.py). The
full run, by hand, from the project root (results in docs/benchmarks.md):

    .venv/bin/python tests/fault/schemathesis_full.py --max-examples 100
    .venv/bin/python tests/fault/schemathesis_full.py --max-examples 100 \\
        --database-url postgresql://postgres@127.0.0.1:5432/carepost_test
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for folder in (TESTS, TESTS / "fault"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from crash_worker import drop_schema, pg_schema_url  # noqa: E402

from api_support import API, serve  # noqa: E402
from carepost.config import Settings  # noqa: E402
from carepost.workspace import init_workspace  # noqa: E402
from delivery_support import add_contacts  # noqa: E402

CONFIG = Path(__file__).with_name("schemathesis.toml")


@dataclass
class Result:
    exit_code: int
    seconds: float
    output: str


def run(
    work: Path,
    *,
    max_examples: int,
    database_url: str = "",
    seed: int | None = None,
    workers: int = 1,
    phases: str = "examples,coverage,fuzzing,stateful",
) -> Result:
    url, schema = pg_schema_url(database_url) if database_url else ("", "")
    # A generous rate limit: the run measures conformance, not the limiter (which its
    # own test covers); 429 is in the document either way.
    settings = Settings(
        data_dir=work / "ws",
        database_url=url,
        api_rate_per_minute=1_000_000.0,
        api_rate_burst=100_000,
    )
    ws = init_workspace(settings=settings)
    try:
        add_contacts(ws, ["seed@patients.example"])
        with serve(ws, work) as site:
            token = site.key("owner")
            command = [
                str(Path(sys.executable).with_name("schemathesis")),
                "--config-file",
                str(CONFIG),
                "run",
                f"{site.base}{API}/openapi.json",
                "--checks",
                "all",
                "--phases",
                phases,
                "--max-examples",
                str(max_examples),
                "--workers",
                str(workers),
                "--tls-verify",
                str(site.cert),
                "--header",
                f"Authorization: Bearer {token}",
                "--suppress-health-check",
                "too_slow,filter_too_much",
                "--no-color",
            ]
            if seed is not None:
                command += ["--seed", str(seed)]
            started = time.monotonic()
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                cwd=work,
                env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
                check=False,
            )
            seconds = time.monotonic() - started
    finally:
        ws.close()
        if schema:
            drop_schema(database_url, schema)
    return Result(done.returncode, seconds, done.stdout + done.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(
            Path(tmp),
            max_examples=args.max_examples,
            database_url=args.database_url,
            seed=args.seed,
            workers=args.workers,
        )
    print(result.output)
    print(f"exit {result.exit_code} in {result.seconds:.1f} s")
    sys.exit(result.exit_code)


if __name__ == "__main__":
    main()
