"""The README's Python example runs as written."""

from __future__ import annotations

import doctest
import re
import subprocess
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs_as_written():
    code = "\n".join(re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S))
    test = doctest.DocTestParser().get_doctest(code, {}, "README", str(README), 0)
    assert test.examples
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    failures = []
    runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)


def test_setup_on_a_set_up_checkout_is_quiet():
    """The README's commands start with scripts/setup.sh: on a checkout set up from the same lock and
    pyproject.toml it only checks that normconf imports, and says nothing."""
    done = subprocess.run(
        [str(README.parent / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stdout + done.stderr
