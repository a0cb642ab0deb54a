"""Figures of an evaluation and of a backtest.

* :func:`equity_curve_figure`: agent and baselines of an evaluation (matplotlib).
* :func:`backtest_figure` (matplotlib, Agg: no display needed) and :func:`backtest_plotly`
  (interactive): five panels sharing the time axis: price with entries and exits, position
  (exposure), equity against the baselines, drawdown, rolling Sharpe ratio.
* :func:`plot_backtest_results`: both, written as ``backtest.png`` and a self-contained
  ``backtest.html`` (plotly.js embedded, works offline).

The backtest figures are drawn from the two tables a report folder stores (the equity frame
of :meth:`~coinrl.agents.backtest.BacktestResult.equity_frame` and the fills), so a saved
report can be redrawn without the strategy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import pandas as pd

    from .backtest import BacktestResult
    from .evaluate import EvaluationReport

AGENT_COLOR = "#1f77b4"
"""Colour of the strategy's equity line (only there, so a rendered chart can be found)."""
PRICE_COLOR = "#444444"
POSITION_COLOR = "#9467bd"
DRAWDOWN_COLOR = "#d62728"
SHARPE_COLOR = "#8c564b"
BUY_COLOR = "#2ca02c"
SELL_COLOR = "#d62728"
BASELINE_COLORS = {
    "buy_and_hold": "#ff7f0e",
    "flat": "#7f7f7f",
    "ma_crossover": "#17becf",
    "random": "#bcbd22",
}
MAX_POINTS = 5000
"""Points per line drawn; longer series are thinned (evenly spaced marks, last one kept)."""
MAX_MARKERS = 3000
"""Entry/exit markers drawn at most (evenly spaced fills beyond that)."""


def marker_style(n_fills: int) -> tuple[float, float]:
    """``(plotly marker size in px, opacity)`` that keeps trade markers readable.

    Up to 100 fills: 10 px, opaque. More fills shrink the markers with ``1/sqrt(n)`` (down to
    5 px at 400+) and make them translucent, so 400+ fills show as a readable density of
    small triangles; :func:`marker_offsets` moves them off the price line (buys below it,
    sells above it), so they never hide it. The matplotlib marker area is the square of the
    size.
    """
    n = max(int(n_fills), 1)
    size = 10.0 if n <= 100 else max(5.0, 10.0 * math.sqrt(100.0 / n))
    opacity = 1.0 if n <= 100 else (0.85 if n <= 400 else 0.7)
    return size, opacity


MARKER_OFFSET_FRAC = 0.025
"""Trade markers sit this fraction of the chart's price range below (buys) or above (sells)
the fill price."""


def marker_offsets(fills: pd.DataFrame, close: Any) -> npt.NDArray[np.float64]:
    """Where to draw each fill's marker: the fill price moved by :data:`MARKER_OFFSET_FRAC` of
    the price range, down for a buy and up for a sell (hover still shows the fill price)."""
    c = np.asarray(close, dtype=np.float64)
    span = float(np.nanmax(c) - np.nanmin(c)) if len(c) else 0.0
    sign = np.where(fills["side"].to_numpy() == "buy", -1.0, 1.0)
    return fills["price_quote"].to_numpy(dtype=np.float64) + sign * MARKER_OFFSET_FRAC * span


