"""Trading metrics on an equity curve: pure numpy, no env, no pandas.

Conventions (shared by evaluation, baselines and the backtester):

* ``equity`` has ``T + 1`` marks in quote currency: ``equity[0]`` before the first bar is
  played, ``equity[t]`` at bar t's close. Bar ``t``'s simple return is
  ``equity[t] / equity[t - 1] - 1`` (a fraction, never percent).
* ``exposure`` has the same ``T + 1`` length: position notional / equity at each mark
  (``exposure[0]`` is the position held before the first bar, usually 0). The position held
  *during* bar ``t`` is the one at its close, ``exposure[t]`` (fills happen at the open).
* Annualisation uses ``periods_per_year`` bars a year; crypto trades every day, so use
  :func:`coinrl.pipeline.timeframes.bars_per_year` (365-day years), e.g. 8,760 for ``1h``.
* Annualised *growth* figures (``annualised_return`` and ``calmar``) are reported only when the
  sample covers at least :data:`MIN_ANNUALISE_YEARS` of a year (0.25: 2,190 hourly bars, 91
  daily bars; :func:`can_annualise`); below that they are ``nan`` (shown as "n/a (short
  sample)"), because compounding a few bars to a year turns +2 % in 14 hours into +459,821 %.
  ``short_sample`` is then 1.0 and reports and verdicts flag the sample as small. Sharpe,
  Sortino and volatility scale with ``sqrt(periods_per_year)`` and stay, flagged the same way.
* Degenerate cases never raise: a ratio with a zero denominator is ``0.0`` when its numerator
  is ``<= 0`` and ``inf`` when it is ``> 0``; a statistic of an empty set (win rate without
  trades) is ``nan``. :func:`json_safe` turns non-finite values into ``None`` for JSON.

A *trade* is a maximal run of bars holding a position of one sign (long or short). Its return
is the equity change from the mark before its first bar to the close of its last bar, plus
the exit bar when the position is closed to flat (the exit fill's gap and fee land in that
bar); when the position flips, the exit fee falls into the next trade's first bar.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from coinrl.pipeline.errors import DataError

F64 = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike


MIN_ANNUALISE_YEARS = 0.25
"""Shortest sample (in years of bars) whose growth is annualised (see :func:`can_annualise`)."""


def sample_years(n_bars: float, periods_per_year: float) -> float:
    """Length of a sample of ``n_bars`` bars in years (``periods_per_year`` bars a year)."""
    return float(n_bars) / float(periods_per_year) if periods_per_year > 0 else 0.0


def can_annualise(n_bars: float, periods_per_year: float) -> bool:
    """Whether ``n_bars`` bars are enough to annualise growth: at least
    :data:`MIN_ANNUALISE_YEARS` of a year (e.g. 2,190 hourly bars)."""
    return sample_years(n_bars, periods_per_year) >= MIN_ANNUALISE_YEARS - 1e-12


def _equity(equity: ArrayLike) -> F64:
    eq = np.asarray(equity, dtype=np.float64)
    if eq.ndim != 1 or len(eq) < 1:
        raise DataError(f"equity must be a 1-D array with at least one mark, got shape {eq.shape}")
    if not np.isfinite(eq).all():
        raise DataError("equity holds NaN/inf; pass the marks of a finished simulation")
    if eq[0] <= 0:
        raise DataError(f"equity must start > 0 (initial capital), got {eq[0]!r}")
    return eq


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return math.inf if num > 0 else 0.0


def simple_returns(equity: ArrayLike) -> F64:
    """Per-bar simple returns ``equity[t] / equity[t-1] - 1`` (length ``T``).

    A mark after equity reached zero has return ``-1`` once and ``0`` afterwards.
    """
    eq = _equity(equity)
    prev = eq[:-1]
    return np.divide(eq[1:], prev, out=np.ones(len(prev)), where=prev > 0) - 1.0


def total_return(equity: ArrayLike) -> float:
    """``equity[-1] / equity[0] - 1`` as a fraction."""
    eq = _equity(equity)
    return float(eq[-1] / eq[0] - 1.0)


def annualised_return(equity: ArrayLike, periods_per_year: float) -> float:
    """Compound annual growth rate: ``(equity[-1] / equity[0]) ** (periods_per_year / T) - 1``.

    ``T`` is the number of bars (``len(equity) - 1``); ``-1`` when equity ended at or below 0.
    """
    eq = _equity(equity)
    n = len(eq) - 1
    if n == 0:
        return 0.0
    growth = eq[-1] / eq[0]
    if growth <= 0:
        return -1.0
    return float(math.exp(math.log(growth) * periods_per_year / n) - 1.0)


def annualised_volatility(returns: ArrayLike, periods_per_year: float) -> float:
    """Sample standard deviation (ddof=1) of per-bar returns times ``sqrt(periods_per_year)``."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 2:
        return 0.0
    return float(r.std(ddof=1) * math.sqrt(periods_per_year))


