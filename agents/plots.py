"""Figures of an evaluation (matplotlib, Agg: no display needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .evaluate import EvaluationReport


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


__all__ = ["equity_curve_figure"]
