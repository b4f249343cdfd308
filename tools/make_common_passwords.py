"""Regenerate src/carepost/staff/common_passwords.txt: the 10,000 most common passwords.

Source: the `passwords` frequency list shipped in the zxcvbn package on PyPI (version
4.5.0, MIT licence, zxcvbn-python by Daniel Wolf, a port of Dropbox's zxcvbn). zxcvbn's
authors built that list by counting the passwords of Mark Burnett's public corpus of ten
million username/password pairs (xato.net, 2015) and ranking them from most to least
frequent. Its 30,000 entries are lower case and most common first; the first 10,000 are
taken as they are, in order. See src/carepost/staff/PROVENANCE.md.

    python -m venv /tmp/zx && /tmp/zx/bin/pip install 'zxcvbn==4.5.0'
    /tmp/zx/bin/python tools/make_common_passwords.py

The script refuses any other zxcvbn version, so the file is reproducible byte for byte
(its SHA-256 is printed and recorded in PROVENANCE.md).
"""

from __future__ import annotations

import hashlib
import sys
from importlib.metadata import version
from pathlib import Path

COUNT = 10_000
EXPECTED_VERSION = "4.5.0"
OUT = Path(__file__).resolve().parents[1] / "src" / "carepost" / "staff" / "common_passwords.txt"


def main() -> int:
    found = version("zxcvbn")
    if found != EXPECTED_VERSION:
        print(f"zxcvbn {EXPECTED_VERSION} is needed, found {found}", file=sys.stderr)
        return 1
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    ranked = list(FREQUENCY_LISTS["passwords"])
    top = ranked[:COUNT]
    if len(top) != COUNT or len(set(top)) != COUNT:
        print("the source list is shorter than expected or has duplicates", file=sys.stderr)
        return 1
    data = ("\n".join(top) + "\n").encode("utf-8")
    OUT.write_bytes(data)
    print(f"wrote {OUT} ({COUNT} entries, sha256 {hashlib.sha256(data).hexdigest()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
