"""``coinrl backtest BUNDLE`` on a portfolio bundle trained on the three 5-minute coin files: the
data rebuilt from the bundle, the portfolio baselines and the portfolio report page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from coinrl.agents.bundle import save_model
from coinrl.agents.config import TrainConfig
from coinrl.agents.train import train_model
from coinrl.envs.config import PortfolioEnvConfig
from coinrl.experiments.backtest_cmd import run_backtest
from coinrl.experiments.cli import app
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.source import PortfolioDataConfig, load_portfolio_dataset

runner = CliRunner()
pytestmark = pytest.mark.slow  # trains a small portfolio agent (~10 s), CI runs it
ENV = PortfolioEnvConfig(window=6, episode_length_bars=128, initial_cash_quote=1.0)


@pytest.fixture(scope="module")
def portfolio_bundle(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data: dict[str, Any] = {
        "sources": [str(shared_data / f"{s}_BTC-5m.feather") for s in ("ADA", "ETH", "LTC")],
        "features": {"features": [{"kind": "returns", "horizons": [1, 6]}]},
        "split": {"train": 0.7, "validation": 0.15, "test": 0.15},
    }
    train = TrainConfig.model_validate({
        "total_timesteps": 1024, "n_envs": 4, "seed": 0, "progress_bar": False,
        "ppo": {"n_steps": 64, "batch_size": 256, "n_epochs": 1}, "eval_every_steps": 0,
        "checkpoint_every_steps": 0, "early_stopping_patience": None,
    })
    config = {"name": "pf_tiny", "data": data, "env": ENV.model_dump(mode="json"),
              "train": train.model_dump(mode="json"), "tracking": {"mode": "disabled"}}
    prepared = load_portfolio_dataset(PortfolioDataConfig.model_validate(data))
    agent = train_model(prepared, train, ENV, experiment_config=config)
    return save_model(agent, tmp_path_factory.mktemp("pf") / "bundle")


def test_backtest_of_a_portfolio_bundle_writes_the_portfolio_report(portfolio_bundle: Path, tmp_path: Path) -> None:
    folder, res = run_backtest(portfolio_bundle, split="test", out_dir=tmp_path, track=False,
                               cost_overrides=["env.taker_fee_rate=0.002"])
    assert res.meta["symbols"] == ["ADA/BTC", "ETH/BTC", "LTC/BTC"]
    assert res.meta["data_matches_bundle"] is True
    assert res.env_config.taker_fee_rate == 0.002
    assert isinstance(res.env_config, PortfolioEnvConfig)
    assert "out of sample" in res.verdict_lines()[0]
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert 'id="portfolio-weights"' in page
    assert 'class="attribution"' in page
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["meta"]["bundle_id"]
    again, _ = run_backtest(portfolio_bundle, split="test", out_dir=tmp_path, track=False,
                            cost_overrides=["env.taker_fee_rate=0.002"])
    assert again == folder  # the same backtest replaces its own folder
    with pytest.raises(ConfigError, match="--data"):
        run_backtest(portfolio_bundle, data=tmp_path / "x.csv", out_dir=tmp_path, track=False)


def test_a_portfolio_risk_file_trims_every_decision_of_the_bundle_and_is_recorded(
    portfolio_bundle: Path, tmp_path: Path
) -> None:
    risk = tmp_path / "risk.yaml"
    risk.write_text(yaml.safe_dump({
        "max_weight": 0.012, "max_daily_loss_frac": None, "max_drawdown_frac": None,
        "max_orders_per_window": None, "asset_limits": {"ETH/BTC": {"max_weight": 0.005}},
    }))  # the tiny agent asks for weights up to ~0.016
    cli = runner.invoke(app, ["backtest", str(portfolio_bundle), "--risk", str(risk), "--no-track",
                              "--out", str(tmp_path)], terminal_width=240)
    assert cli.exit_code == 0, cli.output
    folder = next(tmp_path.glob("*-backtest-test"))
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["meta"]["risk_config"]["asset_limits"]["ETH/BTC"]["max_weight"] == 0.005
    assert saved["meta"]["risk"]["counts"]["decisions"] == saved["meta"]["n_decisions"]
    _, res = run_backtest(portfolio_bundle, out_dir=tmp_path, track=False, risk_path=risk)
    assert res.risk is not None
    w = res.rollout.target_weights
    assert np.abs(w[:, 1]).max() <= 0.005 + 1e-12  # ETH/BTC's own cap
    assert np.abs(w).max() <= 0.012 + 1e-12
    p = res.risk.proposed_weights
    cap = np.array([0.012, 0.005, 0.012])  # concentration, ETH/BTC's own
    np.testing.assert_array_equal(res.risk.allowed_weights, np.clip(p, -cap, cap))
    assert res.risk.counts()["trimmed"] > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"asset_limits": {"XRP/BTC": {"max_weight": 0.1}}}))
    with pytest.raises(ConfigError, match="XRP/BTC"):
        run_backtest(portfolio_bundle, out_dir=tmp_path, track=False, risk_path=bad)


def test_the_backtest_command_prints_the_portfolio_verdicts(portfolio_bundle: Path, tmp_path: Path) -> None:
    cli = runner.invoke(app, ["backtest", str(portfolio_bundle), "--split", "validation", "--no-track",
                              "--out", str(tmp_path), "--cost-sweep"], terminal_width=240)
    assert cli.exit_code == 0, cli.output
    assert "crp_daily" in cli.output
    assert "cost sweep" in cli.output
    folder = next(tmp_path.glob("*-backtest-validation"))
    rows = json.loads((folder / "metrics.json").read_text())["meta"]["cost_sweep"]["rows"]
    assert [r["multiplier"] for r in rows] == [0.5, 1.0, 2.0, 4.0]
    assert rows[0]["fees_paid_quote"] < rows[-1]["fees_paid_quote"]
    assert "crp_daily" in rows[0]["margin"]
    assert "random_weights" not in rows[0]["margin"]
    assert "Cost sweep" in (folder / "report.html").read_text(encoding="utf-8")
    assert "P(agent better)" in cli.output
    assert "report.html" in cli.output


def test_simulate_portfolio_strategy_takes_a_bundle_path_and_rebuilds_its_data(
    portfolio_bundle: Path, shared_data: Path
) -> None:
    from dataclasses import replace

    from coinrl.agents.bundle import load_model
    from coinrl.agents.portfolio_backtest import simulate_portfolio_strategy
    from coinrl.agents.train_portfolio import portfolio_data_for
    from coinrl.pipeline.errors import DataError

    res = simulate_portfolio_strategy(str(portfolio_bundle), None, split="validation", n_random=3)
    assert res.name == "agent"
    assert res.meta["split"] == "validation"
    agent = load_model(portfolio_bundle)
    prepared = portfolio_data_for(agent)
    same = simulate_portfolio_strategy(agent, prepared, split="validation", n_random=3)
    assert same.equity_quote.tolist() == res.equity_quote.tolist()
    swapped = replace(prepared.test, symbols=("ETH/BTC", "ADA/BTC", "LTC/BTC"))
    with pytest.raises(DataError, match="in that order"):
        simulate_portfolio_strategy(agent, swapped)
    hourly = replace(prepared.test, timeframe="1h")
    with pytest.raises(ConfigError, match="force"):
        simulate_portfolio_strategy(agent, hourly)
    forced = simulate_portfolio_strategy(agent, hourly, force=True, baselines=False)
    assert any("FORCED" in w for w in forced.warnings)


def test_simulate_trading_strategy_on_a_portfolio_agent_is_the_portfolio_backtest(portfolio_bundle: Path) -> None:
    from coinrl.agents.backtest import simulate_trading_strategy
    from coinrl.agents.portfolio_backtest import (
        PortfolioBacktestResult,
        simulate_portfolio_strategy,
    )

    via = simulate_trading_strategy(str(portfolio_bundle), None, split="validation", seed=2)
    direct = simulate_portfolio_strategy(str(portfolio_bundle), None, split="validation", seed=2)
    assert isinstance(via, PortfolioBacktestResult)
    assert via.equity_quote.tolist() == direct.equity_quote.tolist()
    assert json.dumps(via.to_dict()["baselines"]) == json.dumps(direct.to_dict()["baselines"])
    assert via.verdict_lines() == direct.verdict_lines()
