"""Portfolio risk rules: hand-computed weights per rule with per-asset reasons, the single-asset
rules' answer at A = 1 on random inputs, caps that always hold, and the guard's latched kill."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinrl.envs.risk import RiskConfig, RiskState, check_risk
from coinrl.envs.risk_portfolio import (
    AssetRiskLimits,
    PortfolioRiskConfig,
    PortfolioRiskGuard,
    PortfolioRiskState,
    check_portfolio_risk,
    hold_weights,
)
from coinrl.pipeline.config import validate_config
from coinrl.pipeline.errors import ConfigError

HOUR = 3_600_000
T0 = 1_704_067_200_000 + 10 * HOUR
OFF = PortfolioRiskConfig.permissive()


def only(**kw) -> PortfolioRiskConfig:
    return OFF.model_copy(update=kw)


def state(prices=(100.0, 10.0, 50.0), qty=(0.0, 0.0, 0.0), avg=None, equity=1000.0, **kw) -> PortfolioRiskState:
    base = {
        "now_ms": T0, "bar_ms": HOUR, "last_bar_close_ms": T0, "equity_quote": equity,
        "prices_quote": tuple(prices), "positions_base": tuple(qty),
        "avg_entry_quote": tuple(avg if avg is not None else [0.0] * len(prices)),
        "day_start_equity_quote": 1000.0, "peak_equity_quote": 1000.0,
        "symbols": ("BTC", "ETH", "SOL")[: len(prices)],
    }
    base.update(kw)
    return PortfolioRiskState(**base)


def test_weights_inside_every_limit_pass_unchanged():
    d = check_portfolio_risk([0.3, -0.2, 0.1], state(), PortfolioRiskConfig())
    assert (d.verdict, d.target_weights, d.events) == ("allowed", (0.3, -0.2, 0.1), ())
    assert d.asset_verdicts() == ("allowed", "allowed", "allowed")


def test_gross_leverage_scales_every_weight_by_one_factor():
    # gross 0.9 + 0.6 + 0.5 = 2.0 > 1: every weight halved
    d = check_portfolio_risk([0.9, -0.6, 0.5], state(), only(max_leverage=1.0))
    assert d.target_weights == pytest.approx((0.45, -0.3, 0.25))
    assert d.verdict == "trimmed"
    assert [e.rule for e in d.events] == ["max_leverage"]
    assert all(ev[0].rule == "max_leverage" for ev in d.asset_events)


def test_net_leverage_scales_only_the_side_in_excess():
    # net 0.8 + 0.6 - 0.2 = 1.2 > 0.5: the longs (1.4) scaled by (0.5 + 0.2) / 1.4 = 0.5
    d = check_portfolio_risk([0.8, 0.6, -0.2], state(), only(max_net_leverage=0.5))
    assert d.target_weights == pytest.approx((0.4, 0.3, -0.2))
    assert sum(d.target_weights) == pytest.approx(0.5)
    assert d.asset_verdicts() == ("trimmed", "trimmed", "allowed")
    # the same limit on a net short book scales the shorts
    d = check_portfolio_risk([-0.8, -0.6, 0.2], state(), only(max_net_leverage=0.5))
    assert d.target_weights == pytest.approx((-0.4, -0.3, 0.2))


def test_per_asset_position_caps_in_base_and_quote_with_an_override():
    # equity 1000; BTC at 100, ETH at 10: notional cap 300 -> 0.3 for every asset; ETH's own
    # base cap 20 units -> 20 * 10 / 1000 = 0.2
    cfg = only(max_position_notional_quote=300.0,
               asset_limits={"ETH": AssetRiskLimits(max_position_base=20.0)})
    d = check_portfolio_risk([0.5, -0.5, 0.25], state(), cfg)
    assert d.target_weights == pytest.approx((0.3, -0.2, 0.25))
    assert [e.rule for e in d.asset_events[0]] == ["max_position_notional_quote"]
    assert [e.rule for e in d.asset_events[1]] == ["max_position_base"]
    assert d.asset_events[2] == ()
    assert d.to_dict()["asset_events"].keys() == {"BTC", "ETH"}


def test_concentration_caps_each_weight_keeping_its_side():
    d = check_portfolio_risk([0.7, -0.5, 0.1], state(), only(max_weight=0.4))
    assert d.target_weights == pytest.approx((0.4, -0.4, 0.1))


def test_stop_loss_and_take_profit_force_single_assets_flat_and_skip_the_turnover_cap():
    # BTC long 5 @ 100 now 94 (-6 %, stop 5 %); ETH short 10 @ 10 now 8.5 (+15 %, ETH's own
    # take-profit 10 %); SOL flat. Equity 1000.
    s = state(prices=(94.0, 8.5, 50.0), qty=(5.0, -10.0, 0.0), avg=(100.0, 10.0, 0.0))
    cfg = only(stop_loss_frac=0.05, max_turnover_frac=0.1,
               asset_limits={"ETH": AssetRiskLimits(take_profit_frac=0.1)})
    d = check_portfolio_risk([0.47, -0.085, 0.3], s, cfg)
    assert d.forced_exit == (True, True, False)
    assert d.target_weights[:2] == (0.0, 0.0)
    # SOL's 0.3 is capped by the turnover limit computed over the free assets only: 0.1
    assert d.target_weights[2] == pytest.approx(0.1)
    assert [e.rule for e in d.asset_events[0]] == ["stop_loss"]
    assert [e.rule for e in d.asset_events[1]] == ["take_profit"]
    assert d.asset_verdicts() == ("forced_exit", "forced_exit", "trimmed")


def test_kill_switches_hold_every_weight():
    s = state(qty=(5.0, 0.0, 0.0), avg=(100.0, 0.0, 0.0), equity=700.0, day_start_equity_quote=700.0)
    d = check_portfolio_risk([0.0, 0.0, 0.0], s, only(max_drawdown_frac=0.25))
    assert (d.verdict, d.kill, d.hold) == ("kill", True, True)
    assert d.target_weights == d.current_weights == pytest.approx((500.0 / 700.0, 0.0, 0.0))
    assert d.events[0].rule == "max_drawdown"
    assert check_portfolio_risk([0.1, 0, 0], state(equity=0.0), OFF).events[0].rule == "bankrupt"
    loss = state(equity=880.0, peak_equity_quote=1000.0)
    assert check_portfolio_risk([0.1, 0, 0], loss, only(max_daily_loss_frac=0.1)).kill


def test_stale_data_blocks_the_whole_rebalance():
    d = check_portfolio_risk([0.5, 0.0, 0.0], state(now_ms=T0 + HOUR + 1), PortfolioRiskConfig())
    assert (d.verdict, d.halted, d.target_weights) == ("blocked", True, (0.0, 0.0, 0.0))


def test_turnover_cap_moves_every_weight_toward_the_current_ones():
    # current (0.5, 0, 0) -> proposed (0, 0.5, 0): turnover 1.0, cap 0.5: half way
    s = state(qty=(5.0, 0.0, 0.0), avg=(100.0, 0.0, 0.0))
    d = check_portfolio_risk([0.0, 0.5, 0.0], s, only(max_turnover_frac=0.5))
    assert d.target_weights == pytest.approx((0.25, 0.25, 0.0))


def test_order_notional_trims_each_leg_toward_its_current_weight():
    s = state(qty=(5.0, 0.0, 0.0), avg=(100.0, 0.0, 0.0))
    d = check_portfolio_risk([-0.5, 0.1, 0.0], s, only(max_order_notional_quote=200.0))
    # BTC 0.5 -> -0.5 is a 1000 quote leg: 0.5 - 0.2 = 0.3; ETH's 100 quote leg passes
    assert d.target_weights == pytest.approx((0.3, 0.1, 0.0))


def test_order_rate_blocks_the_rebalance_but_lets_forced_exits_through():
    cfg = only(max_orders_per_window=1, stop_loss_frac=0.05)
    busy = {"recent_order_ts_ms": (T0 - 100,)}
    d = check_portfolio_risk([0.2, 0.2, 0.0], state(**busy), cfg)
    assert (d.verdict, d.target_weights) == ("blocked", (0.0, 0.0, 0.0))
    s = state(prices=(94.0, 10.0, 50.0), qty=(5.0, 0.0, 0.0), avg=(100.0, 0.0, 0.0), **busy)
    d = check_portfolio_risk([0.47, 0.2, 0.0], s, cfg)
    assert d.verdict == "trimmed"
    assert d.target_weights == (0.0, 0.0, 0.0)  # BTC forced out, ETH's new leg blocked
    assert d.asset_verdicts() == ("forced_exit", "blocked", "blocked")
    # wanting the current weights needs no order: nothing to block
    assert check_portfolio_risk([0.0, 0.0, 0.0], state(**busy), cfg).verdict == "allowed"


def test_invalid_proposals_are_blocked_or_refused():
    assert check_portfolio_risk([np.nan, 0.0, 0.0], state(), OFF).verdict == "blocked"
    with pytest.raises(ValueError, match="expected 3 proposed weights"):
        check_portfolio_risk([0.1, 0.2], state(), OFF)


def test_config_is_validated_with_field_paths():
    with pytest.raises(ConfigError, match="max_weight"):
        validate_config(PortfolioRiskConfig, {"asset_limits": {"BTC": {"max_weight": -1}}})
    with pytest.raises(ConfigError, match="unknown key"):
        validate_config(PortfolioRiskConfig, {"max_net_levrage": 1})


@settings(max_examples=300, deadline=None)
@given(
    proposed=st.floats(-5, 5), qty=st.floats(-20, 20), price=st.floats(50, 150),
    cash=st.floats(0, 3000), lev=st.floats(0.1, 3), turn=st.one_of(st.none(), st.floats(0.05, 3)),
    base=st.one_of(st.none(), st.floats(0.5, 30)), notional=st.one_of(st.none(), st.floats(50, 3000)),
    order=st.one_of(st.none(), st.floats(50, 3000)), stop=st.one_of(st.none(), st.floats(0.01, 0.5)),
    recent=st.integers(0, 3),
)
@pytest.mark.slow
def test_one_asset_gets_the_single_asset_rules_answer(
    proposed, qty, price, cash, lev, turn, base, notional, order, stop, recent
):
    equity = cash + qty * price
    kw = {"max_leverage": lev, "max_turnover_frac": turn, "max_position_base": base,
          "max_position_notional_quote": notional, "max_order_notional_quote": order,
          "stop_loss_frac": stop, "max_orders_per_window": 2}
    orders = tuple(T0 - 10 * (j + 1) for j in range(recent))
    single = check_risk(proposed, RiskState(
        now_ms=T0, bar_ms=HOUR, last_bar_close_ms=T0, equity_quote=equity, price_quote=price,
        position_base=qty, avg_entry_quote=100.0 if qty else 0.0,
        day_start_equity_quote=max(equity, 1.0), peak_equity_quote=max(equity, 1.0),
        recent_order_ts_ms=orders), RiskConfig.permissive().model_copy(update=kw))
    many = check_portfolio_risk([proposed], state(
        prices=(price,), qty=(qty,), avg=(100.0 if qty else 0.0,), equity=equity,
        day_start_equity_quote=max(equity, 1.0), peak_equity_quote=max(equity, 1.0),
        recent_order_ts_ms=orders), only(**kw))
    assert many.verdict == single.verdict
    assert many.target_weights[0] == pytest.approx(single.target_exposure, rel=1e-12, abs=1e-12)
    assert many.forced_exit[0] == single.forced_exit
    # the same rules acted; of the position caps, the portfolio applies the per-asset ones
    # before gross leverage, so when several bind it may name another one first
    caps = {"max_leverage", "max_position_base", "max_position_notional_quote"}
    got = {e.rule for e in many.asset_events[0]} | {e.rule for e in many.events}
    want = {e.rule for e in single.events}
    assert got - caps == want - caps
    assert bool(got & caps) == bool(want & caps)


@settings(max_examples=200, deadline=None)
@given(
    w=st.lists(st.floats(-3, 3), min_size=1, max_size=6), gross=st.floats(0.2, 3),
    net=st.floats(0.1, 2), cap=st.floats(0.05, 2),
)
@pytest.mark.slow
def test_position_caps_always_hold_and_never_flip_a_side(w, gross, net, cap):
    a = len(w)
    s = state(prices=(100.0,) * a, qty=(0.0,) * a, avg=(0.0,) * a, symbols=tuple(f"A{i}" for i in range(a)))
    d = check_portfolio_risk(w, s, only(max_leverage=gross, max_net_leverage=net, max_weight=cap))
    t = np.asarray(d.target_weights)
    assert np.abs(t).sum() <= gross + 1e-9
    assert abs(t.sum()) <= net + 1e-9
    assert np.all(np.abs(t) <= cap + 1e-9)
    assert np.all(t * np.asarray(w) >= 0.0)  # trims shrink toward 0, never past it
    assert np.all(np.abs(t) <= np.abs(w) + 1e-12)


def test_guard_latches_the_kill_and_survives_a_restart():
    g = PortfolioRiskGuard(only(max_daily_loss_frac=0.1, max_orders_per_window=5), HOUR, ("BTC", "ETH"))

    def st_(now, eq):
        return g.state(now_ms=now, last_bar_close_ms=now, equity_quote=eq, prices_quote=[100.0, 10.0],
                       positions_base=[0.0, 0.0], avg_entry_quote=[0.0, 0.0])

    assert g.review([0.5, 0.5], st_(T0, 1000.0)).verdict == "allowed"
    g.record_order(T0 + HOUR)
    assert g.review([0.5, 0.5], st_(T0 + HOUR, 880.0)).kill
    assert g.review([0.0, 0.0], st_(T0 + 2 * HOUR, 2000.0)).kill  # latched
    g2 = PortfolioRiskGuard(only(max_daily_loss_frac=0.1), HOUR, ("BTC", "ETH"))
    g2.restore(g.to_dict())
    assert list(g2.guard.order_ts_ms) == [T0 + HOUR]
    d = g2.review([0.1, 0.1], g2.state(now_ms=T0 + 3 * HOUR, last_bar_close_ms=T0 + 3 * HOUR,
                                       equity_quote=2000.0, prices_quote=[100.0, 10.0],
                                       positions_base=[0.0, 0.0], avg_entry_quote=[0.0, 0.0]))
    assert d.kill


def test_hold_weights_keep_every_position():
    w = hold_weights(500.0, [5.0, -10.0], [100.0, 25.0])
    # equity 500 + 500 - 250 = 750
    assert w == pytest.approx([500.0 / 750.0, -250.0 / 750.0])
    assert hold_weights(-10.0, [0.0, 0.0], [1.0, 1.0]).tolist() == [0.0, 0.0]
