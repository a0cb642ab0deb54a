"""The portfolio section of the backtest report: the same folder, page parts and tear sheet.

:func:`~coinrl.agents.report.save_backtest_results` writes a
:class:`~coinrl.agents.portfolio_backtest.PortfolioBacktestResult` into the usual folder
(``metrics.json`` with a ``portfolio`` key, ``equity.parquet`` with ``weight_<SYM>`` columns,
``fills.parquet`` with a ``symbol`` column); when ``metrics.json`` has that key the report
calls this module for the page and the picture:

* the verdicts (paired block bootstrap against every baseline) and warnings;
* equity beside the baselines, the drawdown and the weights over time as a stacked area
  (longs stacked above 0, shorts below), one interactive plotly chart;
* the metrics beside every baseline (:func:`~coinrl.agents.report_format.metrics_table`);
* the per-asset attribution table (P&L, contribution, costs, funding, turnover, weights);
* the tear sheet's pieces that read the equity curve (monthly returns, worst drawdowns, return
  distribution, alpha/beta against ``crp_daily``), the fills, data and configuration.

``attribution.csv`` holds the attribution table. :func:`~coinrl.agents.report.render_report`
redraws it all from the stored tables.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .plots import BASELINE_COLORS, plotly_html, thin_index, utc_times
from .report_format import (
    fmt_int,
    fmt_money,
    fmt_pct,
    fmt_ts,
    fmt_value,
    metrics_table,
    page,
    table_html,
    verdicts_html,
    warnings_html,
    yaml_block,
)
from .tearsheet_html import cost_sweep_html

if TYPE_CHECKING:
    import pandas as pd

    from .report import SavedBacktest

ATTRIBUTION_CSV = "attribution.csv"
WEIGHTS_DIV = "portfolio-weights"
ATTRIBUTION_CLASS = "attribution"
BENCHMARK = "crp_daily"
MAX_FILL_ROWS = 200
AGENT_COLOR = "#1f77b4"
ASSET_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf")

BASELINE_COLOR = {"cash": "#7f7f7f", "equal_weight_hold": "#ff7f0e", "crp_daily": "#2ca02c",
                  "crp_weekly": "#98df8a", "random_weights": "#bcbd22"}
HOLD_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#d62728")


def baseline_color(name: str, i: int) -> str:
    """The line colour of a baseline (never the strategy's blue); ``i``: its position."""
    return BASELINE_COLOR.get(name) or BASELINE_COLORS.get(name) or HOLD_COLORS[i % len(HOLD_COLORS)]


def _baseline_columns(equity: pd.DataFrame) -> list[tuple[str, str]]:
    pre, post = "baseline_", "_equity_quote"
    return [(c[len(pre): -len(post)], c) for c in equity.columns if c.startswith(pre) and c.endswith(post)]


ATTRIBUTION_COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("contribution", "Contribution to return", fmt_pct),
    ("pnl_quote", "P&L after costs (quote)", fmt_money),
    ("gross_pnl_quote", "P&L before costs", fmt_money),
    ("fees_quote", "Fees", fmt_money),
    ("slippage_quote", "Slippage", fmt_money),
    ("funding_quote", "Funding paid", fmt_money),
    ("turnover", "Turnover (x mean equity)", lambda v: f"{v:.2f}"),
    ("mean_weight", "Mean weight", fmt_pct),
    ("mean_abs_weight", "Mean |weight|", fmt_pct),
    ("time_in_market", "Time held", fmt_pct),
    ("asset_return", "Asset's own return", fmt_pct),
)


def symbols_of(saved: SavedBacktest) -> list[str]:
    """The portfolio's assets, from ``metrics.json``."""
    return [str(s) for s in saved.summary.get("portfolio", {}).get("symbols", [])]


