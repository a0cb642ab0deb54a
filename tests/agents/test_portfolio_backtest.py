"""simulate_portfolio_strategy and its report: a weights signal and a policy judged against the
portfolio baselines, the report folder with the stacked-area weights and the attribution table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from portfolio_helpers import random_walk

from coinrl.agents.backtest import simulate_trading_strategy
from coinrl.agents.portfolio_backtest import (
    PORTFOLIO_FILL_COLUMNS,
    PortfolioBacktestResult,
    is_portfolio_strategy,
    simulate_portfolio_strategy,
)
from coinrl.agents.portfolio_baselines import DEFAULT_N_RANDOM, RANDOM_NAME
from coinrl.agents.portfolio_report import ATTRIBUTION_CSV, WEIGHTS_DIV
from coinrl.agents.portfolio_risk_rollout import rollout_portfolio_with_risk
from coinrl.agents.portfolio_rollout import rollout_portfolio
from coinrl.agents.report import load_backtest_results, render_report, save_backtest_results
from coinrl.envs.config import PortfolioEnvConfig
from coinrl.envs.risk_portfolio import PortfolioRiskConfig
from coinrl.pipeline.errors import ConfigError

CFG = PortfolioEnvConfig(window=4, max_leverage=1.0, allow_short=False, rebalance_threshold=0.0)


@pytest.fixture(scope="module")
def signal_result() -> tuple:
    data = random_walk(24 * 10, 3, seed=11, vol=0.01)
    rng = np.random.default_rng(3)
    w = np.repeat(rng.dirichlet(np.ones(3), size=24) * 0.9, 10, axis=0)  # per bar, 24 changes
    res = simulate_portfolio_strategy(w, data, env_config=CFG, split="test", n_random=5)
    return data, w, res


def test_a_weights_signal_is_backtested_beside_every_baseline(signal_result: tuple) -> None:
    data, w, res = signal_result
    same = rollout_portfolio(data, CFG, weights=w)
    np.testing.assert_array_equal(res.equity_quote, same.equity_quote)
    assert res.name == "signal"
    assert res.meta["symbols"] == list(data.symbols)
    assert res.meta["split"] == "test"
    names = {"cash", "equal_weight_hold", "crp_daily", "crp_weekly", RANDOM_NAME,
             *(f"hold_{s}" for s in data.symbols)}
    assert set(res.baselines) == names
    assert {v.baseline for v in res.verdicts} == names
    assert "out of sample" in res.verdict_lines()[0]
    assert res.baseline_metrics()[RANDOM_NAME]["n_draws"] == 5
    assert any("SMALL SAMPLE" in x for x in res.warnings)
    assert res.stats["n_obs"] == len(data) - 4
    total = sum(v["contribution"] for v in res.attribution.values())
    assert total == pytest.approx(res.metrics["total_return"], rel=1e-10)
    fills = res.fills
    assert tuple(fills.columns) == PORTFOLIO_FILL_COLUMNS
    assert set(fills["symbol"]) == set(data.symbols)
    per_asset = fills.groupby("symbol")["fee_quote"].sum()
    for a, sym in enumerate(data.symbols):
        assert per_asset[sym] == pytest.approx(same.fees_quote[a], rel=1e-12)
    flat = res.flat()
    assert f"backtest/asset/{data.symbols[0]}/contribution" in flat
    assert "backtest/margin_vs_crp_daily" in flat


@pytest.mark.slow  # renders the page and the PNG (~5 s)
def test_the_report_shows_stacked_weights_attribution_and_verdicts(signal_result: tuple, tmp_path: Path) -> None:
    data, _, res = signal_result
    folder = save_backtest_results(res, tmp_path / "report")
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert f'id="{WEIGHTS_DIV}"' in page
    assert '"stackgroup":"long"' in page.replace(" ", "")
    assert 'class="attribution"' in page
    for sym in data.symbols:
        assert sym in page
    assert "P(agent better)" in page
    assert "crp_weekly" in page
    for name in ("report.html", "backtest.png", "equity.parquet", "fills.parquet", "metrics.json",
                 "fills.csv", ATTRIBUTION_CSV):
        assert (folder / name).is_file(), name
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["portfolio"]["symbols"] == list(data.symbols)
    eq = pd.read_parquet(folder / "equity.parquet")
    np.testing.assert_allclose(eq[[f"weight_{s}" for s in data.symbols]].to_numpy(), res.rollout.weights)
    attr = pd.read_csv(folder / ATTRIBUTION_CSV)
    assert attr["contribution"].sum() == pytest.approx(res.metrics["total_return"], rel=1e-9)
    (folder / "report.html").unlink()
    render_report(folder)
    assert 'class="attribution"' in (folder / "report.html").read_text(encoding="utf-8")
    assert load_backtest_results(folder).summary["name"] == "signal"


def test_a_hand_built_policy_is_backtested_through_the_env() -> None:
    data = random_walk(200, 2, seed=12)
    cfg = PortfolioEnvConfig(window=6, allow_short=True, max_leverage=2.0)

    def momentum(obs: np.ndarray) -> np.ndarray:
        # the last row's first feature of each asset, as a long/short tilt
        row = obs[:, (6 - 1) * 4 : 6 * 4].reshape(len(obs), 2, 2)[:, :, 0]
        return np.tanh(row).astype(np.float32)

    res = simulate_portfolio_strategy(momentum, data, env_config=cfg, n_random=3)
    assert res.name == "policy"
    direct = rollout_portfolio(data, cfg, policy=momentum)
    np.testing.assert_array_equal(res.equity_quote, direct.equity_quote)
    assert (res.rollout.target_weights < 0).any()
    assert len(res.verdicts) == 7


def test_dispatch_and_refusals() -> None:
    data = random_walk(60, 2)
    assert is_portfolio_strategy(np.zeros((56, 2)), data)
    assert is_portfolio_strategy(None, None, CFG)
    assert not is_portfolio_strategy(np.zeros(56), None, None)
    with pytest.raises(ConfigError, match="env_config"):
        simulate_portfolio_strategy(np.zeros((56, 2)), data)
    with pytest.raises(ConfigError, match="risk"):
        simulate_portfolio_strategy(np.zeros((56, 2)), data, env_config=CFG, risk=object())


def test_an_untradable_stretch_is_never_filled_and_a_one_asset_portfolio_runs() -> None:
    from dataclasses import replace

    data = random_walk(120, 2, seed=13)
    tradable = data.tradable.copy()
    tradable[40:60, 1] = False
    close, open_ = data.close.copy(), data.open.copy()
    close[40:60, 1] = close[39, 1]  # the data's policy: flat at the last tradable close
    open_[40:60, 1] = close[39, 1]
    masked = replace(data, tradable=tradable, close=close, open=open_,
                     high=np.maximum(open_, close), low=np.minimum(open_, close))
    rng = np.random.default_rng(5)
    w = rng.uniform(0.0, 0.5, (116, 2))
    res = simulate_portfolio_strategy(w, masked, env_config=CFG, n_random=3)
    fills = res.fills
    ts_gap = masked.ts_ms[40:60]
    assert not fills[(fills["symbol"] == "A1/USD") & fills["ts_ms"].isin(ts_gap)].shape[0]
    assert fills[fills["ts_ms"].isin(ts_gap)].shape[0] > 0  # the other asset still trades
    one = random_walk(80, 1, seed=14)
    res1 = simulate_portfolio_strategy(np.full((76, 1), 0.5), one, env_config=CFG, n_random=3)
    assert "hold_A0/USD" not in res1.baselines
    assert {"cash", "equal_weight_hold", "crp_daily"} <= set(res1.baselines)


def test_cost_overrides_and_the_sweep_keep_a_portfolio_config_and_scale_per_asset_costs() -> None:
    from coinrl.agents.costs import apply_cost_overrides, scaled_costs

    cfg = PortfolioEnvConfig(gross_leverage=0.8, asset_costs={"A1/USD": {"taker_fee_rate": 0.004, "lot_size_base": 0.5}})
    over = apply_cost_overrides(cfg, ["env.slippage_bps=7"])
    assert isinstance(over, PortfolioEnvConfig)
    assert over.gross_leverage == 0.8
    assert over.slippage_bps == 7.0
    doubled = scaled_costs(cfg, 2.0)
    assert isinstance(doubled, PortfolioEnvConfig)
    assert doubled.taker_fee_rate == pytest.approx(2 * cfg.taker_fee_rate)
    assert doubled.asset_costs["A1/USD"].taker_fee_rate == pytest.approx(0.008)
    assert doubled.asset_costs["A1/USD"].lot_size_base == 0.5  # not a cost of trading


def test_simulate_trading_strategy_hands_a_portfolio_to_the_portfolio_backtest() -> None:
    data = random_walk(120, 2, seed=4)
    w = np.full((len(data) - CFG.window, 2), 0.4)

    def policy(obs: np.ndarray) -> np.ndarray:
        return np.abs(np.tanh(obs[:, :2])).astype(np.float32) * 0.5

    for strategy in (w, policy):
        via = simulate_trading_strategy(strategy, data, env_config=CFG, seed=1)
        direct = simulate_portfolio_strategy(strategy, data, env_config=CFG, seed=1)
        assert isinstance(via, PortfolioBacktestResult)
        np.testing.assert_array_equal(via.equity_quote, direct.equity_quote)
        assert json.dumps(via.to_dict()["baselines"]) == json.dumps(direct.to_dict()["baselines"])
        assert [v.to_dict() for v in via.verdicts] == [v.to_dict() for v in direct.verdicts]
        # the same random draws through both entry points when n_random is not given
        assert via.baseline_metrics()[RANDOM_NAME]["n_draws"] == DEFAULT_N_RANDOM


def test_a_portfolio_backtest_with_risk_trades_what_the_layer_allows_and_records_it() -> None:
    data = random_walk(120, 2, seed=4, vol=0.02)
    t_steps = len(data) - CFG.window
    w = np.full((t_steps, 2), 0.45)
    off = PortfolioRiskConfig.permissive().model_dump()
    risk = PortfolioRiskConfig.model_validate({**off, "max_weight": 0.3})
    res = simulate_trading_strategy(w, data, env_config=CFG, risk=risk, n_random=3)
    assert isinstance(res, PortfolioBacktestResult)
    ro, rec = rollout_portfolio_with_risk(data, CFG, risk, weights=w)
    np.testing.assert_array_equal(res.equity_quote, ro.equity_quote)
    assert res.risk is not None
    assert res.risk.counts()["trimmed"] == t_steps
    assert res.meta["risk"]["counts"]["trimmed"] == t_steps
    np.testing.assert_allclose(res.rollout.target_weights, 0.3)
    assert res.to_dict()["risk_events"][0]["rule"] == "max_weight"
    plain = simulate_portfolio_strategy(w, data, env_config=CFG, n_random=3)
    assert plain.risk is None
    assert "risk_events" not in plain.to_dict()
    killed = simulate_portfolio_strategy(w, data, env_config=CFG, n_random=3, baselines=False,
                                         risk=PortfolioRiskConfig.model_validate({**off, "max_drawdown_frac": 0.001}))
    assert killed.risk is not None
    assert killed.risk.killed_at is not None
    assert any("RISK KILL-SWITCH" in x for x in killed.warnings)
    with pytest.raises(ConfigError, match="XRP"):
        simulate_portfolio_strategy(w, data, env_config=CFG, risk=PortfolioRiskConfig.model_validate(
            {**off, "asset_limits": {"XRP/USD": {"max_weight": 0.1}}}))
