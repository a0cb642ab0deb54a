"""The test lanes: CI runs everything (``pytest -q``); the README's fast local lane
(``-m "not slow"``) selects a real subset; every test runs under a timeout.

The README's pytest commands are not run here (a test running the suite would run itself);
they are collected (``--collect-only``), which proves the marker expression parses and selects
a real subset, without running a test.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_pytest_commands() -> list[list[str]]:
    """The ``python -m pytest`` commands of the README's bash blocks, as argument lists after
    ``pytest``."""
    out: list[list[str]] = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if len(words) >= 3 and words[1:3] == ["-m", "pytest"]:
                    out.append(words[3:])
    return out


def test_the_readme_shows_the_ci_lane_and_the_fast_lane() -> None:
    cmds = readme_pytest_commands()
    assert ["-q"] in cmds  # everything, as CI runs it
    assert ["-q", "-m", "not slow"] in cmds  # the fast local lane


def test_every_test_has_a_generous_timeout() -> None:
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]
    options = ini["ini_options"]
    assert float(options["timeout"]) >= 900  # CI's slowest tests on 2 cores still pass
    assert any(m.startswith("slow:") for m in options["markers"])
    assert "--strict-markers" in options["addopts"]  # a misspelt @pytest.mark.slwo fails


@pytest.mark.slow
def test_the_fast_lane_collects_a_strict_subset_of_the_suite() -> None:
    fast = ["-q", "-m", "not slow"]
    res = subprocess.run(
        [sys.executable, "-m", "pytest", *fast, "--collect-only", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    m = re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", res.stdout)
    assert m is not None, res.stdout[-2000:]
    selected, total, deselected = (int(g) for g in m.groups())
    assert 0 < selected < total
    assert selected + deselected == total
