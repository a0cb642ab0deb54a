"""The README's portfolio recipe runs as written (from the repository root, where
``../shared/data`` holds the three 5-minute feather files)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
HEADING = "### Portfolios: one account, several coins"


def recipe() -> str:
    """The first ```python block under the portfolio heading."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", text[text.index(HEADING):], re.DOTALL)
    assert block is not None, "no python block under the portfolio heading"
    return block.group(1)


def test_the_readme_has_the_portfolio_recipe() -> None:
    code = recipe()
    assert "PortfolioEnv(" in code
    assert "PortfolioSB3VecEnv(" in code


@pytest.mark.slow
@pytest.mark.timeout(1800)  # many commands in a row; each has its own limit
def test_the_readme_portfolio_recipe_runs_as_written(tmp_path: Path) -> None:
    if not (ROOT.parent / "shared" / "data" / "ETH_BTC-5m.feather").is_file():
        pytest.skip("the shared feather files are not next to the repository")
    script = tmp_path / "portfolio_recipe.py"
    script.write_text(recipe(), encoding="utf-8")
    res = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True,
                         timeout=900, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "('ADA/BTC', 'ETH/BTC', 'LTC/BTC')" in res.stdout
