"""simulate_trading_strategy: the same books as training, fills checked by hand, honest metrics."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coinrl.agents.agent import TrainedAgent
from coinrl.agents.algos import make_algorithm
from coinrl.agents.backtest import (
    FILL_COLUMNS,
    SIGNAL_ENV,
    evaluate_strategy_performance,
    market_data_from_candles,
    simulate_many,
    simulate_trading_strategy,
)
from coinrl.agents.baselines import count_changes
from coinrl.agents.bundle import save_model
from coinrl.agents.config import TrainConfig
from coinrl.agents.evaluate import evaluate_model
from coinrl.agents.metrics import simple_returns
from coinrl.agents.rollout import (
    simulate_actions,
    simulate_targets,
    stacked_torch_policy,
    targets_to_actions,
    torch_policy,
)
from coinrl.envs.config import EnvConfig
from coinrl.envs.sb3 import TradingSB3VecEnv
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.splits import PreparedData, prepare_data_for_model
from coinrl.pipeline.synthetic import planted_pattern

HOUR_MS = 3_600_000
SIGNAL_SPEC = {"features": [{"kind": "column", "name": "signal"}, {"kind": "returns", "horizons": [1, 4]}]}


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _market(close: np.ndarray, open_: np.ndarray | None = None, *, wick: float = 0.002) -> MarketData:
    """Bars with the given closes (open = previous close unless given), one dummy feature."""
    n = len(close)
    o = np.r_[close[0], close[:-1]] if open_ is None else np.asarray(open_, dtype=np.float64)
    return MarketData(
        ts_ms=1_704_067_200_000 + np.arange(n, dtype=np.int64) * HOUR_MS,
        open=o,
        high=np.maximum(o, close) * (1 + wick),
        low=np.minimum(o, close) * (1 - wick),
        close=np.asarray(close, dtype=np.float64),
        volume=np.full(n, 50.0),
        features=np.zeros((n, 1), dtype=np.float32),
        feature_names=("none",),
        symbol="TEST/USD",
        timeframe="1h",
    )


def _random_walk(n: int, seed: int = 0, vol: float = 0.01) -> MarketData:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    # opens gap away from the previous close, so open-to-close moves are their own
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0.0, vol / 2, n))
    return _market(close, open_)


# --------------------------------------------------------------------------- the same books


@pytest.mark.slow
def test_a_bundle_backtest_reproduces_evaluate_model_exactly(
    trained: TrainedAgent, planted: PreparedData, tmp_path: Path
) -> None:
    path = save_model(trained, tmp_path / "bundle")
    res = simulate_trading_strategy(path, planted.test)
    rep = evaluate_model(trained, planted.test, n_random=5)
    assert res.meta["kind"] == "agent"
    for key, value in rep.agent.items():
        assert _same(res.metrics[key], value), key
    np.testing.assert_array_equal(res.rollout.actions, rep.rollout.actions)
    np.testing.assert_array_equal(res.equity_quote, rep.rollout.equity_quote)
    for name in ("buy_and_hold", "flat"):
        for key, value in rep.baselines[name].items():
            assert _same(res.baselines[name].metrics[key], value), (name, key)
    assert res.policy == rep.policy


@pytest.mark.slow
def test_candles_get_the_bundles_features_and_normaliser(trained: TrainedAgent, planted: PreparedData) -> None:
    candles = planted_pattern(3000, seed=7)  # the candles `planted` was prepared from
    from_candles = simulate_trading_strategy(trained, candles, baselines=False)
    from_prepared = simulate_trading_strategy(trained, planted.full, baselines=False)
    np.testing.assert_array_equal(from_candles.ts_ms, from_prepared.ts_ms)
    np.testing.assert_array_equal(from_candles.rollout.actions, from_prepared.rollout.actions)
    np.testing.assert_allclose(from_candles.equity_quote, from_prepared.equity_quote, rtol=1e-12)


@pytest.mark.slow
def test_batched_backtests_equal_single_runs(trained: TrainedAgent, planted: PreparedData) -> None:
    many = simulate_many([trained, trained], [planted.test, planted.validation], baselines=False)
    for res, md in zip(many, [planted.test, planted.validation], strict=True):
        one = simulate_trading_strategy(trained, md, baselines=False)
        assert len(res.equity_quote) == len(md) - trained.env_config.window + 1
        np.testing.assert_array_equal(res.rollout.actions, one.rollout.actions)
        np.testing.assert_array_equal(res.equity_quote, one.equity_quote)
        pd.testing.assert_frame_equal(res.fills, one.fills)


def _perturbed(agent: TrainedAgent, seed: int) -> TrainedAgent:
    """A copy of ``agent`` with different weights (another fold or seed's model)."""
    import torch

    other = copy.deepcopy(agent)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.model.policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return other


@pytest.mark.slow
def test_stacked_models_act_as_each_model_alone(trained: TrainedAgent, planted: PreparedData) -> None:
    models = [trained, _perturbed(trained, 1), _perturbed(trained, 2)]
    datas = [planted.test, planted.validation, planted.test, planted.validation]
    pairs = [models[0], models[1], models[2], models[1]]
    many = simulate_many(pairs, datas, baselines=False)
    for m, d, res in zip(pairs, datas, many, strict=True):
        one = simulate_trading_strategy(m, d, baselines=False)
        np.testing.assert_array_equal(res.rollout.actions, one.rollout.actions)
        np.testing.assert_array_equal(res.equity_quote, one.equity_quote)
    assert not np.array_equal(many[0].rollout.actions, many[2].rollout.actions)
    # a continuous (Gaussian) head, and DQN's Q head, stacked against each model's own forward
    obs = np.random.default_rng(0).normal(size=(6, 28)).astype(np.float32)
    for algo, action in (("ppo", "continuous"), ("dqn", "discrete")):
        venv = TradingSB3VecEnv(num_envs=2, data=planted.train, config=EnvConfig(window=8, action=action))
        cfg = TrainConfig.model_validate({"algo": algo, "n_envs": 2, "ppo": {"n_steps": 64, "batch_size": 64}})
        nets = [make_algorithm(cfg, venv, s) for s in (0, 1)]
        group = np.array([0, 1, 1, 0, 1, 1])
        stacked = stacked_torch_policy(nets, group)
        assert stacked is not None
        got = stacked(obs)
        for j, net in enumerate(nets):
            want = torch_policy(net)(obs[group == j])  # type: ignore[misc]
            np.testing.assert_allclose(got[group == j], want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_fast_signal_loop_keeps_the_envs_books_bit_for_bit() -> None:
    md = _random_walk(3000, seed=3)
    rng = np.random.default_rng(0)
    crash = _market(np.r_[np.full(20, 100.0), np.full(20, 60.0), np.full(10, 70.0)])
    cases = [
        (md, EnvConfig(window=1, action="continuous", episode_length_bars=None), [-1.0, -0.3, 0.0, 0.6, 1.0]),
        (md, EnvConfig(window=4, delay_bars=3, positions=(-1, 0, 1), impact_coef=0.5,
                       lot_size_base=0.01, min_notional_quote=50.0), [-1.0, 0.0, 1.0]),
        (md, EnvConfig(window=2, action="continuous", max_leverage=3.0, borrow_rate_per_bar=1e-4,
                       rebalance_threshold=0.0), [-3.0, 0.5, 2.9]),
        # 4x long into a 40 % gap down: liquidated at the open, flat afterwards
        (crash, EnvConfig(window=1, action="continuous", max_leverage=4.0), [4.0]),
    ]
    for data, cfg, choices in cases:
        targets = rng.choice(choices, size=len(data) - cfg.window)
        fast = simulate_targets(data, cfg, targets)
        env = simulate_actions(data, cfg, targets_to_actions(targets, cfg))[0]
        for name in ("equity_quote", "position_base", "exposure", "fees_cum_quote",
                     "slippage_cum_quote", "turnover_cum_quote", "target_exposure"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(env, name), err_msg=name)
        assert fast.liquidation_mark == env.liquidation_mark
    assert fast.liquidated
    assert fast.liquidation_mark == 20
    assert fast.position_base[-1] == 0.0


# --------------------------------------------------------------------------- fills by hand


def _hand_fills(md: MarketData, signal: np.ndarray, fee: float, slip: float, cash: float) -> list[dict[str, float]]:
    """An independent spot-account calculation: the decision after bar t's close fills at
    bar t+1's open; target quantity = exposure * equity / open, capped so that fee and
    slippage are paid from the equity; fee and slippage are fractions of |qty| * open."""
    qty = 0.0
    out = []
    for t in range(len(md) - 1):
        o = md.open[t + 1]
        equity = cash + qty * o
        want = signal[t] * equity / o
        cost = fee + slip
        cap = (equity / o + qty * cost) / (1.0 + cost) * (1.0 - 1e-12)
        want = min(want, cap)
        dq = -qty if want == 0.0 else want - qty
        if dq != 0.0:
            notional = abs(dq) * o
            f, s = notional * fee, notional * slip
            cash -= dq * o + f + s
            qty += dq
            side = 1.0 if dq > 0 else -1.0
            out.append({"ts_ms": float(md.ts_ms[t + 1]), "side": side, "qty": abs(dq),
                        "price": o * (1.0 + side * slip), "fee": f, "slip": s})
    return out


@pytest.mark.slow
def test_signal_fills_equal_a_hand_calculation_trade_by_trade() -> None:
    close = np.array([100.0, 102.0, 101.0, 105.0, 104.0, 99.0, 98.0, 103.0, 107.0, 106.0])
    md = _market(close, np.array([100.0, 101.0, 102.5, 100.5, 106.0, 103.0, 98.5, 97.0, 104.0, 108.0]))
    signal = np.array([1.0, 1.0, 0.5, 0.0, 0.0, 0.8, 0.8, 0.2, 1.0, 1.0])
    cfg = EnvConfig(window=1, action="continuous", allow_short=False, taker_fee_rate=0.001,
                    slippage_bps=10.0, rebalance_threshold=0.0, episode_length_bars=None)
    res = simulate_trading_strategy(signal, md, env_config=cfg, baselines=False)
    # continuous env actions are float32 (the action space's dtype): 0.8 arrives as 0.800000012
    hand = _hand_fills(md, signal.astype(np.float32).astype(np.float64), 0.001, 0.001,
                       cfg.initial_cash_quote)
    fills = res.fills
    assert list(fills.columns) == list(FILL_COLUMNS)
    # buy, hold (at the cap), trim, sell out, buy, re-balance the drift, trim, buy
    assert len(fills) == len(hand) == 8
    for (_, f), h in zip(fills.iterrows(), hand, strict=True):
        assert f["ts_ms"] == h["ts_ms"]
        assert f["side"] == ("buy" if h["side"] > 0 else "sell")
        # (the drift fill is dust of ~1e-12 BTC: compared to 1e-9 absolute)
        assert f["qty_base"] == pytest.approx(h["qty"], rel=1e-9, abs=1e-9)
        # fills read their costs off the books' running totals: a dust fill's slippage is known
        # to the totals' rounding (~1e-15 quote), so its price (ref + slippage / qty) is compared
        # by the quote value of the difference
        if h["qty"] * h["price"] > 1e-6:
            assert f["price_quote"] == pytest.approx(h["price"], rel=1e-9)
        else:
            assert abs(f["price_quote"] - h["price"]) * h["qty"] < 1e-12
        assert f["fee_quote"] == pytest.approx(h["fee"], rel=1e-9, abs=1e-9)
        assert f["slippage_quote"] == pytest.approx(h["slip"], rel=1e-9, abs=1e-9)
        assert f["decision_ts_ms"] == h["ts_ms"] - HOUR_MS
    assert res.metrics["n_fills"] == 8
    assert res.metrics["fees_paid_quote"] == pytest.approx(sum(h["fee"] for h in hand), rel=1e-9)
    # a per-bar signal of len(data) is aligned to the decisions: the last value is never used
    changed = signal.copy()
    changed[-1] = 0.0
    again = simulate_trading_strategy(changed, md, env_config=cfg, baselines=False)
    np.testing.assert_array_equal(again.equity_quote, res.equity_quote)


# --------------------------------------------------------------------------- honesty


def test_a_strategy_that_peeks_one_bar_ahead_shows_an_impossible_sharpe() -> None:
    md = _random_walk(4000, seed=11)
    up = np.sign(md.close - md.open)  # bar t's own open-to-close move, known at its close
    peek = np.r_[up[1:], 0.0]  # decided at bar t's close with bar t+1's move: look-ahead
    honest = up  # the same rule, delayed to the data it can see
    free = SIGNAL_ENV.model_copy(update={"taker_fee_rate": 0.0, "slippage_bps": 0.0})
    for cfg in (SIGNAL_ENV, free):  # after costs, and without them
        cheat = simulate_trading_strategy(peek, md, env_config=cfg, baselines=False)
        assert cheat.metrics["sharpe"] > 20.0
        assert any("look-ahead" in w for w in cheat.warnings)
    fair = simulate_trading_strategy(honest, md, env_config=free, baselines=False)
    assert abs(fair.metrics["sharpe"]) < 3.0
    assert fair.warnings == []
    # with costs the honest flip-flopper just pays fees
    paid = simulate_trading_strategy(honest, md, baselines=False)
    assert paid.metrics["sharpe"] < 0.0
    assert paid.warnings == []


def test_baselines_run_on_the_same_bars_and_costs(small_env: EnvConfig) -> None:
    # a planted signal strong enough that 1,200 test bars settle the verdicts
    prepared = prepare_data_for_model(planted_pattern(8000, seed=3), spec=SIGNAL_SPEC)
    col = (small_env.window - 1) * prepared.test.n_features  # the newest `signal` feature

    def signal_policy(obs: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(obs)[:, col] > 0, 2, 0).astype(np.int64)

    res = simulate_trading_strategy(signal_policy, prepared.test, env_config=small_env, n_random=3)
    assert set(res.baselines) == {"buy_and_hold", "flat", "ma_crossover", "random"}
    assert [v.baseline for v in res.verdicts] == list(res.baselines)
    n = len(res.equity_quote)
    for b in res.baselines.values():
        np.testing.assert_array_equal(b.rollout.ts_ms, res.ts_ms)
        assert len(b.equity_quote) == n
    assert res.baselines["flat"].metrics["total_return"] == 0.0
    assert res.baselines["buy_and_hold"].metrics["n_fills"] == 1
    changes = count_changes(res.rollout.target_exposure, threshold=small_env.rebalance_threshold)
    assert res.baselines["random"].metrics["n_changes"] == changes
    # the crossover only trades on closes it has seen: flat until the slow average exists
    ma = res.baselines["ma_crossover"].rollout.target_exposure
    assert (ma[: 200 - small_env.window] == 0.0).all()
    # the signal rule beats flat on a planted signal, and the verdict says so
    flat = next(v for v in res.verdicts if v.baseline == "flat")
    assert flat.margin == pytest.approx(res.metrics["total_return"])
    assert all(v.outcome == "beats" and v.confidence > 0.975 for v in res.verdicts)
    assert flat.line().startswith("BEATS flat")
    assert res.stats["psr"] > 0.9
    flat_scalars = res.flat()
    assert flat_scalars["backtest/policy/sharpe"] == res.metrics["sharpe"]


def test_performance_figures_are_complete_and_annualised_by_bar_size() -> None:
    md = _random_walk(2000, seed=5)
    res = simulate_trading_strategy(np.where(np.arange(2000) % 100 < 50, 1.0, 0.0), md, baselines=False)
    m = evaluate_strategy_performance(res)
    for key in ("total_return", "annualised_return", "annualised_volatility", "sharpe", "sortino",
                "calmar", "max_drawdown", "max_drawdown_duration_bars", "max_drawdown_duration_days",
                "win_rate", "profit_factor", "avg_trade_return", "exposure", "turnover",
                "fees_paid_quote", "slippage_paid_quote", "n_fills", "avg_fill_cost_frac"):
        assert key in m, key
    assert m["periods_per_year"] == 8760.0
    assert m["max_drawdown_duration_days"] == pytest.approx(m["max_drawdown_duration_bars"] / 24.0)
    r = simple_returns(res.equity_quote)
    assert m["annualised_volatility"] == pytest.approx(r.std(ddof=1) * math.sqrt(8760.0), rel=1e-12)
    assert m["avg_fill_cost_frac"] == pytest.approx(0.001 + 1e-4, rel=1e-9)  # taker fee + 1 bp
    assert evaluate_strategy_performance(res.rollout)["sharpe"] == m["sharpe"]


@pytest.mark.slow
def test_metrics_match_empyrical_to_1e_9() -> None:
    empyrical = pytest.importorskip("empyrical", reason="pip install empyrical-reloaded (test reference)")
    md = _random_walk(3000, seed=8, vol=0.02)
    sig = np.where(np.sin(np.arange(3000) / 40.0) > 0, 1.0, -0.5)
    res = simulate_trading_strategy(sig, md, baselines=False)
    r = pd.Series(simple_returns(res.equity_quote))
    ppy = 8760.0
    m = res.metrics
    ref = {
        "sharpe": empyrical.sharpe_ratio(r, annualization=ppy),
        "sortino": empyrical.sortino_ratio(r, annualization=ppy),
        "annualised_volatility": empyrical.annual_volatility(r, annualization=ppy),
        "annualised_return": empyrical.annual_return(r, annualization=ppy),
        "max_drawdown": -empyrical.max_drawdown(r),
        "calmar": empyrical.calmar_ratio(r, annualization=ppy),
        "total_return": empyrical.cum_returns_final(r),
    }
    for key, value in ref.items():
        assert m[key] == pytest.approx(float(value), rel=1e-9, abs=1e-12), key


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_are_clear_errors(planted: PreparedData, trained: TrainedAgent) -> None:
    md = _random_walk(50)
    with pytest.raises(DataError, match="one per bar"):
        simulate_trading_strategy(np.ones(7), md)
    with pytest.raises(DataError, match="NaN"):
        simulate_trading_strategy(np.r_[np.nan, np.ones(49)], md)
    with pytest.raises(ConfigError, match="discrete positions"):
        simulate_trading_strategy(np.full(50, 0.5), md, env_config=SIGNAL_ENV.model_copy(update={"action": "discrete"}))
    with pytest.raises(ConfigError, match="env_config"):
        simulate_trading_strategy(trained.model, planted.test)
    with pytest.raises(DataError, match="features"):
        simulate_trading_strategy(trained, md)
    with pytest.raises(DataError, match="MarketData, a candle DataFrame or a path"):
        simulate_trading_strategy(trained, 42)  # type: ignore[arg-type]


@pytest.mark.slow
def test_candles_run_a_signal_without_features() -> None:
    candles = planted_pattern(300, seed=1)
    md = market_data_from_candles(candles)
    assert md.timeframe == "1h"
    assert len(md) == 300
    res = simulate_trading_strategy(np.ones(300), candles, baselines=False)
    assert res.metrics["n_fills"] == 1  # buy once, hold
    assert res.fills.iloc[0]["ts_ms"] == candles["ts_ms"].iloc[1]
