"""Import problems that say where (file, line, column or JSON path) and what, never the
offending value: values are PHI and error text ends up in terminals and logs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImportProblem:
    where: str  # "line 12, column 4 'birth_date'" or "file.json $.entry[3].resource.gender"
    message: str
    resource_type: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "message": self.message, "resource_type": self.resource_type}


class ImportRejected(Exception):
    """Invalid input and no --skip-invalid: nothing was written."""

    def __init__(self, problems: list[ImportProblem]) -> None:
        self.problems = problems
        first = problems[0] if problems else "no problems recorded"
        super().__init__(f"{len(problems)} problem(s); first: {first}")


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