def weights_figure(equity: pd.DataFrame, symbols: Sequence[str]) -> Any:
    """Equity beside the baselines, the drawdown and the weights as a stacked area (plotly)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    eq = equity.iloc[thin_index(len(equity))]
    t = utc_times(eq["ts_ms"])
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        row_heights=[0.45, 0.15, 0.40],
                        subplot_titles=("Equity vs baselines", "Drawdown",
                                        "Weights over time (position notional / equity, stacked)"))
    fig.add_trace(go.Scatter(x=t, y=eq["equity_quote"], name="strategy",
                             line={"color": AGENT_COLOR, "width": 2}), 1, 1)
    for i, (name, col) in enumerate(_baseline_columns(equity)):
        fig.add_trace(go.Scatter(x=t, y=eq[col], name=name, line={
            "color": baseline_color(name, i), "width": 1}), 1, 1)
    fig.add_trace(go.Scatter(x=t, y=-eq["drawdown"], name="drawdown", fill="tozeroy",
                             line={"color": "#d62728", "width": 1}), 2, 1)
    for a, sym in enumerate(symbols):
        w = eq[f"weight_{sym}"].to_numpy(dtype=np.float64)
        color = ASSET_COLORS[a % len(ASSET_COLORS)]
        for group, part in (("long", np.maximum(w, 0.0)), ("short", np.minimum(w, 0.0))):
            if not part.any():
                continue
            fig.add_trace(go.Scatter(
                x=t, y=part, name=f"{sym}{' (short)' if group == 'short' else ''}",
                stackgroup=group, mode="lines", line={"width": 0.5, "color": color},
                hovertemplate="%{y:.1%}<extra>" + html.escape(sym) + "</extra>"), 3, 1)
    fig.update_layout(height=900, template="plotly_white", hovermode="x unified",
                      legend={"orientation": "h", "y": -0.05}, margin={"l": 60, "r": 20, "t": 40, "b": 40})
    fig.update_yaxes(tickformat=".0%", row=2, col=1)
    fig.update_yaxes(tickformat=".0%", row=3, col=1)
    return fig


def attribution_table_html(attribution: Mapping[str, Mapping[str, Any]]) -> str:
    """The per-asset attribution table (one row per asset, then the account row)."""
    rows = []
    for name, vals in attribution.items():
        if name == "account":
            continue
        rows.append([html.escape(name), *(fmt_value(vals.get(k), f) for k, _, f in ATTRIBUTION_COLUMNS)])
    acct = attribution.get("account")
    if acct:
        cells = [fmt_value(acct.get("contribution"), fmt_pct), fmt_value(acct.get("pnl_quote"), fmt_money)]
        rows.append(["account (borrow, liquidation)", *cells, *([""] * (len(ATTRIBUTION_COLUMNS) - 2))])
    total = sum(float(v.get("contribution") or 0.0) for v in attribution.values())
    rows.append(["<b>total</b>", f"<b>{fmt_pct(total)}</b>", *([""] * (len(ATTRIBUTION_COLUMNS) - 1))])
    return table_html(["Asset", *(html.escape(lbl) for _, lbl, _ in ATTRIBUTION_COLUMNS)], rows,
                      ATTRIBUTION_CLASS)


def _random_note(m: Mapping[str, Any] | None) -> str:
    if not m or not m.get("n_draws"):
        return ""
    return (
        '<p class="sub">random_weights: its column is the MEAN over '
        f"{fmt_value(m.get('n_draws'), fmt_int)} seeded draws that trade as often as the strategy "
        f"({fmt_value(m.get('n_changes'), fmt_int)} rebalances) towards random weights, matched "
        f"on turnover (the strategy's {fmt_value(m.get('target_turnover'), lambda v: f'{v:.2f}')}"
        f" x equity, the draws' {fmt_value(m.get('realised_turnover'), lambda v: f'{v:.2f}')});"
        f" total return over the draws {fmt_value(m.get('draws_min_total_return'), fmt_pct)}"
        f" to {fmt_value(m.get('draws_max_total_return'), fmt_pct)}; the verdict pools every "
        "draw, the chart shows the first.</p>"
    )


def _tearsheet(saved: SavedBacktest) -> list[str]:
    from .tearsheet import benchmark_stats, monthly_returns, tail_risk, worst_drawdowns
    from .tearsheet_html import (
        benchmark_html,
        distribution_html,
        drawdowns_html,
        monthly_heatmap_html,
    )

    eq = saved.equity
    return [
        "<h2>Monthly and yearly returns</h2>", monthly_heatmap_html(monthly_returns(eq)),
        "<h2>Worst drawdowns</h2>", drawdowns_html(worst_drawdowns(eq)),
        "<h2>Return distribution</h2>", distribution_html(eq, tail_risk(eq)),
        f"<h2>Against {BENCHMARK}</h2>", benchmark_html(benchmark_stats(eq, saved.periods_per_year, BENCHMARK)),
    ]


def portfolio_report_html(saved: SavedBacktest) -> str:
    """The report page of a saved portfolio backtest (see the module doc)."""
    s = saved.summary
    m = s.get("meta", {})
    pf = s.get("portfolio", {})
    symbols = symbols_of(saved)
    name = str(s.get("name", "strategy"))
    env = s.get("env", {})
    described = str(m.get("data_description") or f"the {m.get('split', '')} split")
    costs = (f"taker fee {env.get('taker_fee_rate', 0):.4%}, slippage {env.get('slippage_bps', 0):g} bps, "
             f"gross budget {env.get('gross_leverage') or env.get('max_leverage', 1)}x, fills at the "
             f"next open, initial cash {env.get('initial_cash_quote', 0):,.0f}") if env else ""
    f = saved.fills
    fill_rows = [
        [fmt_ts(r.ts_ms), html.escape(str(r.symbol)), html.escape(str(r.side)), f"{r.qty_base:.6g}",
         f"{r.price_quote:.6g}", f"{r.fee_quote:.4g}", f"{r.slippage_quote:.4g}",
         "yes" if bool(r.liquidation) else ""]
        for r in f.head(MAX_FILL_ROWS).itertuples()
    ]
    data_rows = [
        ["Assets", html.escape(", ".join(symbols))],
        ["Timeframe / exchange", html.escape(f"{m.get('timeframe', '')} {m.get('exchange', '')}")],
        ["Split", html.escape(str(m.get("split", "")))],
        ["Time range (bar opens)", f"{fmt_ts(m.get('start_ts_ms'))} to {fmt_ts(m.get('end_ts_ms'))}"],
        ["Decisions", fmt_value(m.get("n_decisions"), fmt_int)],
        ["Bars backtested: sha256", html.escape(str(m.get("market_fingerprint", "-")))],
        ["Candles: sha256", html.escape(str(m.get("data_fingerprint") or "-"))],
        ["Normaliser fingerprint", html.escape(str(m.get("normaliser_fingerprint") or "-"))],
    ]
    chart = plotly_html(weights_figure(saved.equity, symbols), full_html=False, div_id=WEIGHTS_DIV)
    body = [
        f"<h1>Portfolio backtest report: {html.escape(saved.title)}</h1>",
        f'<p class="sub">{fmt_ts(m.get("start_ts_ms"))} to {fmt_ts(m.get("end_ts_ms"))}, '
        f"{fmt_value(m.get('n_decisions'), fmt_int)} decisions over {len(symbols)} assets; "
        f"{html.escape(costs)}. Data: <b>{html.escape(described)}</b>. Every number is after "
        "costs; the baselines ran on the same bars with the same costs and rules.</p>",
        "<h2>Verdict</h2>",
        warnings_html(s.get("warnings", [])),
        verdicts_html(s.get("verdicts", [])) or "<p>No baselines were run.</p>",
        "<h2>Equity and weights over time</h2>",
        chart,
        "<h2>Metrics</h2>",
        metrics_table({name: s.get("metrics", {}), **s.get("baselines", {})}),
        _random_note(s.get("baselines", {}).get("random_weights")),
        "<h2>Per-asset attribution</h2>",
        '<p class="sub">Each asset\'s P&amp;L: its old position over the gap to the fill, its new '
        "one over the bar, less its own fees, slippage and funding; contributions are over the "
        f'initial equity and add up to the total return (<a href="{ATTRIBUTION_CSV}" download>'
        f"{ATTRIBUTION_CSV}</a>).</p>",
        attribution_table_html(pf.get("attribution", {})),
        *_tearsheet(saved),
        cost_sweep_html(m.get("cost_sweep")),
        f"<h2>Fills ({len(f):,}{'' if len(f) <= MAX_FILL_ROWS else f', first {MAX_FILL_ROWS} below'})</h2>",
        '<div class="scroll">' + table_html(
            ["Time", "Asset", "Side", "Qty (base)", "Price", "Fee", "Slippage", "Liquidation"],
            fill_rows, "fills") + "</div>",
        "<h2>Data</h2>", table_html(["", ""], data_rows),
        "<h2>Configuration</h2>",
        yaml_block({"env": env, **{k: v for k, v in s.get("config", {}).items() if k != "env"}}),
        "<h2>Versions</h2>", yaml_block(s.get("versions", {})),
    ]
    return page(f"coinrl portfolio backtest: {saved.title}", "\n".join(body))


def portfolio_png(saved: SavedBacktest, path: Path) -> None:
    """The picture: equity beside the baselines and the stacked weights (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eq = saved.equity
    t = utc_times(eq["ts_ms"])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, height_ratios=[3, 2])
    ax1.plot(t, eq["equity_quote"], lw=1.5, color=AGENT_COLOR, label="strategy")
    for i, (name, col) in enumerate(_baseline_columns(eq)):
        ax1.plot(t, eq[col], lw=0.8, label=name, color=baseline_color(name, i))
    ax1.set_title(saved.title)
    ax1.legend(fontsize=7, ncol=4)
    symbols = symbols_of(saved)
    w = np.stack([eq[f"weight_{s}"].to_numpy(dtype=np.float64) for s in symbols])
    ax2.stackplot(t, np.maximum(w, 0.0), labels=symbols, colors=ASSET_COLORS[: len(symbols)], alpha=0.8)
    if (w < 0).any():
        ax2.stackplot(t, np.minimum(w, 0.0), colors=ASSET_COLORS[: len(symbols)], alpha=0.5)
    ax2.set_ylabel("weight")
    ax2.legend(fontsize=7, ncol=len(symbols))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_portfolio_report_files(folder: Path, saved: SavedBacktest) -> None:
    """``report.html``, ``backtest.png``, ``fills.csv`` and ``attribution.csv`` of a portfolio
    report folder, from its tables."""
    import pandas as pd

    from .report import FILLS_CSV, PNG_FILE, REPORT_FILE

    portfolio_png(saved, folder / PNG_FILE)
    saved.fills.to_csv(folder / FILLS_CSV, index=False)
    attr = saved.summary.get("portfolio", {}).get("attribution", {})
    pd.DataFrame([{"asset": k, **v} for k, v in attr.items()]).to_csv(folder / ATTRIBUTION_CSV, index=False)
    (folder / REPORT_FILE).write_text(portfolio_report_html(saved), encoding="utf-8")


def is_portfolio_report(summary: Mapping[str, Any]) -> bool:
    """Whether a report folder's ``metrics.json`` is a portfolio backtest's."""
    return "portfolio" in summary


__all__ = [
    "ATTRIBUTION_CSV",
    "attribution_table_html",
    "is_portfolio_report",
    "portfolio_png",
    "portfolio_report_html",
    "weights_figure",
    "write_portfolio_report_files",
]
