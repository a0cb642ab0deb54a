"""A walk-forward's results folder: tables, stitched equity chart, HTML report, W&B.

:func:`save_walk_forward` writes the folder atomically; :func:`render_walk_forward_report`
redraws its page from the files alone. Importable from :mod:`coinrl.agents.walkforward` too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coinrl.pipeline.errors import DataError

from .config import TrackingConfig
from .walkforward_result import SUMMARY_METRICS, WalkForwardResult, summary_means

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

SUMMARY_FILE = "walkforward.json"
STITCHED_FILE = "stitched.parquet"
REPORT_FILE = "report.html"
PNG_FILE = "walkforward.png"
RUNS_DIR = "runs"


def save_walk_forward(
    result: WalkForwardResult,
    out_dir: str | Path,
    *,
    tracking: TrackingConfig | None = None,
    run_name: str = "walkforward",
) -> Path:
    """Write a walk-forward results folder.

    Layout: ``walkforward.json`` (summary, verdicts, statistics, runs), ``stitched.parquet``
    (out-of-sample equity over the folds), ``walkforward.png``, ``report.html`` (self-contained)
    and ``runs/fold<i>_seed<s>/`` (each run's ``equity.parquet``, ``fills.parquet``,
    ``metrics.json``; ``coinrl report`` on one draws its own page).

    Returns:
        The folder.
    """
    import pandas as pd

    from .report import atomic_folder, report_versions, write_json, write_result_tables

    dest = Path(out_dir)
    summary = result.to_dict()
    summary["versions"] = report_versions()
    stitched = result.stitched_frame()

    def build(d: Path) -> None:
        runs = d / RUNS_DIR
        for i, row in enumerate(result.results):
            for s, r in zip(result.seeds, row, strict=True):
                rd = runs / f"fold{i}_seed{s}"
                rd.mkdir(parents=True)
                write_result_tables(rd, r.to_dict(), r.equity_frame(), pd.DataFrame(r.fills))
        stitched.to_parquet(d / STITCHED_FILE, index=False)
        write_json(d / SUMMARY_FILE, summary)
        _write_walk_forward_report(d, summary, stitched)

    atomic_folder(dest, build)
    logger.info("saved walk-forward results path=%s runs=%d", dest, result.n_folds * len(result.seeds))
    if tracking is not None and tracking.mode != "disabled":
        _log_walk_forward(dest, tracking, run_name, summary)
    return dest


def _stitched_lines(stitched: pd.DataFrame) -> list[tuple[str, str, bool]]:
    """``(column, name, is_agent)`` of each equity line of a stitched frame: ``seed <s>`` per
    agent seed, the baseline's name per baseline."""
    lines = []
    for c in stitched.columns:
        if c.startswith("agent_seed_"):
            lines.append((c, c[len("agent_"):-len("_equity_quote")].replace("_", " "), True))
        elif c.startswith("baseline_"):
            lines.append((c, c[len("baseline_"):-len("_equity_quote")], False))
    return lines


def _stitched_plotly(stitched: pd.DataFrame, title: str) -> Any:
    import plotly.graph_objects as go

    from .plots import AGENT_COLOR, BASELINE_COLORS, thin_index, utc_times

    idx = thin_index(len(stitched))
    st = stitched.iloc[idx]
    t = utc_times(st["ts_ms"])
    fig = go.Figure()
    for column, name, agent in _stitched_lines(st):
        color = AGENT_COLOR if agent else BASELINE_COLORS.get(name, "#999999")
        fig.add_trace(go.Scatter(x=t, y=st[column], name=name, line={"color": color, "width": 2 if agent else 1}))
    starts = stitched.groupby("fold")["ts_ms"].min().to_numpy()[1:]
    for x in utc_times(starts):
        fig.add_vline(x=x, line={"color": "#bbbbbb", "dash": "dot", "width": 1})
    fig.update_layout(title=title, height=560, template="plotly_white", hovermode="x unified",
                      yaxis_title="growth of 1 (out of sample, stitched)",
                      margin={"l": 60, "r": 20, "t": 60, "b": 40})
    return fig


