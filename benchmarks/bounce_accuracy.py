"""Bounce classifier accuracy over a labelled folder (issue 6): the figure and every miss.

Scored files are those labelled hard, soft, mixed or complaint; a file counts as right when
its category matches and, where the labels give per-recipient hard flags, those match too.
Also printed: the same files judged on the action taken (suppress / suppress and opt out /
keep), and the whole folder including auto-replies, delay and delivery notices, non-bounces.

    python benchmarks/bounce_accuracy.py [FOLDER]   (default: shared/data/bounce-emails)
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import machine

from carepost.bounces.corpus import score_folder


def default_folder() -> Path:
    shared = os.environ.get("CAREPOST_SHARED_DATA")
    root = Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared" / "data"
    return root / "bounce-emails"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=default_folder())
    args = parser.parse_args()
    started = time.perf_counter()
    score = score_folder(args.folder)
    elapsed = time.perf_counter() - started
    scored = score.scored
    right = sum(o.ok for o in scored)
    overall = sum(o.ok for o in score.outcomes)
    print(f"machine: {machine()}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d}  folder: {args.folder}")
    print(
        f"hard/soft/complaint (a delay notice counts as soft): {score.scored_severity_accuracy:.2%}"
    )
    print(
        f"exact category: {right}/{len(scored)} = {score.scored_accuracy:.2%} "
        f"(action taken: {score.scored_action_accuracy:.2%})"
    )
    print(f"all files: {overall}/{len(score.outcomes)} = {score.overall_accuracy:.2%}")
    print(f"time: {elapsed * 1000:.0f} ms for {len(score.outcomes)} files")
    print(f"misses ({len(score.misses)}):")
    for o in score.misses:
        detail = f"  [{o.detail}]" if o.detail else ""
        print(f"  {o.file}: expected {o.expected} (label {o.label}), got {o.got}{detail}")


if __name__ == "__main__":
    main()
