"""The quant's tear sheet of a backtest: round trips, calendar returns, drawdowns, tail risk,
and the strategy against buy-and-hold.

Everything here is computed from the two tables a report folder stores (the equity frame and
the fills), so a saved report can be redrawn without the strategy:

* :func:`round_trips`: one row per trade (entry, exit, side, prices, PnL after costs, return,
  duration, fees) and :func:`trade_summary` (win rate, average win and loss, best and worst,
  average holding time, long vs short). A trade is what
  :func:`~coinrl.agents.metrics.trade_spans` calls one (a run of marks holding one sign), so
  its returns are exactly :func:`~coinrl.agents.metrics.trade_returns`.
* Calendar returns (:func:`monthly_returns`), the worst drawdowns with their dates and
  recovery (:func:`worst_drawdowns`), value at risk and conditional value at risk
  (:func:`tail_risk`), alpha, beta and the information ratio against buy-and-hold
  (:func:`benchmark_stats`) come from QuantStats, a well-kept library, on the same bar returns
  (its Sharpe, volatility and drawdown agree with :mod:`coinrl.agents.metrics` to 1e-9, checked
  in ``tests/agents/test_report.py``). QuantStats is imported lazily (it pulls seaborn and
  scipy).

Times are UTC; QuantStats gets tz-naive UTC indexes (it compares them with naive ones).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .metrics import trade_spans

if TYPE_CHECKING:
    import pandas as pd

TRADE_COLUMNS = (
    "entry_ts_ms", "exit_ts_ms", "side", "entry_price_quote", "exit_price_quote", "pnl_quote",
    "return", "bars", "duration_hours", "fees_quote", "closed",
)
"""Columns of :func:`round_trips`."""

VAR_LEVEL = 0.95
"""Confidence level of :func:`tail_risk`'s value at risk."""

N_WORST_DRAWDOWNS = 5


def _returns_series(equity: pd.DataFrame, column: str = "equity_quote") -> pd.Series:
    """Per-bar simple returns of an equity column, indexed by tz-naive UTC bar times."""
    import pandas as pd

    eq = equity[column].to_numpy(dtype=np.float64)
    prev = eq[:-1]
    r = np.divide(eq[1:], prev, out=np.ones(len(prev)), where=prev > 0) - 1.0
    idx = pd.to_datetime(equity["ts_ms"].to_numpy()[1:], unit="ms")
    return pd.Series(r, index=idx, name=column)


def round_trips(equity: pd.DataFrame, fills: pd.DataFrame) -> pd.DataFrame:
    """Every round trip of a run.

    A trade opens with the fill at the open of its first marked bar and closes with the fill
    that takes the position to flat (or flips it); one still open at the end is marked to the
    last close (``closed`` False). ``pnl_quote`` is the equity change over the trade after
    fees and slippage (the same span as :func:`~coinrl.agents.metrics.trade_returns`: when a
    position flips, its exit costs land in the next trade), ``return`` that change over the
    equity before it, ``fees_quote`` the fees of the fills inside the span.

    Args:
        equity: the equity frame (``ts_ms``, ``close_quote``, ``equity_quote``, ``exposure``).
        fills: the fills (``ts_ms``, ``price_quote``, ``fee_quote``).

    Returns:
        A DataFrame with :data:`TRADE_COLUMNS`, one row per trade, in time order.
    """
    import pandas as pd

    ts = equity["ts_ms"].to_numpy(dtype=np.int64)
    eq = equity["equity_quote"].to_numpy(dtype=np.float64)
    x = np.sign(equity["exposure"].to_numpy(dtype=np.float64))
    close = equity["close_quote"].to_numpy(dtype=np.float64)
    fill_price = dict(zip(fills["ts_ms"].astype(np.int64).tolist(), fills["price_quote"].tolist(), strict=False))
    fee_at = fills.groupby(fills["ts_ms"].astype(np.int64))["fee_quote"].sum() if len(fills) else None
    last = len(eq) - 1
    rows = []
    for a, b in trade_spans(x):
        closed = b < last
        flat_exit = closed and x[b + 1] == 0
        end = b + 1 if flat_exit else b
        exit_ts = int(ts[b + 1]) if closed else int(ts[b])
        pnl = float(eq[end] - eq[a - 1])
        fees = 0.0
        if fee_at is not None:
            span = fee_at[(fee_at.index >= ts[a]) & (fee_at.index <= ts[end])]
            fees = float(span.sum())
        rows.append({
            "entry_ts_ms": int(ts[a]),
            "exit_ts_ms": exit_ts,
            "side": "long" if x[a] > 0 else "short",
            "entry_price_quote": float(fill_price.get(int(ts[a]), math.nan)),
            "exit_price_quote": float(fill_price.get(exit_ts, math.nan)) if closed else float(close[b]),
            "pnl_quote": pnl,
            "return": pnl / float(eq[a - 1]) if eq[a - 1] > 0 else 0.0,
            "bars": int(end - a + 1),
            "duration_hours": (exit_ts - int(ts[a])) / 3_600_000.0,
            "fees_quote": fees,
            "closed": bool(closed),
        })
    return pd.DataFrame(rows, columns=list(TRADE_COLUMNS))


