"""Trading metrics against hand-computed answers on tiny series, plus invariants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinrl.agents.metrics import (
    annualised_return,
    calmar_ratio,
    json_safe,
    max_drawdown,
    profit_factor,
    sharpe_ratio,
    simple_returns,
    sortino_ratio,
    total_return,
    trade_returns,
    trade_spans,
    trading_metrics,
    win_rate,
)
from coinrl.pipeline.errors import DataError

EQ = np.array([100.0, 110.0, 99.0, 108.9])  # returns +10 %, -10 %, +10 %


def test_returns_and_total_return_by_hand() -> None:
    np.testing.assert_allclose(simple_returns(EQ), [0.1, -0.1, 0.1])
    assert total_return(EQ) == pytest.approx(0.089)


def test_annualised_return_compounds_over_the_year() -> None:
    # 3 bars with 3 bars a year: one year, so CAGR == total return
    assert annualised_return(EQ, 3.0) == pytest.approx(0.089)
    # same growth over 3 bars with 6 bars a year: half a year -> squared
    assert annualised_return(EQ, 6.0) == pytest.approx(1.089**2 - 1)
    assert annualised_return([100.0, 0.0], 365.0) == -1.0


def test_sharpe_by_hand() -> None:
    # r = [.1, -.1, .1]: mean 1/30, sample std sqrt(0.02666.../2) = 0.11547; x sqrt(4)
    assert sharpe_ratio(simple_returns(EQ), 4.0) == pytest.approx((1 / 30) / 0.1154700538 * 2)
    assert sharpe_ratio(simple_returns(EQ), 4.0) == pytest.approx(1 / math.sqrt(3))


def test_sortino_by_hand() -> None:
    # downside deviation sqrt(mean([0, .01, 0])) = 0.0577350; (1/30) / that * sqrt(4)
    assert sortino_ratio(simple_returns(EQ), 4.0) == pytest.approx((1 / 30) / math.sqrt(0.01 / 3) * 2)


def test_max_drawdown_and_calmar_by_hand() -> None:
    eq = np.array([100.0, 120.0, 90.0, 130.0, 65.0])
    assert max_drawdown(eq) == pytest.approx(0.5)  # 130 -> 65
    assert calmar_ratio(eq, 4.0) == pytest.approx(annualised_return(eq, 4.0) / 0.5)


def test_trades_win_rate_and_profit_factor_by_hand() -> None:
    expo = np.array([0.0, 1.0, 1.0, 0.0, -1.0, -1.0, 1.0])
    eq = np.array([100.0, 102.0, 104.0, 103.0, 105.0, 100.0, 101.0])
    assert trade_spans(expo) == [(1, 2), (4, 5), (6, 6)]
    # long 1..2 closed to flat at bar 3 (exit bar included): 103/100 - 1
    # short 4..5 flipped at bar 6 (exit fee in the next trade): 100/103 - 1
    # long 6, open at the end: 101/100 - 1
    tr = trade_returns(eq, expo)
    np.testing.assert_allclose(tr, [0.03, 100 / 103 - 1, 0.01])
    assert win_rate(tr) == pytest.approx(2 / 3)
    assert profit_factor(tr) == pytest.approx(0.04 / (1 - 100 / 103))


def test_degenerate_series_do_not_raise() -> None:
    flat = np.full(10, 1000.0)
    r = simple_returns(flat)
    assert sharpe_ratio(r, 8760) == 0.0
    assert sortino_ratio(r, 8760) == 0.0
    assert max_drawdown(flat) == 0.0
    assert calmar_ratio(flat, 8760) == 0.0
    assert math.isnan(win_rate([]))
    assert math.isnan(profit_factor([]))
    assert profit_factor([0.1, 0.2]) == math.inf
    up = 100 * 1.01 ** np.arange(5)
    assert sharpe_ratio(simple_returns(up), 8760) == math.inf


def test_trading_metrics_turnover_exposure_and_costs() -> None:
    eq = np.array([100.0, 100.0, 110.0, 110.0])
    expo = np.array([0.0, 1.0, 0.5, 0.0])
    m = trading_metrics(
        eq, expo, 8760.0, fees_paid_quote=1.0, slippage_paid_quote=0.5, turnover_quote=210.0
    )
    assert m["turnover"] == pytest.approx(210.0 / eq.mean())
    assert m["exposure"] == pytest.approx(0.5)  # mean |exposure| over bars 1..3
    assert m["time_in_market"] == pytest.approx(2 / 3)
    assert m["costs_frac"] == pytest.approx(0.015)
    assert m["n_trades"] == 1.0
    assert m["final_equity_quote"] == 110.0


def test_bad_equity_is_a_data_error() -> None:
    with pytest.raises(DataError, match="start > 0"):
        total_return([0.0, 1.0])
    with pytest.raises(DataError, match="NaN"):
        total_return([1.0, float("nan")])
    with pytest.raises(DataError, match="must match"):
        trading_metrics([1.0, 2.0], [0.0], 8760.0)


def test_json_safe_turns_non_finite_into_none() -> None:
    out = json_safe({"a": np.float64("nan"), "b": [math.inf, np.int64(3)], "c": np.arange(2)})
    assert out == {"a": None, "b": [None, 3], "c": [0, 1]}
    json.dumps(out, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-0.5, 0.5), min_size=1, max_size=60))
def test_metric_invariants(rets: list[float]) -> None:
    eq = 100.0 * np.cumprod(np.r_[1.0, 1.0 + np.asarray(rets)])
    assert 0.0 <= max_drawdown(eq) <= 1.0
    assert total_return(eq) == pytest.approx(np.prod(1.0 + np.asarray(rets)) - 1.0, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(simple_returns(eq), rets, atol=1e-12)
    # a curve that never falls has no drawdown
    assert max_drawdown(np.maximum.accumulate(eq)) == 0.0