def _stitched_png(stitched: pd.DataFrame, title: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .plots import AGENT_COLOR, BASELINE_COLORS, thin_index, utc_times

    st = stitched.iloc[thin_index(len(stitched))]
    t = utc_times(st["ts_ms"])
    fig = Figure(figsize=(12, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for column, name, agent in _stitched_lines(st):
        if agent:
            ax.plot(t, st[column], color=AGENT_COLOR, lw=1.2, alpha=0.8)
        else:
            ax.plot(t, st[column], color=BASELINE_COLORS.get(name), lw=0.9, label=name)
    ax.plot([], [], color=AGENT_COLOR, label="agent (one line per seed)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_ylabel("growth of 1 (out of sample)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)


def _write_walk_forward_report(folder: Path, summary: Mapping[str, Any], stitched: pd.DataFrame) -> None:
    import html

    from .plots import plotly_html
    from .report_format import (
        fmt_frac,
        fmt_int,
        fmt_pct,
        fmt_ts,
        fmt_value,
        metric_cell,
        page,
        table_html,
        verdicts_html,
        warnings_html,
        yaml_block,
    )

    m = summary.get("meta", {})
    seeds = summary.get("seeds", [])
    title = (
        f"Walk-forward: {m.get('symbol', '')} {m.get('timeframe', '')}, "
        f"{summary.get('n_folds')} folds x {len(seeds)} seeds"
    )
    _stitched_png(stitched, title, folder / PNG_FILE)
    chart = plotly_html(_stitched_plotly(stitched, title), full_html=False, div_id="equity-chart")
    summ = summary.get("summary", {})
    means = summary_means(summ)
    names = list(summ)
    rows = []
    for metric in SUMMARY_METRICS:
        f = fmt_pct if metric.endswith("return") else (fmt_frac if metric in ("max_drawdown", "win_rate", "exposure") else (lambda v: f"{v:,.3f}"))
        cells = []
        for n in names:
            x = summ[n].get(metric)
            if x is None or x.get("aggregate"):  # one value, no interval: as the console prints it
                cells.append(metric_cell(means[n], metric, f))
                continue
            cells.append(
                f"{fmt_value(x['mean'], f)}<br><small>median {fmt_value(x.get('median'), f)}; "
                f"[{fmt_value(x['ci_low'], f)}, {fmt_value(x['ci_high'], f)}]</small>"
            )
        label = metric.replace("_", " ")
        if metric == "annualised_return":
            label += " (aggregate: fold means compounded, annualised over all test bars)"
        rows.append([html.escape(label), *cells])
    st = summary.get("stats", {})
    stat_rows = [
        [f"Deflated Sharpe ratio, best seed ({fmt_value(st.get('best_seed'), fmt_int)}), over "
         f"{fmt_value(st.get('n_trials'), fmt_int)} trial(s)", fmt_value(st.get("dsr_best_seed"), fmt_frac)],
        ["Probabilistic Sharpe ratio, best seed", fmt_value(st.get("psr_best_seed"), fmt_frac)],
        *[[f"Deflated Sharpe ratio, seed {s}", fmt_value(st.get(f"dsr_seed_{s}"), fmt_frac)] for s in seeds],
    ]
    run_rows = []
    for r in summary.get("runs", []):
        run_rows.append([
            str(r["fold"]), str(r["seed"]), f"{fmt_ts(r['start_ts_ms'])} to {fmt_ts(r['end_ts_ms'])}",
            fmt_value(r["total_return"], fmt_pct), fmt_value(r["sharpe"]),
            fmt_value(r["max_drawdown"], fmt_frac),
            *[fmt_value(r.get(f"{b}_total_return"), fmt_pct) for b in names[1:]],
        ])
    body = [
        f"<h1>{html.escape(title)}</h1>",
        '<p class="sub">Each fold retrains from scratch on its own train rows (normaliser fitted '
        f"there), with an embargo of {fmt_value(m.get('embargo_bars'), fmt_int)} bars between "
        "train, validation and test; every figure below is from the folds' test rows, after "
        "costs. Intervals: bootstrap over folds, then seeds within folds.</p>",
        "<h2>Verdict</h2>",
        warnings_html(summary.get("warnings", [])),
        verdicts_html(summary.get("verdicts", [])),
        "<h2>Out-of-sample equity, stitched over folds</h2>",
        chart,
        "<h2>Metrics: mean over runs, median; [confidence interval]</h2>",
        table_html(["Metric", *(html.escape(n) for n in names)], rows, "metrics"),
        "<h2>Sharpe ratio statistics</h2>",
        table_html(["Statistic", "Value"], stat_rows),
        "<h2>Runs</h2>",
        table_html(["Fold", "Seed", "Test period", "Agent return", "Sharpe", "Max DD",
                    *(html.escape(f"{b} return") for b in names[1:])], run_rows),
        "<h2>Configuration</h2>",
        yaml_block(summary.get("config", {})),
        "<h2>Folds</h2>",
        yaml_block(m.get("folds", [])),
        "<h2>Versions</h2>",
        yaml_block(summary.get("versions", {})),
    ]
    (folder / REPORT_FILE).write_text(page(title, "\n".join(body)), encoding="utf-8")


def render_walk_forward_report(folder: str | Path) -> Path:
    """Redraw ``report.html`` and ``walkforward.png`` of a walk-forward folder from its files.

    Raises:
        DataError: not a walk-forward folder.
    """
    import pandas as pd

    root = Path(folder)
    if (root / SUMMARY_FILE).is_file():  # a portfolio walk-forward: its own page, from the JSON
        from .walkforward_portfolio import KIND, portfolio_walkforward_html

        summary = json.loads((root / SUMMARY_FILE).read_text(encoding="utf-8"))
        if summary.get("kind") == KIND:
            (root / REPORT_FILE).write_text(portfolio_walkforward_html(summary), encoding="utf-8")
            return root / REPORT_FILE
    if not (root / SUMMARY_FILE).is_file() or not (root / STITCHED_FILE).is_file():
        raise DataError(f"{root} is not a walk-forward results folder (no {SUMMARY_FILE}); run coinrl walkforward")
    summary = json.loads((root / SUMMARY_FILE).read_text(encoding="utf-8"))
    _write_walk_forward_report(root, summary, pd.read_parquet(root / STITCHED_FILE))
    return root / REPORT_FILE


def _log_walk_forward(folder: Path, tracking: TrackingConfig, run_name: str, summary: Mapping[str, Any]) -> None:
    import wandb

    from .tracking import Tracker

    tracker = Tracker(tracking, run_name, summary.get("config", {}), folder.parent)
    try:
        if not tracker.enabled:
            return
        scalars: dict[str, Any] = {}
        for name, ms in summary.get("summary", {}).items():
            for metric, x in ms.items():
                for k, v in x.items():
                    scalars[f"walkforward/{name}/{metric}/{k}"] = v
        scalars.update({f"walkforward/stats/{k}": v for k, v in summary.get("stats", {}).items()})
        tracker.summary(scalars)
        tracker.run.log({
            "walkforward/chart": wandb.Image(str(folder / PNG_FILE)),
            "walkforward/report": wandb.Html((folder / REPORT_FILE).read_text(encoding="utf-8")),
        })
        tracker.log_artifact(folder, f"{run_name}-results", "walkforward")
    finally:
        tracker.finish()


__all__ = [
    "PNG_FILE",
    "REPORT_FILE",
    "RUNS_DIR",
    "STITCHED_FILE",
    "SUMMARY_FILE",
    "render_walk_forward_report",
    "save_walk_forward",
]