def trade_summary(trades: pd.DataFrame) -> dict[str, float]:
    """Summary of :func:`round_trips`: counts, win rate, average win and loss (quote and
    return), best and worst trade, average holding time, and the same per side.

    Returns:
        ``n_trades``, ``win_rate``, ``avg_win_quote``, ``avg_loss_quote``,
        ``avg_win_return``, ``avg_loss_return``, ``payoff_ratio`` (average win over average
        loss), ``best_return``, ``worst_return``, ``avg_holding_hours``, ``total_pnl_quote``,
        ``total_fees_quote``, and for ``long``/``short``: ``<side>_n``, ``<side>_win_rate``,
        ``<side>_pnl_quote``. Statistics of an empty set are nan.
    """
    nan = math.nan
    out: dict[str, float] = {"n_trades": float(len(trades))}
    if len(trades) == 0:
        return out
    pnl = trades["pnl_quote"].to_numpy(dtype=np.float64)
    ret = trades["return"].to_numpy(dtype=np.float64)
    win, loss = ret > 0, ret <= 0
    out.update({
        "win_rate": float(win.mean()),
        "avg_win_quote": float(pnl[win].mean()) if win.any() else nan,
        "avg_loss_quote": float(pnl[loss].mean()) if loss.any() else nan,
        "avg_win_return": float(ret[win].mean()) if win.any() else nan,
        "avg_loss_return": float(ret[loss].mean()) if loss.any() else nan,
        "best_return": float(ret.max()),
        "worst_return": float(ret.min()),
        "avg_holding_hours": float(trades["duration_hours"].mean()),
        "total_pnl_quote": float(pnl.sum()),
        "total_fees_quote": float(trades["fees_quote"].sum()),
    })
    aw, al = out["avg_win_quote"], out["avg_loss_quote"]
    out["payoff_ratio"] = aw / -al if win.any() and loss.any() and al < 0 else nan
    for side in ("long", "short"):
        sel = (trades["side"] == side).to_numpy()
        out[f"{side}_n"] = float(sel.sum())
        out[f"{side}_win_rate"] = float(win[sel].mean()) if sel.any() else nan
        out[f"{side}_pnl_quote"] = float(pnl[sel].sum())
    return out


def monthly_returns(equity: pd.DataFrame) -> pd.DataFrame:
    """Compounded returns per calendar month (UTC), one row per year, columns ``JAN``..``DEC``
    and ``EOY`` (the year's return), as fractions (QuantStats ``monthly_returns``). Months
    outside the sample are NaN (not 0)."""
    import pandas as pd
    import quantstats as qs

    r = _returns_series(equity)
    table = qs.stats.monthly_returns(r, eoy=True, compounded=True)
    when = pd.DatetimeIndex(r.index)
    months = r.groupby([when.year, when.month]).size()
    for col_i, col in enumerate(table.columns[:12], start=1):
        for year in table.index:
            if (int(year), col_i) not in months.index:
                table.loc[year, col] = np.nan
    return table.astype(float)


