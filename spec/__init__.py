"""The spec's clauses, read from its Markdown pages.

Each clause is a level-3 heading `### <ID> · <title>`; its text runs to the next heading. Tests,
adapters and reports refer to clauses by ID, and look them up here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PAGES_DIR = Path(__file__).resolve().parent
CLAUSE_HEADING = re.compile(r"^### (?P<id>[A-Z]+\.[PCSNDEL]\d+) · (?P<title>.+)$")
# kinds: Parameters, Constraints, Semantics, Numerics, Divergences, Examples, conformance Levels
CLAUSE_ID = re.compile(r"^[A-Z]+\.[PCSNDEL]\d+$")


@dataclass(frozen=True)
class Clause:
    id: str
    title: str
    page: str
    text: str

    @property
    def kind(self) -> str:
        """P, C, S, N, D, E or L."""
        return self.id.split(".")[1][0]


@lru_cache(maxsize=1)
def clauses() -> dict[str, Clause]:
    """Every clause of every page, by ID. Duplicate IDs are an error in the spec itself."""
    found: dict[str, Clause] = {}
    for page in sorted(PAGES_DIR.glob("*.md")):
        current, title, body = None, None, []
        for line in page.read_text(encoding="utf-8").splitlines() + ["## end"]:
            heading = CLAUSE_HEADING.match(line)
            if heading or line.startswith("#"):
                if current is not None:
                    if current in found:
                        raise ValueError(
                            f"clause {current} is defined twice ({found[current].page}, {page.name})"
                        )
                    found[current] = Clause(current, title, page.name, "\n".join(body).strip())
                current, title, body = (heading["id"], heading["title"], []) if heading else (None, None, [])
            elif current is not None:
                body.append(line)
    return found


def clause(clause_id: str) -> Clause:
    try:
        return clauses()[clause_id]
    except KeyError:
        raise KeyError(f"no clause {clause_id!r} in the spec") from None
