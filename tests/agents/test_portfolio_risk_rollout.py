"""rollout_portfolio_with_risk: every rule off is the plain portfolio rollout bit for bit; trims
(concentration, per-asset notional cap, gross leverage) and a per-asset stop-loss on a tiny
2-asset case computed by hand; a blocked rebalance keeps the positions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from portfolio_helpers import ZERO_COSTS, portfolio, random_walk

from coinrl.agents.portfolio_risk_rollout import portfolio_risk_config, rollout_portfolio_with_risk
from coinrl.agents.portfolio_rollout import rollout_portfolio
from coinrl.envs.risk import RiskConfig
from coinrl.envs.risk_portfolio import PortfolioRiskConfig
from coinrl.pipeline.errors import ConfigError

OFF = PortfolioRiskConfig.permissive()
COSTS = {"window": 4, "taker_fee_rate": 0.0007, "slippage_bps": 3.0, "max_leverage": 2.0,
         "episode_length_bars": 40}


def limits(**kw: Any) -> PortfolioRiskConfig:
    return PortfolioRiskConfig.model_validate({**OFF.model_dump(), **kw})


def _same(a: Any, b: Any) -> None:
    for f in ("equity_quote", "position_base", "weights", "target_weights", "rewards", "fees_cum_quote",
              "slippage_cum_quote", "funding_cum_quote", "turnover_cum_quote", "borrow_cum_quote"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert (a.liquidated, a.liquidation_mark, a.scaled_rebalances) == (b.liquidated, b.liquidation_mark,
                                                                       b.scaled_rebalances)


@pytest.mark.parametrize("action", ["continuous", "discrete"])
def test_every_rule_off_equals_the_plain_policy_rollout_bit_for_bit(action: str) -> None:
    data = random_walk(160, 3, seed=7, vol=0.02, funding=True)
    cfg = {**COSTS, "action": action}

    def policy(obs: np.ndarray) -> np.ndarray:  # obs-driven, beyond the budget at times
        x = obs[:, :3].astype(np.float64) * 1.5
        return np.clip(np.round(x + 1), 0, 2).astype(np.int64) if action == "discrete" else x

    plain = rollout_portfolio(data, cfg, policy=policy)
    ro, rec = rollout_portfolio_with_risk(data, cfg, OFF, policy=policy)
    _same(ro, plain)
    assert rec.verdicts == ("allowed",) * plain.n_steps
    np.testing.assert_array_equal(rec.allowed_weights, plain.target_weights)
    assert np.abs(np.diff(plain.position_base, axis=0)).sum() > 0  # it traded


def test_every_rule_off_equals_the_plain_weights_rollout_bit_for_bit() -> None:
    data = random_walk(120, 2, seed=2, vol=0.03)
    t_steps = len(data) - COSTS["window"]
    w = np.random.default_rng(0).uniform(-0.9, 0.9, (t_steps, 2))
    plain = rollout_portfolio(data, COSTS, weights=w)
    ro, rec = rollout_portfolio_with_risk(data, COSTS, OFF, weights=w)
    _same(ro, plain)
    assert rec.counts()["allowed"] == t_steps


def tiny() -> Any:
    # A0 at 100 and A1 at 50 throughout, except A0 closes bar 3 at 85 (and opens bar 4 there)
    o = [[100.0, 50.0]] * 4 + [[85.0, 50.0]]
    c = [[100.0, 50.0]] * 3 + [[85.0, 50.0], [85.0, 50.0]]
    return portfolio(open_=o, close=c)


TINY = {**ZERO_COSTS, "window": 1, "initial_cash_quote": 1000.0, "max_leverage": 2.0, "allow_short": False}


def test_trims_and_a_per_asset_stop_loss_match_the_hand_computed_books() -> None:
    risk = limits(max_weight=0.6, max_leverage=0.8, stop_loss_frac=0.1,
                  asset_limits={"A1/USD": {"max_position_notional_quote": 300.0}})
    signal = [[0.9, 0.1], [0.2, 0.5], [0.6, 0.3], [0.5, 0.2]]
    ro, rec = rollout_portfolio_with_risk(tiny(), TINY, risk, weights=signal)
    # d0: A0 0.9 -> 0.6 (concentration); d1: A1 0.5 -> 300 / 1000 (its notional cap);
    # d2: gross 0.9 > 0.8, both scaled by 8/9; d3: A0 85 is 15 % under its entry 100 -> forced
    # exit, A1 0.2 passes
    expected = [[0.6, 0.1], [0.2, 0.3], [0.6 * 8 / 9, 0.3 * 8 / 9], [0.0, 0.2]]
    np.testing.assert_allclose(ro.target_weights, expected, rtol=1e-12)
    np.testing.assert_allclose(rec.allowed_weights, expected, rtol=1e-12)
    np.testing.assert_array_equal(rec.proposed_weights, signal)
    assert rec.verdicts == ("trimmed",) * 4
    assert rec.asset_verdicts == (("trimmed", "allowed"), ("allowed", "trimmed"),
                                  ("trimmed", "trimmed"), ("forced_exit", "allowed"))
    rules = [(k, sym, e.rule) for k, sym, e in rec.events]
    assert (0, "A0/USD", "max_weight") in rules
    assert (1, "A1/USD", "max_position_notional_quote") in rules
    assert (2, None, "max_leverage") in rules
    assert (3, "A0/USD", "stop_loss") in rules
    # books (no costs): 6 A0 + 2 A1, then 2 + 6, then 16/3 A0 + 16/3 A1 (1000 * 0.8/3 / 50);
    # A0 loses 16/3 * 15 = 80 at bar 3's close: equity 920; d3 sells A0 at 85 and holds
    # 0.2 * 920 / 50 = 3.68 A1
    np.testing.assert_allclose(ro.position_base[1:], [[6.0, 2.0], [2.0, 6.0], [16 / 3, 16 / 3], [0.0, 3.68]],
                               rtol=1e-12)
    np.testing.assert_allclose(ro.equity_quote, [1000.0, 1000.0, 1000.0, 920.0, 920.0], rtol=1e-12)
    assert rec.counts()["assets"]["A0/USD"]["forced_exit"] == 1


def test_a_blocked_rebalance_keeps_every_position() -> None:
    risk = limits(max_orders_per_window=1, order_window_ms=10 * 3_600_000)
    ro, rec = rollout_portfolio_with_risk(tiny(), TINY, risk, weights=[[0.4, 0.4], [0.1, 0.7], [0.0, 0.0], [0.3, 0.3]])
    assert rec.verdicts == ("allowed", "blocked", "blocked", "blocked")
    for k in range(2, 5):
        np.testing.assert_allclose(ro.position_base[k], [4.0, 8.0], rtol=1e-12)
    assert ro.turnover_quote.sum() == pytest.approx(800.0)


def test_the_risk_config_kind_is_checked() -> None:
    promoted = portfolio_risk_config(RiskConfig(max_leverage=0.5))
    assert isinstance(promoted, PortfolioRiskConfig)
    assert promoted.max_leverage == 0.5
    with pytest.raises(ConfigError, match="PortfolioRiskConfig"):
        portfolio_risk_config({"max_leverage": 0.5})


def test_after_the_kill_switch_the_account_holds_its_positions_without_a_fill() -> None:
    data = random_walk(200, 3, seed=1, vol=0.02)
    cfg = {"window": 4, "taker_fee_rate": 0.001, "slippage_bps": 2.0, "max_leverage": 1.0, "allow_short": False}
    ro, rec = rollout_portfolio_with_risk(data, cfg, limits(max_drawdown_frac=0.02), weights=np.full((196, 3), 0.3))
    k = rec.killed_at
    assert k is not None
    assert rec.verdicts[k:] == ("kill",) * (196 - k)
    held = ro.position_base[k + 1 :]
    np.testing.assert_array_equal(held, np.broadcast_to(held[0], held.shape))
    np.testing.assert_array_equal(ro.turnover_cum_quote[k + 1 :], np.broadcast_to(ro.turnover_cum_quote[k + 1],
                                                                                  held.shape))
    assert [r for _, _, e in rec.events for r in [e.rule] if e.action == "kill"] == ["max_drawdown"]
