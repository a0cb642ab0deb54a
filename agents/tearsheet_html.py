"""HTML sections of the tear sheet (:mod:`coinrl.agents.tearsheet`) for the report page.

Each function returns an HTML fragment (cells escaped); :func:`tearsheet_sections` returns them
all in reading order. The return-distribution histogram is a plotly figure whose plotly.js the
page already embeds once (the equity chart's), so it adds no script.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .report_format import (
    fmt_frac,
    fmt_int,
    fmt_money,
    fmt_num,
    fmt_pct,
    fmt_ts,
    fmt_value,
    table_html,
)
from .tearsheet import tearsheet

if TYPE_CHECKING:
    import pandas as pd

MAX_TRADE_ROWS = 200
"""Round trips listed in the page (all of them are in ``trades.csv``)."""

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _heat(v: float, scale: float) -> str:
    """Background colour of a return cell: green for gains, red for losses, by size."""
    if v != v:
        return "#ffffff"
    a = min(abs(v) / scale, 1.0) if scale > 0 else 0.0
    r, g, b = (44, 160, 44) if v >= 0 else (214, 39, 40)
    mix = [round(255 + (c - 255) * a * 0.75) for c in (r, g, b)]
    return f"#{mix[0]:02x}{mix[1]:02x}{mix[2]:02x}"


def monthly_heatmap_html(monthly: pd.DataFrame) -> str:
    """Monthly returns (rows: years, columns: months and the year) as a coloured table."""
    if monthly.empty:
        return "<p>No full bar in any month.</p>"
    vals = monthly[list(MONTHS)].to_numpy(dtype=np.float64)
    finite = np.abs(vals[np.isfinite(vals)])
    scale = float(np.quantile(finite, 0.9)) if finite.size else 0.0
    head = "".join(f"<th>{m.title()}</th>" for m in MONTHS) + "<th>Year</th>"
    body = []
    for year, row in monthly.iterrows():
        cells = "".join(
            f'<td style="background:{_heat(float(row[m]), scale)}">'
            f"{'' if row[m] != row[m] else fmt_value(row[m], fmt_pct)}</td>"
            for m in MONTHS
        )
        eoy = float(row["EOY"])
        cells += f'<td style="background:{_heat(eoy, scale * 3)}"><b>{fmt_value(eoy, fmt_pct)}</b></td>'
        body.append(f"<tr><td>{html.escape(str(year))}</td>{cells}</tr>")
    return (
        f'<table class="heatmap"><thead><tr><th>Year</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
        '<p class="sub">Compounded returns of the strategy per calendar month (UTC), after costs; '
        "blank: no bar of the sample in that month; Year: the months of the sample compounded.</p>"
    )


def trades_html(trades: pd.DataFrame, summary: Mapping[str, float]) -> str:
    """The round-trip summary (all, long, short) and the first trades."""
    if not len(trades):
        return "<p>No trades.</p>"
    s = summary
    rows = [
        ["Round trips", fmt_value(s.get("n_trades"), fmt_int),
         fmt_value(s.get("long_n"), fmt_int), fmt_value(s.get("short_n"), fmt_int)],
        ["Win rate", fmt_value(s.get("win_rate"), fmt_frac),
         fmt_value(s.get("long_win_rate"), fmt_frac), fmt_value(s.get("short_win_rate"), fmt_frac)],
        ["PnL after costs (quote)", fmt_value(s.get("total_pnl_quote"), fmt_money),
         fmt_value(s.get("long_pnl_quote"), fmt_money), fmt_value(s.get("short_pnl_quote"), fmt_money)],
        ["Average win / loss (quote)",
         f"{fmt_value(s.get('avg_win_quote'), fmt_money)} / {fmt_value(s.get('avg_loss_quote'), fmt_money)}", "", ""],
        ["Average win / loss (return)",
         f"{fmt_value(s.get('avg_win_return'), fmt_pct)} / {fmt_value(s.get('avg_loss_return'), fmt_pct)}", "", ""],
        ["Payoff ratio (avg win / avg loss)", fmt_value(s.get("payoff_ratio"), fmt_num), "", ""],
        ["Best / worst trade",
         f"{fmt_value(s.get('best_return'), fmt_pct)} / {fmt_value(s.get('worst_return'), fmt_pct)}", "", ""],
        ["Average holding time (hours)", fmt_value(s.get("avg_holding_hours"), fmt_num), "", ""],
        ["Fees inside trades (quote)", fmt_value(s.get("total_fees_quote"), fmt_money), "", ""],
    ]
    listed = [
        [fmt_ts(r["entry_ts_ms"]), fmt_ts(r["exit_ts_ms"]) + ("" if r["closed"] else " (open)"),
         html.escape(str(r["side"])), f"{r['entry_price_quote']:.6g}", f"{r['exit_price_quote']:.6g}",
         fmt_money(r["pnl_quote"]), fmt_pct(r["return"]), f"{r['duration_hours']:,.1f}",
         fmt_money(r["fees_quote"])]
        for r in trades.head(MAX_TRADE_ROWS).to_dict("records")
    ]
    n = len(trades)
    shown = "" if n <= MAX_TRADE_ROWS else f", the first {MAX_TRADE_ROWS} below"
    return (
        table_html(["", "All", "Long", "Short"], rows)
        + f'<p>All {n:,} round trips: <a href="trades.csv" download>trades.csv</a>{shown}. '
        "A trade runs from the fill that opens a position to the fill that closes or flips it; "
        "PnL is the equity change over it after fees and slippage.</p>"
        + '<div class="scroll">'
        + table_html(["Entry (UTC)", "Exit (UTC)", "Side", "Entry price", "Exit price", "PnL",
                      "Return", "Hours", "Fees"], listed, "trades")
        + "</div>"
    )


def drawdowns_html(dd: pd.DataFrame) -> str:
    """The worst drawdowns with their dates, depth, length and recovery."""
    if not len(dd):
        return "<p>No drawdown: equity never fell below a previous peak.</p>"
    rows = [
        [str(i + 1), html.escape(str(r["start"])), html.escape(str(r["valley"])),
         html.escape(str(r["end"])) if r["recovered"] else f"not recovered (at {html.escape(str(r['end']))})",
         fmt_frac(float(r["max_drawdown"])), f"{int(r['days']):,}"]
        for i, r in enumerate(dd.to_dict("records"))
    ]
    return table_html(["#", "Start", "Valley", "Recovered", "Depth", "Days"], rows)


def distribution_html(equity: pd.DataFrame, tail: Mapping[str, float], div_id: str = "returns-hist") -> str:
    """Histogram of the bar returns with the VaR and CVaR marked, and the tail-risk table."""
    import plotly.graph_objects as go

    eq = equity["equity_quote"].to_numpy(dtype=np.float64)
    r = eq[1:] / eq[:-1] - 1.0 if len(eq) > 1 else np.zeros(0)
    fig = go.Figure(go.Histogram(x=r, nbinsx=120, marker={"color": "#1f77b4"}, name="bar returns"))
    for key, color, label in (("var_bar", "#ff7f0e", "VaR"), ("cvar_bar", "#d62728", "CVaR")):
        v = tail.get(key)
        if v is not None and math.isfinite(v):
            fig.add_vline(x=v, line={"color": color, "dash": "dash"}, annotation_text=label)
    fig.update_layout(height=320, template="plotly_white", margin={"l": 50, "r": 20, "t": 30, "b": 40},
                      xaxis_title="return per bar", yaxis_title="bars", showlegend=False)
    fig.update_xaxes(tickformat=".1%")
    chart = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                        config={"displaylogo": False, "responsive": True})
    lvl = tail.get("level", 0.95)
    rows = [
        [f"Value at risk ({lvl:.0%}), per bar / per day",
         f"{fmt_value(tail.get('var_bar'), fmt_pct)} / {fmt_value(tail.get('var_daily'), fmt_pct)}"],
        [f"Conditional VaR / expected shortfall ({lvl:.0%}), per bar / per day",
         f"{fmt_value(tail.get('cvar_bar'), fmt_pct)} / {fmt_value(tail.get('cvar_daily'), fmt_pct)}"],
        ["Skewness / excess kurtosis of bar returns",
         f"{fmt_value(tail.get('skew'), fmt_num)} / {fmt_value(tail.get('kurtosis'), fmt_num)}"],
    ]
    return chart + table_html(["Tail risk", "Value"], rows)


def benchmark_html(bench: Mapping[str, float]) -> str:
    """Alpha, beta, correlation and information ratio against buy-and-hold."""
    if not bench:
        return "<p>No buy-and-hold baseline in this backtest.</p>"
    rows = [
        ["Alpha (annualised, arithmetic: mean bar excess x bars a year)", fmt_value(bench.get("alpha"), fmt_pct)],
        ["Beta", fmt_value(bench.get("beta"), fmt_num)],
        ["Correlation of bar returns", fmt_value(bench.get("correlation"), fmt_num)],
        ["Information ratio (per bar / annualised)",
         f"{fmt_value(bench.get('information_ratio'), lambda v: f'{v:.4f}')} / "
         f"{fmt_value(bench.get('information_ratio_annualised'), fmt_num)}"],
    ]
    return table_html(["Against buy-and-hold", "Value"], rows)


def directional_html(policy: Mapping[str, Any]) -> str:
    """The directional quality of the calls (:func:`~coinrl.agents.evaluate.directional_quality`)."""
    if not policy.get("direction/n"):
        return ""
    rows = [
        [c, fmt_value(policy.get(f"direction/called_{c}"), fmt_frac),
         fmt_value(policy.get(f"direction/actual_{c}"), fmt_frac),
         fmt_value(policy.get(f"direction/precision_{c}"), fmt_frac),
         fmt_value(policy.get(f"direction/recall_{c}"), fmt_frac)]
        for c in ("long", "short", "flat")
    ]
    return (
        f"<p>Accuracy {fmt_value(policy.get('direction/accuracy'), fmt_frac)} over "
        f"{fmt_value(policy.get('direction/n'), fmt_int)} decisions (always calling the most "
        f"frequent class would score {fmt_value(policy.get('direction/baseline_accuracy'), fmt_frac)}). "
        "A call is right when the bar it is held over moved that way by more than the one-way "
        "cost (flat: less than that).</p>"
        + table_html(["Call", "Called", "Actual (class balance)", "Precision", "Recall"], rows)
    )


def cost_sweep_html(sweep: Mapping[str, Any] | None) -> str:
    """The cost-sweep table and where the edge vanishes (empty without a sweep)."""
    if not sweep or not sweep.get("rows"):
        return ""
    names = list(sweep["rows"][0].get("margin", {}))
    rows = [
        [f"{r['multiplier']:g}x", f"{r['taker_fee_rate']:.4%}", f"{r['slippage_bps']:g}",
         fmt_value(r["total_return"], fmt_pct), fmt_value(r["sharpe"], fmt_num),
         fmt_value(r["fees_paid_quote"], fmt_money),
         *(fmt_value(r["margin"].get(b), fmt_pct) for b in names)]
        for r in sweep["rows"]
    ]
    lines = "".join(f"<li>{html.escape(x)}</li>" for x in sweep.get("summary", []))
    return (
        "<h2>Cost sweep</h2>"
        + table_html(["Costs", "Taker fee", "Slippage (bps)", "Total return", "Sharpe", "Fees",
                      *(html.escape(f"margin vs {b}") for b in names)], rows)
        + f"<ul>{lines}</ul>"
    )


def tearsheet_sections(
    summary: Mapping[str, Any], equity: pd.DataFrame, fills: pd.DataFrame, periods_per_year: float
) -> tuple[list[str], pd.DataFrame]:
    """The tear sheet's HTML sections in reading order, and the round trips (for
    ``trades.csv``)."""
    ts = tearsheet(equity, fills, periods_per_year)
    body = [
        "<h2>Round trips</h2>",
        trades_html(ts["trades"], ts["trade_summary"]),
        "<h2>Monthly and yearly returns</h2>",
        monthly_heatmap_html(ts["monthly"]),
        "<h2>Worst drawdowns</h2>",
        drawdowns_html(ts["drawdowns"]),
        "<h2>Return distribution</h2>",
        distribution_html(equity, ts["tail"]),
        "<h2>Against buy-and-hold</h2>",
        benchmark_html(ts["benchmark"]),
    ]
    direction = directional_html(summary.get("policy", {}))
    if direction:
        body += ["<h2>Directional quality of the calls</h2>", direction]
    body.append(cost_sweep_html(summary.get("meta", {}).get("cost_sweep")))
    return body, ts["trades"]


__all__ = [
    "MAX_TRADE_ROWS",
    "benchmark_html",
    "cost_sweep_html",
    "directional_html",
    "distribution_html",
    "drawdowns_html",
    "monthly_heatmap_html",
    "tearsheet_sections",
    "trades_html",
]
