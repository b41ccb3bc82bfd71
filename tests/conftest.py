"""The project's tests, as the README's test command runs them (`pytest -n auto`, pytest-xdist)."""

from __future__ import annotations

# The whole-matrix runs, longest first: with the tests spread over the cores they start at once and the
# others fill the remaining cores around them, so the run ends near its longest test, not after it.
LONGEST_FIRST = ("test_quick_profile.py", "test_mutants.py", "test_releases.py", "test_reliability.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
