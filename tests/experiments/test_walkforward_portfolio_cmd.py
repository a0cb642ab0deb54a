"""coinrl walkforward on a portfolio config: retrain per fold and seed, write the results folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coinrl.experiments.cli import app
from coinrl.pipeline.errors import ConfigError

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "experiments" / "configs" / "ppo_portfolio.yaml"
TINY = ["train.total_timesteps=512", "train.n_envs=4", "train.ppo.n_steps=64", "train.ppo.batch_size=128",
        "train.ppo.n_epochs=1", "train.eval_every_steps=256", "train.checkpoint_every_steps=0",
        "env.episode_length_bars=128", "tracking.mode=disabled"]


def test_walkforward_command_runs_a_portfolio_config_and_writes_its_summary(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the example config's sources are relative to the repository root
    cli = runner.invoke(app, ["walkforward", str(CONFIG), *TINY, "--folds", "2", "--seeds", "1",
                              "--out", str(tmp_path), "--no-track"], terminal_width=200)
    assert cli.exit_code == 0, cli.output
    folder = tmp_path / "ppo_portfolio-walkforward"
    assert f"report: {folder / 'report.html'}" in cli.output
    assert "2 folds x 1 seeds" in cli.output
    summary = json.loads((folder / "walkforward.json").read_text())
    assert summary["kind"] == "portfolio"
    assert summary["n_folds"] == 2
    assert len(summary["runs"]) == 2
    assert summary["config"]["train"]["total_timesteps"] == 512
    assert summary["meta"]["embargo_bars"] == 24  # the config's, larger than the window
    assert summary["meta"]["symbols"] == ["ADA/BTC", "ETH/BTC", "LTC/BTC"]
    assert summary["meta"]["folds"] == 2  # its identity, checked before the folder is replaced
    folds = summary["meta"]["fold_spans"]
    assert folds[0]["test_end_ts_ms"] < folds[1]["test_start_ts_ms"]
    # agent vs the portfolio baselines on the same test rows: 1/N rebalanced, cash, equal-weight hold
    assert {"agent", "cash", "crp_daily", "equal_weight_hold"} <= set(summary["summary"])
    assert summary["summary"]["cash"]["total_return"]["mean"] == 0.0
    for name in summary["beats"]:
        assert f"the agent beat {name} in" in cli.output
    page = (folder / "report.html").read_text()
    assert "crp_daily" in page
    assert "portfolio walk-forward" in page
    # coinrl report redraws the portfolio page from the folder's files alone
    (folder / "report.html").unlink()
    shown = runner.invoke(app, ["report", str(folder)])
    assert shown.exit_code == 0, shown.output
    assert (folder / "report.html").read_text() == page
    # another walk-forward into the same folder is refused before training
    from coinrl.experiments.backtest_cmd import run_walkforward

    with pytest.raises(ConfigError, match="already holds another walk-forward"):
        run_walkforward(CONFIG, folds=2, seeds=2, overrides=TINY, out_dir=tmp_path, track=False)
