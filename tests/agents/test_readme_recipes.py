"""The README's Python recipes (train on TradingSB3VecEnv, backtest your own SB3 model) run as
written, in order, in a scratch folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
RECIPES = ("### Train on `TradingSB3VecEnv` directly", "### Backtest your own SB3 model")


def recipe(heading: str) -> str:
    """The first ```python block under ``heading`` in the README."""
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    block = re.search(r"```python\n(.*?)```", text[start:], re.DOTALL)
    assert block is not None, f"no python block under {heading!r}"
    return block.group(1)


def test_the_readme_has_both_recipes() -> None:
    train, backtest = (recipe(h) for h in RECIPES)
    assert "TradingSB3VecEnv(" in train
    assert "model.save(" in train
    assert "simulate_trading_strategy(model" in backtest
    assert "save_backtest_results(" in backtest


@pytest.mark.slow
@pytest.mark.timeout(1800)  # many commands in a row; each has its own limit
def test_the_readme_recipes_run_as_written(tmp_path: Path) -> None:
    for i, heading in enumerate(RECIPES):
        script = tmp_path / f"recipe_{i}.py"
        script.write_text(recipe(heading), encoding="utf-8")
        res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=900, check=False)
        assert res.returncode == 0, f"{heading}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    assert (tmp_path / "my_ppo.zip").is_file()
    report = tmp_path / "runs" / "my_ppo-backtest-test"
    assert (report / "report.html").is_file()
    assert (report / "trades.csv").is_file()
    assert "out of sample (held-out test split)" in res.stdout
    assert res.stdout.count("\n") == 4  # one verdict line per baseline
