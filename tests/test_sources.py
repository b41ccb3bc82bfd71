"""Every source a convention or divergence cites is pinned: a GitHub link names a tag or a commit, never
a branch that moves (main, master), so the line it points at is the line that was read."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+/(?:blob|tree)/([^/\s)\"'`]+)/")
MOVING = {"main", "master", "HEAD", "develop", "trunk"}


def test_every_github_source_is_pinned_to_a_tag_or_commit():
    files = [
        *ROOT.glob("spec/*.md"),
        *ROOT.glob("adapters/**/*.py"),
        *ROOT.glob("conformance/**/*.py"),
        *ROOT.glob("reference/*.py"),
        ROOT / "README.md",
    ]
    moving = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in files
        for match in LINK.finditer(path.read_text(encoding="utf-8"))
        if match.group(1) in MOVING
    ]
    assert not moving, "\n".join(moving)
