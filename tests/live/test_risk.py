"""The risk layer: hand-computed verdicts per rule, invariants over random inputs, the latched
kill-switch and the guard's state across restarts. The same rules in a backtest are tested in
tests/agents/test_backtest_risk.py; the same decision in a backtest and a paper session in
tests/live/test_parity.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinrl.live.risk import (
    RiskConfig,
    RiskGuard,
    RiskState,
    check_risk,
    hold_exposure,
    risk_management,
)
from coinrl.pipeline.errors import ConfigError

HOUR = 3_600_000
T0 = 1_704_067_200_000 + 10 * HOUR


def state(**kw) -> RiskState:
    base = {
        "now_ms": T0, "bar_ms": HOUR, "last_bar_close_ms": T0, "equity_quote": 1000.0,
        "price_quote": 100.0, "position_base": 0.0, "avg_entry_quote": 0.0,
        "day_start_equity_quote": 1000.0, "peak_equity_quote": 1000.0,
    }
    base.update(kw)
    return RiskState(**base)


OFF = RiskConfig.permissive()


def only(**kw) -> RiskConfig:
    return OFF.model_copy(update=kw)


def test_a_proposal_inside_every_limit_is_allowed_unchanged():
    d = check_risk(0.7, state(), RiskConfig())
    assert (d.verdict, d.target_exposure, d.events) == ("allowed", 0.7, ())
    assert risk_management is check_risk


@pytest.mark.parametrize(("proposed", "expected"), [(2.0, 1.0), (-3.0, -1.0), (1.0, 1.0)])
def test_leverage_cap_trims_to_the_limit_keeping_the_side(proposed, expected):
    d = check_risk(proposed, state(), only(max_leverage=1.0))
    assert d.target_exposure == expected
    assert d.verdict == ("allowed" if proposed == expected else "trimmed")


def test_position_caps_in_base_and_quote_units():
    # equity 1000 at price 100: 5 base = 500 quote = exposure 0.5
    d = check_risk(1.0, state(), only(max_position_base=5.0))
    assert d.target_exposure == pytest.approx(0.5)
    assert d.events[0].rule == "max_position_base"
    d = check_risk(-1.0, state(), only(max_position_notional_quote=250.0))
    assert d.target_exposure == pytest.approx(-0.25)


def test_turnover_and_order_notional_trim_toward_the_current_exposure():
    long_one = state(position_base=10.0, avg_entry_quote=100.0, equity_quote=1000.0)  # exposure 1
    d = check_risk(-1.0, long_one, only(max_turnover_frac=0.25))
    assert d.current_exposure == pytest.approx(1.0)
    assert d.target_exposure == pytest.approx(0.75)
    d = check_risk(1.0, state(), only(max_order_notional_quote=300.0))
    assert d.target_exposure == pytest.approx(0.3)


@pytest.mark.parametrize(("equity", "verdict"), [(899.0, "kill"), (901.0, "allowed")])
def test_daily_loss_kill_switch(equity, verdict):
    d = check_risk(0.5, state(equity_quote=equity, peak_equity_quote=1000.0),
                   only(max_daily_loss_frac=0.1))
    assert d.verdict == verdict
    if verdict == "kill":
        assert (d.kill, d.hold, d.target_exposure) == (True, True, d.current_exposure)
        assert d.events[0].rule == "max_daily_loss"


def test_drawdown_and_bankruptcy_kill():
    d = check_risk(0.5, state(equity_quote=700.0, day_start_equity_quote=700.0,
                              peak_equity_quote=1000.0), only(max_drawdown_frac=0.25))
    assert d.kill
    assert d.events[0].rule == "max_drawdown"
    assert check_risk(0.5, state(equity_quote=0.0), OFF).events[0].rule == "bankrupt"


def test_stale_data_and_clock_skew_halt_without_an_order():
    stale = state(now_ms=T0 + HOUR + 1)  # the newest candle closed over one bar ago
    d = check_risk(1.0, stale, RiskConfig())
    assert (d.verdict, d.halted, d.hold, d.target_exposure) == ("blocked", True, True, 0.0)
    assert d.events[0].rule == "stale_data"
    assert check_risk(1.0, state(now_ms=T0 + HOUR), RiskConfig()).verdict == "allowed"
    skewed = state(clock_skew_ms=-2500.0)
    assert check_risk(1.0, skewed, RiskConfig()).events[0].rule == "clock_skew"
    assert check_risk(1.0, state(clock_skew_ms=None), RiskConfig()).verdict == "allowed"


@pytest.mark.parametrize(
    ("qty", "price", "rule"),
    [(10.0, 94.0, "stop_loss"), (-10.0, 106.0, "stop_loss"), (10.0, 112.0, "take_profit"),
     (-10.0, 88.0, "take_profit")],
)
def test_stop_loss_and_take_profit_force_a_flat_target(qty, price, rule):
    cfg = only(stop_loss_frac=0.05, take_profit_frac=0.1, max_turnover_frac=0.1,
               max_orders_per_window=1)
    s = state(position_base=qty, avg_entry_quote=100.0, price_quote=price,
              equity_quote=1000.0, recent_order_ts_ms=(T0 - 1,))
    d = check_risk(float(np.sign(qty)), s, cfg)
    # forced exits pass the turnover cap and the exhausted order-rate limit
    assert (d.target_exposure, d.forced_exit, d.verdict) == (0.0, True, "trimmed")
    assert d.events[0].rule == rule


def test_order_rate_limit_counts_only_orders_inside_the_window():
    cfg = only(max_orders_per_window=2, order_window_ms=HOUR)
    busy = state(recent_order_ts_ms=(T0 - 100, T0 - 50))
    d = check_risk(0.5, busy, cfg)
    assert (d.verdict, d.target_exposure) == ("blocked", 0.0)
    assert d.events[0].rule == "max_orders_per_window"
    old = state(recent_order_ts_ms=(T0 - HOUR, T0 - 50))  # the first one left the window
    assert check_risk(0.5, old, cfg).verdict == "allowed"
    # no order needed (target == current): nothing to block
    assert check_risk(0.0, busy, cfg).verdict == "allowed"


def test_a_non_finite_target_is_blocked():
    assert check_risk(float("nan"), state(), OFF).verdict == "blocked"


def test_config_is_validated_with_field_paths():
    from coinrl.pipeline.config import validate_config

    with pytest.raises(ConfigError, match="max_daily_loss_frac"):
        validate_config(RiskConfig, {"max_daily_loss_frac": 5})
    with pytest.raises(ConfigError, match="unknown key"):
        validate_config(RiskConfig, {"max_levrage": 1})


@settings(max_examples=300, deadline=None)
@given(
    proposed=st.floats(-5, 5), qty=st.floats(-20, 20), price=st.floats(50, 150),
    cash=st.floats(0, 3000), lev=st.floats(0.1, 3), turn=st.floats(0.05, 3),
)
@pytest.mark.slow
def test_trims_never_exceed_a_cap_and_stay_between_current_and_proposed(
    proposed, qty, price, cash, lev, turn
):
    equity = cash + qty * price
    s = state(position_base=qty, price_quote=price, equity_quote=equity,
              avg_entry_quote=100.0 if qty else 0.0, day_start_equity_quote=max(equity, 1.0),
              peak_equity_quote=max(equity, 1.0))
    cfg = only(max_leverage=lev, max_turnover_frac=turn)
    d = check_risk(proposed, s, cfg)
    assert d == check_risk(proposed, s, cfg)  # pure
    if d.verdict in ("kill", "blocked"):
        assert d.target_exposure == d.current_exposure
        return
    capped = min(max(proposed, -lev), lev)
    lo, hi = sorted((d.current_exposure, capped))
    assert lo - 1e-9 <= d.target_exposure <= hi + 1e-9  # never past the capped proposal
    assert abs(d.target_exposure - d.current_exposure) <= turn + 1e-9
    if abs(d.target_exposure) > lev + 1e-9:  # only the turnover cap can keep it above the cap
        assert abs(d.target_exposure) < abs(d.current_exposure)


def test_guard_latches_the_kill_and_tracks_day_and_peak():
    g = RiskGuard(only(max_daily_loss_frac=0.1), HOUR)
    s = g.state(now_ms=T0, last_bar_close_ms=T0, equity_quote=1000.0, price_quote=100.0,
                position_base=0.0, avg_entry_quote=0.0)
    assert g.review(1.0, s).verdict == "allowed"
    s = g.state(now_ms=T0 + HOUR, last_bar_close_ms=T0 + HOUR, equity_quote=880.0,
                price_quote=100.0, position_base=0.0, avg_entry_quote=0.0)
    assert g.review(1.0, s).kill
    s = g.state(now_ms=T0 + 2 * HOUR, last_bar_close_ms=T0 + 2 * HOUR, equity_quote=2000.0,
                price_quote=100.0, position_base=0.0, avg_entry_quote=0.0)
    assert g.review(0.0, s).kill  # latched, even though equity recovered
    assert g.peak_equity_quote == 2000.0
    # a new UTC day takes a new opening equity
    g2 = RiskGuard(RiskConfig(), HOUR)
    g2.mark(T0, 1000.0)
    next_day = (T0 // 86_400_000 + 1) * 86_400_000
    g2.mark(next_day - 1, 900.0)
    assert g2.day_start_equity_quote == 1000.0
    g2.mark(next_day, 950.0)
    assert g2.day_start_equity_quote == 950.0


def test_guard_state_survives_a_restart():
    g = RiskGuard(RiskConfig(max_orders_per_window=3), HOUR)
    g.mark(T0, 1000.0)
    g.mark(T0 + HOUR, 1200.0)
    g.record_order(T0 + HOUR // 2)
    g.record_order(T0 + HOUR)
    g2 = RiskGuard(RiskConfig(max_orders_per_window=3), HOUR)
    g2.restore(g.to_dict())
    assert (g2.peak_equity_quote, g2.day_start_equity_quote, list(g2.order_ts_ms)) == (
        1200.0, 1000.0, [T0 + HOUR // 2, T0 + HOUR])


def test_old_orders_leave_the_guard_window():
    g = RiskGuard(RiskConfig(order_window_ms=HOUR), HOUR)
    g.record_order(T0)
    g.record_order(T0 + 2 * HOUR)
    assert list(g.order_ts_ms) == [T0 + 2 * HOUR]


def test_hold_exposure_gives_back_the_position():
    assert hold_exposure(500.0, 5.0, 100.0) == pytest.approx(0.5)
    assert hold_exposure(500.0, 0.0, 100.0) == 0.0
    assert dataclasses.is_dataclass(state())
