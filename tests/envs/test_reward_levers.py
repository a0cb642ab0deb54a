"""Reward levers of the recipe: the turnover penalty (``EnvConfig.turnover_penalty``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from market_helpers import market_from_prices, random_market, random_portfolio

from coinrl.envs import TradingEnv, kernel
from coinrl.envs.portfolio_env import PortfolioEnv
from coinrl.envs.rewards import turnover_cost, with_turnover_cost
from coinrl.envs.vector import TradingVectorEnv

REWARDS = ("log_return", "simple_return", "differential_sharpe", "drawdown_penalised")


def test_turnover_penalty_charges_the_traded_fraction_of_equity_by_hand() -> None:
    # flat prices, no costs: every return is 0, so the reward is the turnover term alone
    flat = [100.0] * 8
    md = market_from_prices(flat, flat, flat, flat)
    env = TradingEnv(md, window=1, episode_length_bars=None, action="continuous", taker_fee_rate=0.0,
                     slippage_bps=0.0, rebalance_threshold=0.0, turnover_penalty=0.5)
    env.reset(seed=0)
    _, r, *_ = env.step(np.array([1.0], dtype=np.float32))  # cash -> long 1x: 10,000 of 10,000 traded
    assert r == pytest.approx(-0.5, rel=1e-9)  # (the books' leverage cap shaves a hair off 1x)
    _, r, *_ = env.step(np.array([1.0], dtype=np.float32))  # hold: nothing traded
    assert r == 0.0
    _, r, *_ = env.step(np.array([-1.0], dtype=np.float32))  # long 1x -> short 1x: 2x equity traded
    assert r == pytest.approx(-1.0, rel=1e-9)
    assert turnover_cost(0.5, 20_000.0, 10_000.0) == 1.0


def _trace(env: TradingEnv, actions: np.ndarray) -> list[tuple[float, float, float]]:
    """(reward, equity at the previous close, notional traded) per step."""
    env.reset(seed=3)
    out = []
    for a in actions:
        eq, to = env.account.equity_quote, env.account.turnover_quote
        _, r, te, tr, _ = env.step(int(a))
        out.append((r, eq, env.account.turnover_quote - to))
        if te or tr:
            break
    return out


@pytest.mark.parametrize("reward", REWARDS)
def test_turnover_term_is_its_formula_for_every_reward_kind(reward: str) -> None:
    md = random_market(300, vol=0.02)
    kw: dict[str, Any] = {"window": 4, "episode_length_bars": 60, "reward": reward}
    actions = np.random.default_rng(0).integers(0, 3, 60)
    plain = _trace(TradingEnv(md, **kw), actions)
    zero = _trace(TradingEnv(md, turnover_penalty=0.0, **kw), actions)
    charged = _trace(TradingEnv(md, turnover_penalty=0.25, **kw), actions)
    assert zero == plain  # 0 changes nothing, bit for bit
    assert sum(t for _, _, t in plain) > 0.0
    for (r0, eq, traded), (r1, eq1, traded1) in zip(plain, charged, strict=True):
        assert (eq1, traded1) == (eq, traded)  # the books do not see the penalty
        assert r1 == with_turnover_cost(r0, 0.25, traded, eq)


def test_vector_env_charges_the_same_term_per_account() -> None:
    md = random_market(300, vol=0.02)
    kw: dict[str, Any] = {"window": 4, "episode_length_bars": 40}
    rng = np.random.default_rng(1)
    a = TradingVectorEnv(3, md, **kw)
    b = TradingVectorEnv(3, md, turnover_penalty=0.25, **kw)
    a.reset(seed=2)
    b.reset(seed=2)
    st = a._state
    for _ in range(30):
        act = rng.integers(0, 3, 3)
        eq, to = st[kernel.EQUITY].copy(), st[kernel.TURNOVER].copy()
        _, r0, *_ = a.step(act)
        _, r1, *_ = b.step(act)
        np.testing.assert_array_equal(r1, with_turnover_cost(r0, 0.25, st[kernel.TURNOVER] - to, eq))


def test_portfolio_env_charges_the_term_summed_over_assets() -> None:
    data = random_portfolio(300, 3, n_market_features=1)
    kw: dict[str, Any] = {"window": 4, "episode_length_bars": 40, "action": "continuous"}
    a = PortfolioEnv(data, **kw)
    b = PortfolioEnv(data, turnover_penalty=0.25, **kw)
    a.reset(seed=4)
    b.reset(seed=4)
    rng = np.random.default_rng(5)
    traded_any = 0.0
    for _ in range(20):
        w = rng.uniform(-0.3, 0.3, a.action_space.shape).astype(np.float32)
        eq, to = a.state[kernel.EQUITY, 0], a.state[kernel.TURNOVER, 0]
        _, r0, *_ = a.step(w)
        _, r1, *_ = b.step(w)
        traded = a.state[kernel.TURNOVER, 0] - to
        traded_any += traded
        assert r1 == with_turnover_cost(r0, 0.25, traded, eq)
    assert traded_any > 0.0


def test_negative_turnover_penalty_is_refused() -> None:
    from coinrl.envs.config import EnvConfig

    with pytest.raises(Exception, match="turnover_penalty"):
        EnvConfig(turnover_penalty=-0.1)