def sharpe_ratio(returns: ArrayLike, periods_per_year: float, risk_free_rate: float = 0.0) -> float:
    """Annualised Sharpe ratio ``mean(r - rf) / std(r) * sqrt(periods_per_year)``.

    Args:
        returns: per-bar simple returns (fractions).
        periods_per_year: bars per year.
        risk_free_rate: annual risk-free rate (fraction), spread evenly over the bars.
    """
    r = np.asarray(returns, dtype=np.float64) - risk_free_rate / periods_per_year
    if len(r) < 2:
        return 0.0
    sd = float(r.std(ddof=1))
    m = float(r.mean())
    if sd <= 1e-15 * max(1.0, abs(m)):  # constant returns: no risk to divide by
        return _ratio(m, 0.0)
    return m / sd * math.sqrt(periods_per_year)


def sortino_ratio(returns: ArrayLike, periods_per_year: float, target: float = 0.0) -> float:
    """Annualised Sortino ratio: ``mean(r - target) / DD * sqrt(periods_per_year)``.

    ``DD = sqrt(mean(min(r - target, 0)^2))`` over all bars (the downside deviation).
    """
    r = np.asarray(returns, dtype=np.float64) - target
    if len(r) == 0:
        return 0.0
    dd = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    m = float(r.mean())
    return m / dd * math.sqrt(periods_per_year) if dd > 0 else _ratio(m, 0.0)


def drawdown(equity: ArrayLike) -> F64:
    """Drawdown at each mark: ``1 - equity / running peak`` (fractions in ``[0, 1]``)."""
    eq = _equity(equity)
    peak = np.maximum.accumulate(eq)
    return np.asarray(1.0 - eq / peak, dtype=np.float64)


def max_drawdown(equity: ArrayLike) -> float:
    """Largest peak-to-trough loss as a positive fraction (0.25 = a 25 % drawdown)."""
    return float(drawdown(equity).max())


def max_drawdown_duration_bars(equity: ArrayLike) -> int:
    """Longest time under water: the most consecutive marks below the running peak (bars).

    A curve that falls for 3 bars and needs 2 more to get back to its peak has a duration of
    5; one that never recovers counts up to its last mark. 0 for a curve that never falls.
    """
    return _under_water_bars(drawdown(equity))


def _under_water_bars(dd: F64) -> int:
    """Longest run of marks with a positive drawdown (see :func:`max_drawdown_duration_bars`)."""
    under = dd > 0.0
    if not under.any():
        return 0
    # lengths of the runs of True: positions of run ends minus run starts
    edges = np.diff(np.concatenate([[0], under.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    return int((stops - starts).max())


def calmar_ratio(equity: ArrayLike, periods_per_year: float) -> float:
    """Annualised return over max drawdown."""
    return _ratio(annualised_return(equity, periods_per_year), max_drawdown(equity))


def trade_spans(exposure: ArrayLike) -> list[tuple[int, int]]:
    """Bar ranges ``[first, last]`` (inclusive, mark indices >= 1) of each trade.

    A trade is a maximal run of marks ``t >= 1`` whose exposure has one non-zero sign.
    """
    x = np.sign(np.asarray(exposure, dtype=np.float64))
    if len(x) < 2:
        return []
    s = x[1:]
    spans: list[tuple[int, int]] = []
    change = np.flatnonzero(np.diff(s) != 0) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(s)]])
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        if s[a] != 0:
            spans.append((a + 1, b))
    return spans


def trade_returns(equity: ArrayLike, exposure: ArrayLike) -> F64:
    """Return of each trade (fraction), see the module docstring for what a trade spans."""
    eq = _equity(equity)
    x = np.sign(np.asarray(exposure, dtype=np.float64))
    if x.shape != eq.shape:
        raise DataError(f"exposure has shape {x.shape}, equity {eq.shape}; they must match")
    out = []
    last = len(eq) - 1
    for a, b in trade_spans(x):
        end = b + 1 if b < last and x[b + 1] == 0 else b
        out.append(eq[end] / eq[a - 1] - 1.0 if eq[a - 1] > 0 else 0.0)
    return np.asarray(out, dtype=np.float64)


def win_rate(trade_rets: ArrayLike) -> float:
    """Fraction of trades with a positive return (``nan`` without trades)."""
    r = np.asarray(trade_rets, dtype=np.float64)
    return float((r > 0).mean()) if len(r) else math.nan


