"""The one rollout loop with a step hook: the books step the hook's targets (the risk path)."""

from __future__ import annotations

import numpy as np

from coinrl.agents.backtest_risk import rollout_with_risk
from coinrl.agents.rollout import rollout_policy, simulate_actions
from coinrl.envs.books import Books
from coinrl.envs.config import EnvConfig
from coinrl.envs.risk import RiskConfig
from coinrl.pipeline.dataset import MarketData

HOUR = 3_600_000
ENV = EnvConfig(window=1, action="continuous", allow_short=True, max_leverage=5.0,
                rebalance_threshold=0.0, maintenance_margin_rate=0.05, initial_cash_quote=1000.0,
                episode_length_bars=None)


def _crash() -> MarketData:
    """Flat at 100, a 40 % crash at bar 10 (liquidates a 5x long), then a slow recovery."""
    close = np.r_[np.full(10, 100.0), 60.0, np.full(10, 62.0), 64.0, 65.0]
    o = np.r_[close[0], close[:-1]]
    n = len(close)
    return MarketData(
        ts_ms=1_704_067_200_000 + np.arange(n, dtype=np.int64) * HOUR, open=o,
        high=np.maximum(o, close), low=np.minimum(o, close), close=close, volume=np.full(n, 1e6),
        features=np.zeros((n, 1), dtype=np.float32), feature_names=("x",), symbol="TEST/USDT",
        timeframe="1h", meta={"split": "test"},
    )


def long_5x(obs):
    return np.full((1, 1), 5.0, dtype=np.float32)


class FifthHook:
    """Scales every proposed target by a fifth and counts the calls."""

    def __init__(self) -> None:
        self.reviews: list[int] = []
        self.after: list[int] = []

    def step_config(self, env_config: EnvConfig) -> EnvConfig:
        return env_config

    def review(self, k: int, books: Books, proposed_exposure):
        self.reviews.append(k)
        return np.asarray(proposed_exposure, dtype=np.float64) * 0.2

    def after_step(self, k: int, books: Books) -> None:
        self.after.append(k)


def test_a_step_hook_steps_its_own_targets_through_the_books():
    data = _crash()
    hook = FifthHook()
    ro = rollout_policy(long_5x, data, ENV, step_hook=hook)
    t = len(data) - 1
    assert hook.reviews == hook.after == list(range(t))
    ref = simulate_actions(data, ENV, np.full((t, 1), 1.0, dtype=np.float32))[0]
    assert not ro.liquidated  # 1x survives the crash that liquidates 5x
    np.testing.assert_array_equal(ro.equity_quote, ref.equity_quote)
    np.testing.assert_array_equal(ro.position_base, ref.position_base)
    np.testing.assert_array_equal(ro.target_exposure, np.full(t, 1.0))
    np.testing.assert_array_equal(ro.actions, np.full((t, 1), 5.0, dtype=np.float32))  # the policy's own


def test_a_liquidation_under_risk_ends_the_run_flat_with_the_plain_rollouts_books():
    data = _crash()
    plain = rollout_policy(long_5x, data, ENV)
    risky, record = rollout_with_risk(lambda obs, k: long_5x(obs), data, ENV, RiskConfig.permissive())
    assert plain.liquidated
    assert risky.liquidated
    m = risky.liquidation_mark
    assert m == plain.liquidation_mark
    assert len(record.verdicts) == m
    for name in ("equity_quote", "position_base", "exposure", "fees_cum_quote", "slippage_cum_quote",
                 "turnover_cum_quote", "rewards"):
        np.testing.assert_array_equal(getattr(risky, name), getattr(plain, name), err_msg=name)
    assert np.all(risky.position_base[m:] == 0.0)
    assert np.all(risky.equity_quote[m:] == risky.equity_quote[m])
    # after the liquidation the risk path asks the policy nothing: its actions and targets are 0
    assert np.all(risky.actions[m:] == 0.0)
    assert np.all(risky.target_exposure[m:] == 0.0)