def equity_curve_figure(report: EvaluationReport, title: str | None = None) -> Any:
    """Equity of the agent and the baselines (top) and the agent's exposure (bottom).

    Returns:
        A ``matplotlib.figure.Figure`` (not attached to pyplot; save it or log it).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ts = np.asarray(report.rollout.ts_ms).astype("datetime64[ms]")
    ax1.plot(ts, report.rollout.equity_quote, lw=1.2, label="agent", color="tab:blue")
    styles = {"buy_and_hold": "tab:orange", "flat": "tab:gray", "random": "tab:red"}
    for name, r in report.baseline_rollouts.items():
        ax1.plot(ts, r.equity_quote, lw=0.8, label=name, color=styles.get(name), alpha=0.8)
    ax1.set_ylabel("equity (quote)")
    ax1.legend(loc="upper left", fontsize=8)
    ax1.set_title(
        title
        or f"{report.meta.get('symbol', '')} {report.meta.get('timeframe', '')} {report.split}: "
        f"agent {report.agent['total_return']:+.2%}, sharpe {report.agent['sharpe']:.2f}"
    )
    ax2.step(ts, report.rollout.exposure, where="post", lw=0.8, color="tab:blue")
    ax2.set_ylabel("exposure")
    fig.tight_layout()
    return fig


def thin_index(n: int, max_points: int = MAX_POINTS) -> npt.NDArray[np.int64]:
    """Indices of at most ``max_points`` evenly spaced rows of ``n`` (first and last kept)."""
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    idx = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
    return idx


def rolling_sharpe(
    equity_quote: npt.ArrayLike, periods_per_year: float, window_bars: int | None = None
) -> tuple[npt.NDArray[np.float64], int]:
    """Annualised Sharpe ratio of the last ``window_bars`` bar returns at each mark.

    Args:
        equity_quote: ``T + 1`` equity marks.
        periods_per_year: bars a year.
        window_bars: the window; default 30 days of bars, shortened to a fifth of the series
            (at least 10 bars) when the series is short.

    Returns:
        ``(values, window)``: ``T + 1`` values (NaN until the window is full, 0 for a window
        without variation) and the window used.
    """
    import pandas as pd

    eq = np.asarray(equity_quote, dtype=np.float64)
    r = np.r_[np.nan, eq[1:] / np.where(eq[:-1] > 0, eq[:-1], np.nan) - 1.0]
    if window_bars is None:
        month = max(2, round(periods_per_year / 365.0 * 30.0))
        window_bars = min(month, max(10, (len(eq) - 1) // 5))
    w = max(2, int(window_bars))
    s = pd.Series(r)
    roll = s.rolling(w, min_periods=w)
    mean = roll.mean().to_numpy()
    sd = roll.std(ddof=1).to_numpy()
    out = np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 1e-15) * math.sqrt(periods_per_year)
    out[np.isnan(mean)] = np.nan
    return out, w


def utc_times(ts_ms: Any) -> Any:
    """Epoch ms as a tz-aware UTC ``DatetimeIndex`` (the plots' time axis)."""
    import pandas as pd

    return pd.to_datetime(np.asarray(ts_ms, dtype=np.int64), unit="ms", utc=True)


def _baseline_columns(equity: pd.DataFrame) -> dict[str, str]:
    pre, post = "baseline_", "_equity_quote"
    return {c[len(pre) : -len(post)]: c for c in equity.columns if c.startswith(pre) and c.endswith(post)}


def backtest_figure(
    equity: pd.DataFrame, fills: pd.DataFrame, title: str = "", periods_per_year: float = 8760.0
) -> Any:
    """The backtest in five matplotlib panels (price with fills, position, equity vs
    baselines, drawdown, rolling Sharpe).

    Args:
        equity: the equity frame (``ts_ms``, ``close_quote``, ``equity_quote``, ``exposure``,
            ``drawdown``, ``baseline_<name>_equity_quote``...).
        fills: the fills (``ts_ms``, ``side``, ``price_quote``).
        title: the figure title.
        periods_per_year: bars a year (rolling Sharpe).

    Returns:
        A ``matplotlib.figure.Figure`` (Agg canvas, not attached to pyplot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    idx = thin_index(len(equity))
    eq = equity.iloc[idx]
    t = utc_times(eq["ts_ms"])
    fig = Figure(figsize=(12, 11), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(5, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.2, 3, 1.3, 1.3]})
    ax_p, ax_x, ax_e, ax_d, ax_s = axes
    ax_p.plot(t, eq["close_quote"], lw=0.8, color=PRICE_COLOR, label="close")
    if len(fills):
        fi = fills.iloc[thin_index(len(fills), MAX_MARKERS)]
        size, alpha = marker_style(len(fills))
        for side, marker, color in (("buy", "^", BUY_COLOR), ("sell", "v", SELL_COLOR)):
            sel = fi[fi["side"] == side]
            if len(sel):
                ax_p.scatter(utc_times(sel["ts_ms"]), marker_offsets(sel, equity["close_quote"]), marker=marker,
                             s=(size * 0.8) ** 2, alpha=alpha, linewidths=0, color=color,
                             label=f"{side} ({int((fills['side'] == side).sum())})", zorder=3)
    ax_p.set_ylabel("price (quote)")
    ax_p.legend(loc="upper left", fontsize=8)
    ax_x.step(t, eq["exposure"], where="post", lw=0.8, color=POSITION_COLOR)
    ax_x.axhline(0.0, color="black", lw=0.5)
    ax_x.set_ylabel("exposure")
    ax_e.plot(t, eq["equity_quote"], lw=1.3, color=AGENT_COLOR, label="strategy")
    for name, col in _baseline_columns(equity).items():
        ax_e.plot(t, eq[col], lw=0.8, color=BASELINE_COLORS.get(name), alpha=0.85, label=name)
    ax_e.set_ylabel("equity (quote)")
    ax_e.legend(loc="upper left", fontsize=8)
    ax_d.fill_between(t, -eq["drawdown"], 0.0, color=DRAWDOWN_COLOR, alpha=0.4, step="post")
    ax_d.set_ylabel("drawdown")
    rs, w = rolling_sharpe(equity["equity_quote"], periods_per_year)
    ax_s.plot(t, rs[idx], lw=0.8, color=SHARPE_COLOR)
    ax_s.axhline(0.0, color="black", lw=0.5)
    ax_s.set_ylabel(f"Sharpe ({w} bars)")
    ax_s.set_xlabel("time (UTC)")
    if title:
        ax_p.set_title(title)
    fig.tight_layout()
    return fig


def backtest_plotly(
    equity: pd.DataFrame, fills: pd.DataFrame, title: str = "", periods_per_year: float = 8760.0
) -> Any:
    """The same five panels as :func:`backtest_figure`, as an interactive plotly figure."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    idx = thin_index(len(equity))
    eq = equity.iloc[idx]
    t = utc_times(eq["ts_ms"])
    rs, w = rolling_sharpe(equity["equity_quote"], periods_per_year)
    fig = make_subplots(
        rows=5, cols=1, shared_xaxes=True, vertical_spacing=0.03,
        row_heights=[0.27, 0.12, 0.31, 0.15, 0.15],
        subplot_titles=("Price, entries and exits", "Position (exposure)",
                        "Equity vs baselines", "Drawdown", f"Rolling Sharpe ({w} bars)"),
    )
    fig.add_trace(go.Scatter(x=t, y=eq["close_quote"], name="close", line={"color": PRICE_COLOR, "width": 1}), 1, 1)
    if len(fills):
        fi = fills.iloc[thin_index(len(fills), MAX_MARKERS)]
        size, opacity = marker_style(len(fills))
        for side, symbol, color in (("buy", "triangle-up", BUY_COLOR), ("sell", "triangle-down", SELL_COLOR)):
            sel = fi[fi["side"] == side]
            if len(sel):
                fig.add_trace(go.Scatter(
                    x=utc_times(sel["ts_ms"]), y=marker_offsets(sel, equity["close_quote"]), mode="markers",
                    name=f"{side} ({int((fills['side'] == side).sum())})",
                    marker={"symbol": symbol, "color": color, "size": size, "opacity": opacity,
                            "line": {"width": 0}},
                    customdata=np.stack([sel["qty_base"], sel["fee_quote"], sel["price_quote"]], axis=1),
                    hovertemplate="%{x}<br>price %{customdata[2]:.6g}<br>qty %{customdata[0]:.6g}"
                                  "<br>fee %{customdata[1]:.4g}<extra>" + side + "</extra>",
                ), 1, 1)
    fig.add_trace(go.Scatter(x=t, y=eq["exposure"], name="exposure", line={"color": POSITION_COLOR, "width": 1, "shape": "hv"}), 2, 1)
    fig.add_trace(go.Scatter(x=t, y=eq["equity_quote"], name="strategy", line={"color": AGENT_COLOR, "width": 2}), 3, 1)
    for name, col in _baseline_columns(equity).items():
        fig.add_trace(go.Scatter(x=t, y=eq[col], name=name, line={"color": BASELINE_COLORS.get(name, "#999999"), "width": 1}), 3, 1)
    fig.add_trace(go.Scatter(x=t, y=-eq["drawdown"], name="drawdown", fill="tozeroy", line={"color": DRAWDOWN_COLOR, "width": 1}), 4, 1)
    fig.add_trace(go.Scatter(x=t, y=rs[idx], name="rolling Sharpe", line={"color": SHARPE_COLOR, "width": 1}), 5, 1)
    fig.update_layout(
        title=title or None, height=1100, template="plotly_white", hovermode="x unified",
        legend={"orientation": "h", "y": -0.04}, margin={"l": 60, "r": 20, "t": 60, "b": 40},
    )
    fig.update_yaxes(tickformat=".0%", row=4, col=1)
    return fig


def plotly_html(fig: Any, *, full_html: bool = True, div_id: str | None = None) -> str:
    """HTML of a plotly figure with plotly.js embedded (no CDN: works offline)."""
    return str(fig.to_html(full_html=full_html, include_plotlyjs=True, div_id=div_id,
                           config={"displaylogo": False, "responsive": True}))


def _frames(trading_results: BacktestResult) -> tuple[pd.DataFrame, pd.DataFrame, str, float]:
    r = trading_results
    m = r.meta
    title = (
        f"{r.name}: {m.get('symbol', '')} {m.get('timeframe', '')} {m.get('split', '')}, "
        f"total return {r.metrics.get('total_return', float('nan')):+.2%}, "
        f"Sharpe {r.metrics.get('sharpe', float('nan')):.2f}"
    )
    return r.equity_frame(), r.fills, title, r.rollout.periods_per_year


def plot_backtest_results(
    trading_results: BacktestResult, out_dir: str | Path | None = None
) -> tuple[Any, Any]:
    """Both figures of a backtest; with ``out_dir``, also ``backtest.png`` and ``backtest.html``.

    Args:
        trading_results: the :class:`~coinrl.agents.backtest.BacktestResult`.
        out_dir: folder to write ``backtest.png`` (matplotlib, 1200x1100 px) and a
            self-contained interactive ``backtest.html`` into (None: write nothing).

    Returns:
        ``(matplotlib Figure, plotly Figure)``.
    """
    equity, fills, title, ppy = _frames(trading_results)
    fig = backtest_figure(equity, fills, title, ppy)
    pfig = backtest_plotly(equity, fills, title, ppy)
    if out_dir is not None:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        fig.savefig(d / "backtest.png")
        (d / "backtest.html").write_text(plotly_html(pfig), encoding="utf-8")
    return fig, pfig


__all__ = [
    "AGENT_COLOR",
    "backtest_figure",
    "backtest_plotly",
    "equity_curve_figure",
    "marker_offsets",
    "marker_style",
    "plot_backtest_results",
    "plotly_html",
    "rolling_sharpe",
    "thin_index",
    "utc_times",
]