def profit_factor(trade_rets: ArrayLike) -> float:
    """Sum of winning trade returns over the absolute sum of losing ones (``nan`` w/o trades)."""
    r = np.asarray(trade_rets, dtype=np.float64)
    if len(r) == 0:
        return math.nan
    return _ratio(float(r[r > 0].sum()), float(-r[r < 0].sum()))


def average_trade_return(trade_rets: ArrayLike) -> float:
    """Mean return of the trades (fraction; ``nan`` without trades)."""
    r = np.asarray(trade_rets, dtype=np.float64)
    return float(r.mean()) if len(r) else math.nan


def trading_metrics(
    equity: ArrayLike,
    exposure: ArrayLike,
    periods_per_year: float,
    *,
    fees_paid_quote: float = 0.0,
    slippage_paid_quote: float = 0.0,
    turnover_quote: float = 0.0,
) -> dict[str, float]:
    """All trading metrics of one equity curve.

    Args:
        equity: ``T + 1`` equity marks (quote currency).
        exposure: ``T + 1`` exposures (position notional / equity) at the same marks.
        periods_per_year: bars a year (``bars_per_year(timeframe)``).
        fees_paid_quote: exchange fees paid over the run (quote currency).
        slippage_paid_quote: slippage and impact paid over the run (quote currency).
        turnover_quote: traded notional over the run (quote currency).

    Returns:
        ``total_return``, ``annualised_return``, ``annualised_volatility``, ``sharpe``,
        ``sortino``, ``max_drawdown``, ``max_drawdown_duration_bars`` (longest run of marks
        under the running peak), ``calmar``, ``win_rate``, ``profit_factor``,
        ``avg_trade_return`` (mean trade return), ``n_trades``, ``turnover`` (traded notional / mean equity), ``exposure`` (mean
        ``|exposure|`` over the bars), ``time_in_market`` (fraction of bars holding a
        position), ``fees_paid_quote``, ``slippage_paid_quote``, ``costs_frac`` (fees plus
        slippage over initial equity), ``final_equity_quote``, ``n_bars``, ``sample_years``
        and ``short_sample`` (1.0 when the sample is too short to annualise: then
        ``annualised_return`` and ``calmar`` are ``nan``, see :func:`can_annualise`).
    """
    eq = _equity(equity)
    x = np.asarray(exposure, dtype=np.float64)
    if x.shape != eq.shape:
        raise DataError(f"exposure has shape {x.shape}, equity {eq.shape}; they must match")
    r = simple_returns(eq)
    tr = trade_returns(eq, x)
    held = x[1:]
    dd = drawdown(eq)  # once: max drawdown, its duration and Calmar all read it
    max_dd = float(dd.max())
    n_bars = len(eq) - 1
    enough = can_annualise(n_bars, periods_per_year)
    ann = annualised_return(eq, periods_per_year) if enough else math.nan
    return {
        "total_return": total_return(eq),
        "annualised_return": ann,
        "annualised_volatility": annualised_volatility(r, periods_per_year),
        "sharpe": sharpe_ratio(r, periods_per_year),
        "sortino": sortino_ratio(r, periods_per_year),
        "max_drawdown": max_dd,
        "max_drawdown_duration_bars": float(_under_water_bars(dd)),
        "calmar": _ratio(ann, max_dd) if enough else math.nan,
        "win_rate": win_rate(tr),
        "profit_factor": profit_factor(tr),
        "avg_trade_return": average_trade_return(tr),
        "n_trades": float(len(tr)),
        "turnover": float(turnover_quote / eq.mean()),
        "exposure": float(np.abs(held).mean()) if len(held) else 0.0,
        "time_in_market": float((held != 0).mean()) if len(held) else 0.0,
        "fees_paid_quote": float(fees_paid_quote),
        "slippage_paid_quote": float(slippage_paid_quote),
        "costs_frac": float((fees_paid_quote + slippage_paid_quote) / eq[0]),
        "final_equity_quote": float(eq[-1]),
        "n_bars": float(n_bars),
        "sample_years": sample_years(n_bars, periods_per_year),
        "short_sample": 0.0 if enough else 1.0,
    }


def json_safe(obj: Any) -> Any:
    """A copy of nested dicts/lists with numpy scalars as Python numbers and nan/inf as None."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


__all__ = [
    "MIN_ANNUALISE_YEARS",
    "annualised_return",
    "annualised_volatility",
    "average_trade_return",
    "calmar_ratio",
    "can_annualise",
    "drawdown",
    "json_safe",
    "max_drawdown",
    "max_drawdown_duration_bars",
    "profit_factor",
    "sample_years",
    "sharpe_ratio",
    "simple_returns",
    "sortino_ratio",
    "total_return",
    "trade_returns",
    "trade_spans",
    "trading_metrics",
    "win_rate",
]