def worst_drawdowns(equity: pd.DataFrame, n: int = N_WORST_DRAWDOWNS) -> pd.DataFrame:
    """The ``n`` deepest drawdowns: ``start``, ``valley``, ``end`` (the recovery date, or the
    last date when not recovered), ``days``, ``max_drawdown`` (a positive fraction) and
    ``recovered`` (QuantStats ``drawdown_details``)."""
    import pandas as pd
    import quantstats as qs

    r = _returns_series(equity)
    dd = qs.stats.to_drawdown_series(r)
    cols = ["start", "valley", "end", "days", "max_drawdown", "recovered"]
    if not (dd < 0).any():
        return pd.DataFrame(columns=cols)
    if dd.iloc[0] < 0:  # under water from the first bar: QuantStats finds a drawdown's start
        # only after a 0, so start from the initial equity's mark (the first bar's open)
        start = pd.Series([0.0], index=pd.to_datetime(equity["ts_ms"].to_numpy()[:1], unit="ms"))
        dd = pd.concat([start, dd])
    det = qs.stats.drawdown_details(dd).reset_index(drop=True)
    # only the chronologically last drawdown can still be open (rows come in time order; their
    # dates are days, so on intraday bars several drawdowns share the open one's start date)
    det["open"] = False
    if len(det) and bool(dd.iloc[-1] < 0):
        det.loc[len(det) - 1, "open"] = True
    det = det.sort_values("max drawdown").head(n)
    out = pd.DataFrame({
        "start": det["start"].astype(str),
        "valley": det["valley"].astype(str),
        "end": det["end"].astype(str),
        "days": det["days"].astype(int),
        "max_drawdown": -det["max drawdown"].astype(float) / 100.0,
    })
    out["recovered"] = ~det["open"].to_numpy(dtype=bool)
    return out.reset_index(drop=True)


def tail_risk(equity: pd.DataFrame, level: float = VAR_LEVEL) -> dict[str, float]:
    """Value at risk and conditional value at risk (expected shortfall) of the bar returns and
    of the daily returns, at ``level`` (QuantStats, variance-covariance VaR and historical
    CVaR), as fractions of equity (negative: a loss).

    Returns:
        ``var_bar``, ``cvar_bar``, ``var_daily``, ``cvar_daily``, ``level``, ``skew``,
        ``kurtosis`` (excess) of the bar returns.
    """
    import quantstats as qs

    r = _returns_series(equity)
    daily = (1.0 + r).resample("1D").prod() - 1.0
    out = {"level": float(level)}
    if len(r) < 2:
        return out
    stats: Any = qs.stats
    out["var_bar"] = float(stats.value_at_risk(r, confidence=level))
    out["cvar_bar"] = float(stats.cvar(r, confidence=level))
    if len(daily) >= 2:
        out["var_daily"] = float(stats.value_at_risk(daily, confidence=level))
        out["cvar_daily"] = float(stats.cvar(daily, confidence=level))
    moments: Any = r
    out["skew"] = float(moments.skew())
    out["kurtosis"] = float(moments.kurt())
    return out


def benchmark_stats(equity: pd.DataFrame, periods_per_year: float, benchmark: str = "buy_and_hold") -> dict[str, float]:
    """Alpha (annualised), beta, correlation and information ratio of the strategy's bar
    returns against a baseline's (QuantStats ``greeks`` and ``information_ratio``).

    Returns:
        ``alpha``, ``beta``, ``correlation``, ``information_ratio`` (per bar, as QuantStats
        defines it: mean active return over its std) and ``information_ratio_annualised``
        (times ``sqrt(periods_per_year)``); empty without the baseline's column.
    """
    import quantstats as qs

    col = f"baseline_{benchmark}_equity_quote"
    if col not in equity.columns or len(equity) < 3:
        return {}
    r = _returns_series(equity)
    b = _returns_series(equity, col)
    greeks = qs.stats.greeks(r, b, periods=periods_per_year)
    ir = float(qs.stats.information_ratio(r, b))
    return {
        "alpha": float(greeks["alpha"]),
        "beta": float(greeks["beta"]),
        "correlation": float(np.corrcoef(r, b)[0, 1]) if r.std() > 0 and b.std() > 0 else math.nan,
        "information_ratio": ir,
        "information_ratio_annualised": ir * math.sqrt(periods_per_year),
    }


def tearsheet(equity: pd.DataFrame, fills: pd.DataFrame, periods_per_year: float) -> dict[str, Any]:
    """Every part of the tear sheet: ``trades`` (DataFrame), ``trade_summary``,
    ``monthly`` (DataFrame), ``drawdowns`` (DataFrame), ``tail`` and ``benchmark``."""
    trades = round_trips(equity, fills)
    return {
        "trades": trades,
        "trade_summary": trade_summary(trades),
        "monthly": monthly_returns(equity),
        "drawdowns": worst_drawdowns(equity),
        "tail": tail_risk(equity),
        "benchmark": benchmark_stats(equity, periods_per_year),
    }


__all__ = [
    "N_WORST_DRAWDOWNS",
    "TRADE_COLUMNS",
    "VAR_LEVEL",
    "benchmark_stats",
    "monthly_returns",
    "round_trips",
    "tail_risk",
    "tearsheet",
    "trade_summary",
    "worst_drawdowns",
]
