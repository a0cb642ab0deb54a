"""Rewards against hand-computed values; vector form == scalar form; per-account state."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinrl.envs.config import EnvConfig
from coinrl.envs.rewards import MIN_EQUITY_RATIO, REWARDS, make_reward


def _scalar_path(name: str, equity: list[float], **kw: object) -> list[float]:
    r = make_reward(EnvConfig(reward=name, **kw), 1)  # type: ignore[arg-type]
    r.reset_scalar(equity[0])
    return [r.scalar(a, b) for a, b in zip(equity[:-1], equity[1:], strict=True)]


def _vector_path(name: str, equity: list[float], **kw: object) -> list[float]:
    r = make_reward(EnvConfig(reward=name, **kw), 1)  # type: ignore[arg-type]
    r.reset(None, equity[0])
    return [float(r(np.array([a]), np.array([b]))[0]) for a, b in zip(equity[:-1], equity[1:], strict=True)]


@pytest.mark.parametrize("path", [_scalar_path, _vector_path], ids=["scalar", "vector"])
def test_log_and_simple_returns(path: object) -> None:
    eq = [100.0, 110.0, 99.0, 0.0]
    assert path("log_return", eq) == pytest.approx([math.log(1.1), math.log(0.9), math.log(MIN_EQUITY_RATIO)])  # type: ignore[operator]
    assert path("simple_return", eq) == pytest.approx([0.1, -0.1, -1.0])  # type: ignore[operator]


@pytest.mark.parametrize("path", [_scalar_path, _vector_path], ids=["scalar", "vector"])
def test_differential_sharpe_ratio_by_hand(path: object) -> None:
    # returns 0.1, -0.05, 0.02 with eta 0.1
    eq = [100.0, 110.0, 104.5, 106.59]
    # step 1: A = B = 0 -> no variance yet -> D = 0; then A = 0.01, B = 0.001
    # step 2: dA = -0.05 - 0.01 = -0.06, dB = 0.0025 - 0.001 = 0.0015, var = 0.001 - 0.01**2 = 0.0009
    #         D = (0.001 * -0.06 - 0.5 * 0.01 * 0.0015) / 0.0009**1.5 = -0.0000675 / 0.000027 = -2.5
    #         A = 0.01 - 0.006 = 0.004, B = 0.001 + 0.00015 = 0.00115
    # step 3: dA = 0.02 - 0.004 = 0.016, dB = 0.0004 - 0.00115 = -0.00075,
    #         var = 0.00115 - 0.004**2 = 0.001134
    #         D = (0.00115 * 0.016 + 0.5 * 0.004 * 0.00075) / 0.001134**1.5 = 0.0000199 / 0.001134**1.5
    expected = [0.0, -2.5, 0.0000199 / 0.001134**1.5]
    assert path("differential_sharpe", eq, dsr_eta=0.1) == pytest.approx(expected, rel=1e-9)  # type: ignore[operator]


@pytest.mark.parametrize("path", [_scalar_path, _vector_path], ids=["scalar", "vector"])
def test_drawdown_penalised_pays_each_new_drawdown_once(path: object) -> None:
    eq = [100.0, 110.0, 99.0, 104.5, 115.0, 103.5]
    expected = [
        math.log(1.1),  # new peak 110, no drawdown
        math.log(0.9) - 2.0 * 0.1,  # drawdown 11/110 = 0.1, all new: penalty 2 * 0.1
        math.log(104.5 / 99.0),  # drawdown shrinks to 0.05: no penalty, no bonus
        math.log(115.0 / 104.5),  # new peak 115
        math.log(0.9) - 2.0 * 0.1,  # 11.5 / 115 = 0.1 again, from 0
    ]
    assert path("drawdown_penalised", eq, drawdown_penalty=2.0) == pytest.approx(expected)  # type: ignore[operator]


def test_vector_rewards_keep_state_per_account_and_reset_selected_ones() -> None:
    cfg = EnvConfig(reward="differential_sharpe", dsr_eta=0.1)
    r = make_reward(cfg, 2)
    r.reset(None, 100.0)
    r(np.array([100.0, 100.0]), np.array([110.0, 90.0]))
    d = r(np.array([110.0, 90.0]), np.array([104.5, 85.5]))
    assert d[0] == pytest.approx(-2.5)  # as the hand-computed single path
    assert d[1] != d[0]
    r.reset(np.array([0]), 100.0)
    assert r(np.array([100.0, 85.5]), np.array([110.0, 90.0]))[0] == 0.0  # fresh moments


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(sorted(REWARDS)),
    eq=st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=2, max_size=30),
)
def test_vector_reward_equals_scalar_reward_bit_for_bit(name: str, eq: list[float]) -> None:
    eq = [1e4] + [max(e, 1e-3) for e in eq]
    assert _scalar_path(name, eq) == _vector_path(name, eq)
