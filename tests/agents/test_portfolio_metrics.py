"""Per-asset metrics and attribution of a portfolio run: hand-computed P&L per asset, the rows
add up to the total return, borrow and liquidation land in the account row."""

from __future__ import annotations

import numpy as np
import pytest
from portfolio_helpers import portfolio, random_walk

from coinrl.agents.portfolio_metrics import (
    account_pnl,
    asset_attribution,
    effective_assets,
    portfolio_metrics,
)
from coinrl.agents.portfolio_rollout import rollout_portfolio

TINY = {"window": 1, "taker_fee_rate": 0.001, "slippage_bps": 0.0, "rebalance_threshold": 0.0,
        "initial_cash_quote": 1000.0, "max_leverage": 1.0, "allow_short": False}


def test_tiny_case_attribution_matches_the_hand_computed_pnl() -> None:
    data = portfolio(open_=[[100.0, 50.0], [100.0, 50.0], [110.0, 45.0]],
                     close=[[100.0, 50.0], [110.0, 45.0], [121.0, 45.0]])
    ro = rollout_portfolio(data, TINY, weights=[[0.4, 0.4], [0.0, 0.5]])
    attr = asset_attribution(ro)
    # A: 4 units ride 100 -> 110 (+40), fees 0.4 + 0.44; sold at the 110 open before the rise to 121
    # B: 8 units ride 50 -> 45 (-40), fees 0.4 + 0.1396; the bigger position is bought at 45, flat bar
    a, b = attr["A0/USD"], attr["A1/USD"]
    assert a["pnl_quote"] == pytest.approx(39.16, rel=1e-12)
    assert b["pnl_quote"] == pytest.approx(-40.5396, rel=1e-12)
    assert a["gross_pnl_quote"] == pytest.approx(40.0, rel=1e-12)
    assert a["fees_quote"] == pytest.approx(0.84, rel=1e-12)
    assert a["contribution"] == pytest.approx(0.03916, rel=1e-12)
    assert a["asset_return"] == pytest.approx(0.21, rel=1e-12)
    assert a["time_in_market"] == pytest.approx(0.5)
    assert attr["account"]["pnl_quote"] == pytest.approx(0.0, abs=1e-9)
    total = sum(v["contribution"] for v in attr.values())
    assert total == pytest.approx(ro.metrics()["total_return"], rel=1e-12)


def test_contributions_add_up_and_costs_are_charged_to_their_asset() -> None:
    data = random_walk(300, 3, seed=8, vol=0.02, funding=True)
    cfg = {"window": 4, "max_leverage": 2.0, "slippage_bps": 3.0,
           "asset_costs": {"A1/USD": {"taker_fee_rate": 0.004}}}
    rng = np.random.default_rng(2)
    ro = rollout_portfolio(data, cfg, weights=rng.uniform(-0.5, 0.5, (296, 3)))
    attr = asset_attribution(ro)
    assert not ro.liquidated
    np.testing.assert_allclose(account_pnl(ro), 0.0, atol=1e-8)
    total = sum(v["contribution"] for v in attr.values())
    assert total == pytest.approx(ro.metrics()["total_return"], rel=1e-10, abs=1e-12)
    for sym, rate in (("A0/USD", 0.001), ("A1/USD", 0.004), ("A2/USD", 0.001)):
        assert attr[sym]["fees_quote"] == pytest.approx(rate * attr[sym]["turnover_quote"], rel=1e-9)
        assert attr[sym]["funding_quote"] != 0.0
    m = portfolio_metrics(ro)
    assert m["attribution_residual_frac"] == pytest.approx(0.0, abs=1e-12)
    assert 1.0 <= m["mean_effective_assets"] <= 3.0


def test_borrow_and_a_liquidation_land_in_the_account_row() -> None:
    # a 3x short of an asset that triples: the account is liquidated at the wick
    o = np.array([[100.0, 100.0], [100.0, 100.0], [100.0, 100.0], [150.0, 100.0], [300.0, 100.0]])
    c = np.array([[100.0, 100.0], [100.0, 100.0], [150.0, 100.0], [300.0, 100.0], [300.0, 100.0]])
    data = portfolio(o, c)
    cfg = {"window": 1, "max_leverage": 3.0, "borrow_rate_per_bar": 0.001, "rebalance_threshold": 0.0}
    ro = rollout_portfolio(data, cfg, weights=np.tile([-2.5, 0.0], (4, 1)))
    assert ro.liquidated
    attr = asset_attribution(ro)
    acct = attr["account"]
    assert acct["borrow_quote"] > 0
    assert acct["pnl_quote"] != pytest.approx(0.0, abs=1e-6)
    total = sum(v["contribution"] for v in attr.values())
    assert total == pytest.approx(ro.metrics()["total_return"], rel=1e-12)


def test_effective_assets_counts_equal_weights_as_n() -> None:
    np.testing.assert_allclose(effective_assets([[0.25] * 4, [1.0, 0, 0, 0], [0, 0, 0, 0]]), [4.0, 1.0, 0.0])

