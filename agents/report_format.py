"""How report pages and CLI tables write numbers: cell formats, the metrics table, page parts.

One formatting rule per figure, shared by the backtest report (:mod:`coinrl.agents.report`),
its tear sheet (:mod:`coinrl.agents.tearsheet_html`), the walk-forward page
(:mod:`coinrl.agents.walkforward_report`) and the CLI tables: e.g. :func:`metric_cell` writes
``n/a (short sample)`` for an annualised figure of a sample too short to annualise, wherever it
is shown. Importable from :mod:`coinrl.agents.report` too.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

from .metrics import json_safe

# --------------------------------------------------------------------------- formatting


def fmt_pct(v: float) -> str:
    """Cell format (pct)."""
    return f"{v:+.2%}"


def fmt_num(v: float) -> str:
    """Cell format (num)."""
    return f"{v:,.3f}"


def fmt_money(v: float) -> str:
    """Cell format (money)."""
    return f"{v:,.2f}"


def fmt_int(v: float) -> str:
    """Cell format (int)."""
    return f"{v:,.0f}"


def fmt_frac(v: float) -> str:
    """Cell format (frac)."""
    return f"{v:.1%}"


METRIC_ROWS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("total_return", "Total return", fmt_pct),
    ("annualised_return", "Annualised return (CAGR)", fmt_pct),
    ("annualised_volatility", "Annualised volatility", fmt_frac),
    ("sharpe", "Sharpe ratio (annualised)", fmt_num),
    ("sortino", "Sortino ratio (annualised)", fmt_num),
    ("calmar", "Calmar ratio", fmt_num),
    ("max_drawdown", "Max drawdown", fmt_frac),
    ("max_drawdown_duration_days", "Max drawdown duration (days)", fmt_num),
    ("win_rate", "Win rate (trades)", fmt_frac),
    ("profit_factor", "Profit factor", fmt_num),
    ("avg_trade_return", "Average trade", fmt_pct),
    ("n_trades", "Trades", fmt_int),
    ("n_fills", "Fills", fmt_int),
    ("exposure", "Mean |exposure|", fmt_frac),
    ("time_in_market", "Time in market", fmt_frac),
    ("turnover", "Turnover (x mean equity)", fmt_num),
    ("fees_paid_quote", "Fees paid (quote)", fmt_money),
    ("slippage_paid_quote", "Slippage paid (quote)", fmt_money),
    ("costs_frac", "Costs / initial equity", fmt_frac),
    ("final_equity_quote", "Final equity (quote)", fmt_money),
)
"""Rows of the metrics table: key, label, formatter."""


def fmt_value(v: Any, f: Callable[[float], str] = fmt_num) -> str:
    """A table cell: ``-`` for missing, ``inf``/``nan`` spelled out, else ``f(v)``."""
    if v is None:
        return "-"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f(x)


def fmt_ts(ts_ms: Any) -> str:
    """UTC time of epoch ms as ``YYYY-MM-DD HH:MM UTC`` (``-`` when missing)."""
    import pandas as pd

    if ts_ms is None:
        return "-"
    return str(pd.Timestamp(int(ts_ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC"))


def table_html(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """An HTML table; cells are inserted as given (escape them before)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


ANNUALISED_KEYS = ("annualised_return", "calmar")
"""Metrics that are n/a on a sample too short to annualise."""


def metric_cell(m: Mapping[str, Any], key: str, f: Callable[[float], str] = fmt_num) -> str:
    """One metric's cell: ``n/a (short sample)`` for an annualised figure of a short sample."""
    v = m.get(key)
    if key in ANNUALISED_KEYS and m.get("short_sample") and (v is None or v != v):
        return "n/a (short sample)"
    return fmt_value(v, f)


def metrics_table(columns: Mapping[str, Mapping[str, Any]]) -> str:
    """The metrics of several strategies side by side (:data:`METRIC_ROWS`); the ``random``
    column is the mean of its draws, with the spread of their total returns below."""
    names = list(columns)
    rows = []
    for key, label, f in METRIC_ROWS:
        if not any(key in columns[n] for n in names):
            continue
        rows.append([html.escape(label), *(metric_cell(columns[n], key, f) for n in names)])
    if any(columns[n].get("n_draws") for n in names):
        def spread(m: Mapping[str, Any]) -> str:
            if not m.get("n_draws"):
                return ""
            return (
                f"{fmt_value(m.get('n_draws'), fmt_int)} draws: std "
                f"{fmt_value(m.get('draws_std_total_return'), fmt_frac)}, 5/50/95% "
                f"{fmt_value(m.get('draws_q05_total_return'), fmt_pct)} / "
                f"{fmt_value(m.get('draws_q50_total_return'), fmt_pct)} / "
                f"{fmt_value(m.get('draws_q95_total_return'), fmt_pct)}"
            )

        rows.append(["Randomised baseline: total return over its draws", *(spread(columns[n]) for n in names)])
    return table_html(["Metric", *(html.escape(n) for n in names)], rows, "metrics")


PAGE_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1280px;
color:#222;background:#fff;padding:0 16px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{background:#f3f3f3}
.verdict{font-size:15px;margin:6px 0;padding:8px 12px;border-left:5px solid #999;background:#fafafa}
.beats{border-color:#2ca02c}.loses{border-color:#d62728}.inconclusive{border-color:#ff7f0e}
.warn{background:#fff3cd;border-left:5px solid #d62728;padding:8px 12px;margin:8px 0}
pre{background:#f6f8fa;padding:12px;font-size:12px;overflow:auto;max-height:420px}
.scroll{max-height:360px;overflow:auto;display:inline-block;border-bottom:1px solid #ddd}
.heatmap td{min-width:52px}
"""


def page(title: str, body: str) -> str:
    """A complete HTML page (inline CSS; nothing fetched from the network)."""
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{PAGE_CSS}</style></head>"
        f"<body>{body}</body></html>"
    )


def verdicts_html(verdicts: Sequence[Mapping[str, Any]]) -> str:
    """One coloured paragraph per verdict (``to_dict()`` of :class:`~coinrl.agents.stats.Verdict`)."""
    return "".join(
        f'<p class="verdict {html.escape(str(v.get("outcome", "")))}">{html.escape(str(v.get("line", "")))}</p>'
        for v in verdicts
    )


def warnings_html(warnings: Sequence[str]) -> str:
    """Warnings as highlighted paragraphs."""
    return "".join(f'<p class="warn">&#9888; {html.escape(w)}</p>' for w in warnings)


def yaml_block(data: Any) -> str:
    """``data`` as YAML in a ``<pre>`` block."""
    text = yaml.safe_dump(json_safe(data), sort_keys=False, default_flow_style=False)
    return f"<pre>{html.escape(text)}</pre>"


__all__ = [
    "ANNUALISED_KEYS",
    "METRIC_ROWS",
    "PAGE_CSS",
    "fmt_frac",
    "fmt_int",
    "fmt_money",
    "fmt_num",
    "fmt_pct",
    "fmt_ts",
    "fmt_value",
    "metric_cell",
    "metrics_table",
    "page",
    "table_html",
    "verdicts_html",
    "warnings_html",
    "yaml_block",
]
