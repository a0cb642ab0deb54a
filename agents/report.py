"""Backtest reports: one self-contained folder a person wants to read, and its W&B run.

:func:`save_backtest_results` writes::

    report.html      verdicts, interactive chart (plotly.js embedded: opens offline), metrics
                     of the strategy beside every baseline, Sharpe statistics, fills, config,
                     data fingerprints and library versions
    backtest.png     the same chart as a picture (matplotlib)
    equity.parquet   one row per mark: time, prices, equity, position, exposure, target,
                     drawdown, each baseline's equity
    fills.parquet    one row per fill: time, side, quantity, price, fee, slippage, ...
    fills.csv        the same, every fill (linked from the page)
    trades.csv       one row per round trip: entry, exit, side, prices, PnL, duration, fees
    metrics.json     metrics, baseline metrics, verdicts, statistics, meta, config

The page is a tear sheet (:mod:`coinrl.agents.tearsheet`): verdict first, then the chart,
metrics beside every baseline, round trips and their summary, monthly/yearly returns, the
worst drawdowns, the return distribution with VaR/CVaR, alpha/beta/information ratio against
buy-and-hold, the directional quality of the calls, the cost sweep when one was run, the fills,
the data and the configuration.

and, with a :class:`~coinrl.agents.config.TrackingConfig`, logs the same content to a W&B run
(summary metrics, the chart, the report page, the tables, the folder as an artifact).
:func:`render_report` redraws ``report.html`` and ``backtest.png`` from the stored tables
alone (``coinrl report DIR``).
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coinrl.pipeline.errors import DataError

from .config import TrackingConfig
from .metrics import json_safe
from .plots import backtest_figure, backtest_plotly, plotly_html
from .report_format import (
    ANNUALISED_KEYS,
    METRIC_ROWS,
    fmt_frac,
    fmt_int,
    fmt_money,
    fmt_num,
    fmt_pct,
    fmt_ts,
    fmt_value,
    metric_cell,
    metrics_table,
    page,
    table_html,
    verdicts_html,
    warnings_html,
    yaml_block,
)

if TYPE_CHECKING:
    import pandas as pd

    from .backtest import BacktestResult
    from .portfolio_backtest import PortfolioBacktestResult

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
PNG_FILE = "backtest.png"
EQUITY_FILE = "equity.parquet"
FILLS_FILE = "fills.parquet"
METRICS_FILE = "metrics.json"
FILLS_CSV = "fills.csv"
TRADES_CSV = "trades.csv"
REPORT_FILES = (REPORT_FILE, PNG_FILE, EQUITY_FILE, FILLS_FILE, METRICS_FILE, FILLS_CSV, TRADES_CSV)
MAX_FILL_ROWS = 200
"""Fills listed in the HTML page (all of them are in ``fills.parquet``)."""


# --------------------------------------------------------------------------- the saved folder


@dataclass(frozen=True)
class SavedBacktest:
    """A report folder's tables: ``summary`` (metrics.json), ``equity`` and ``fills``."""

    summary: dict[str, Any]
    equity: pd.DataFrame
    fills: pd.DataFrame

    @property
    def title(self) -> str:
        """``<name>: <symbol> <timeframe> <split>``."""
        m = self.summary.get("meta", {})
        return f"{self.summary.get('name', 'strategy')}: {m.get('symbol', '')} {m.get('timeframe', '')} {m.get('split', '')}"

    @property
    def periods_per_year(self) -> float:
        """Bars a year of the backtested data."""
        return float(self.summary.get("meta", {}).get("periods_per_year") or 8760.0)


def load_backtest_results(folder: str | Path) -> SavedBacktest:
    """Read a folder written by :func:`save_backtest_results`.

    Raises:
        DataError: a missing or unreadable file (names the file and what to do).
    """
    import pandas as pd

    root = Path(folder)
    missing = [n for n in (METRICS_FILE, EQUITY_FILE, FILLS_FILE) if not (root / n).is_file()]
    if missing:
        raise DataError(
            f"{root} is not a backtest report folder ({', '.join(missing)} missing); pass a "
            "folder written by save_backtest_results / coinrl backtest"
        )
    try:
        summary = json.loads((root / METRICS_FILE).read_text(encoding="utf-8"))
        equity = pd.read_parquet(root / EQUITY_FILE)
        fills = pd.read_parquet(root / FILLS_FILE)
    except (OSError, ValueError) as e:
        raise DataError(f"{root}: cannot read the report tables ({e}); re-run the backtest") from e
    return SavedBacktest(summary, equity, fills)


def report_versions() -> dict[str, Any]:
    """Library versions, python and git commit (recorded in every report)."""
    from .bundle import library_versions

    return library_versions()


def report_html(saved: SavedBacktest, sections: Sequence[str] | None = None) -> str:
    """The report page of a saved backtest (see the module docstring).

    Args:
        saved: the folder's tables.
        sections: the tear sheet's HTML sections (default: computed from the tables, see
            :func:`~coinrl.agents.tearsheet_html.tearsheet_sections`).
    """
    from .portfolio_report import is_portfolio_report, portfolio_report_html

    if is_portfolio_report(saved.summary):
        return portfolio_report_html(saved)
    if sections is None:
        from .tearsheet_html import tearsheet_sections

        sections, _ = tearsheet_sections(saved.summary, saved.equity, saved.fills, saved.periods_per_year)
    s = saved.summary
    m = s.get("meta", {})
    name = str(s.get("name", "strategy"))
    pfig = backtest_plotly(saved.equity, saved.fills, "", saved.periods_per_year)
    chart = plotly_html(pfig, full_html=False, div_id="equity-chart")
    columns = {name: s.get("metrics", {}), **s.get("baselines", {})}
    stats = s.get("stats", {})
    stat_rows = [
        ["Probabilistic Sharpe ratio P(SR > 0)", fmt_value(stats.get("psr"), fmt_frac)],
        [f"Deflated Sharpe ratio ({fmt_value(stats.get('n_trials'), fmt_int)} trial(s))",
         fmt_value(stats.get("dsr"), fmt_frac)],
        ["Sharpe per bar / expected best of trials by luck",
         f"{fmt_value(stats.get('sharpe_per_bar'), lambda v: f'{v:.4f}')} / "
         f"{fmt_value(stats.get('sr0_per_bar'), lambda v: f'{v:.4f}')}"],
        ["Skewness / kurtosis of bar returns",
         f"{fmt_value(stats.get('skew'))} / {fmt_value(stats.get('kurtosis'))}"],
    ] if stats else []
    f = saved.fills
    fill_rows = [
        [fmt_ts(r.ts_ms), html.escape(str(r.side)), f"{r.qty_base:.6g}", f"{r.price_quote:.6g}",
         f"{r.fee_quote:.4g}", f"{r.slippage_quote:.4g}", "yes" if bool(r.liquidation) else ""]
        for r in f.head(MAX_FILL_ROWS).itertuples()
    ]
    data_rows = [
        ["Market", html.escape(f"{m.get('symbol', '')} {m.get('timeframe', '')} {m.get('exchange', '')}")],
        ["Split", html.escape(str(m.get("split", "")))],
        ["Time range (bar opens)", f"{fmt_ts(m.get('start_ts_ms'))} to {fmt_ts(m.get('end_ts_ms'))}"],
        ["Decisions", fmt_value(m.get("n_decisions"), fmt_int)],
        ["Bars backtested: sha256", html.escape(str(m.get("market_fingerprint", "-")))],
        ["Candles file: sha256", html.escape(str(m.get("data_fingerprint") or "-"))],
        ["Normaliser fingerprint", html.escape(str(m.get("normaliser_fingerprint") or "-"))],
        ["Feature spec fingerprint", html.escape(str(m.get("feature_spec_fingerprint") or "-"))],
    ]
    env = s.get("env", {})
    described = str(m.get("data_description") or f"the {m.get('split', '')} split")
    costs = (
        f"taker fee {env.get('taker_fee_rate', 0):.4%}, slippage {env.get('slippage_bps', 0):g} bps, "
        f"fill delay {env.get('delay_bars', 1)} bar(s) at the open, initial cash "
        f"{env.get('initial_cash_quote', 0):,.0f}"
    ) if env else ""
    body = [
        f"<h1>Backtest report: {html.escape(saved.title)}</h1>",
        f'<p class="sub">{fmt_ts(m.get("start_ts_ms"))} to {fmt_ts(m.get("end_ts_ms"))}, '
        f"{fmt_value(m.get('n_decisions'), fmt_int)} decisions; {html.escape(costs)}. Data: "
        f"<b>{html.escape(described)}</b>. Every number is after costs; the baselines ran on the "
        "same bars with the same costs.</p>",
        (f'<p class="warn">{html.escape(str(m["cost_overrides_note"]))}</p>'
         if m.get("cost_overrides_note") else ""),
        "<h2>Verdict</h2>",
        warnings_html(s.get("warnings", [])),
        verdicts_html(s.get("verdicts", [])) or "<p>No baselines were run.</p>",
        "<h2>Equity, positions and trades</h2>",
        chart,
        "<h2>Metrics</h2>",
        metrics_table(columns),
        _random_note(s.get("baselines", {}).get("random")),
    ]
    if stat_rows:
        body += ["<h2>Sharpe ratio statistics</h2>", table_html(["Statistic", "Value"], stat_rows)]
    body += list(sections)
    body += [
        f"<h2>Fills ({len(f):,}{'' if len(f) <= MAX_FILL_ROWS else f', first {MAX_FILL_ROWS} below'})</h2>",
        f'<p>Every fill: <a href="{FILLS_CSV}" download>{FILLS_CSV}</a> '
        f'(also <a href="{FILLS_FILE}" download>{FILLS_FILE}</a>).</p>',
        '<div class="scroll">'
        + table_html(["Time", "Side", "Qty (base)", "Price", "Fee", "Slippage", "Liquidation"], fill_rows, "fills")
        + "</div>",
        "<h2>Data</h2>",
        table_html(["", ""], data_rows),
        "<h2>Configuration</h2>",
        yaml_block({"env": env, **{k: v for k, v in s.get("config", {}).items() if k != "env"}}),
        "<h2>Versions</h2>",
        yaml_block(s.get("versions", {})),
    ]
    return page(f"coinrl backtest: {saved.title}", "\n".join(body))


def _random_note(random: Mapping[str, Any] | None) -> str:
    if not random or random.get("draws_mean_total_return") is None:
        return ""
    return (
        '<p class="sub">random: the policy changes its target as often as the strategy did, at '
        "random bars; its column is the MEAN over "
        f"{fmt_value(random.get('n_draws'), fmt_int)} draws (total return "
        f"{fmt_value(random.get('draws_mean_total_return'), fmt_pct)}, std "
        f"{fmt_value(random.get('draws_std_total_return'), fmt_frac)}, range "
        f"{fmt_value(random.get('draws_min_total_return'), fmt_pct)} to "
        f"{fmt_value(random.get('draws_max_total_return'), fmt_pct)}) and its verdict pools "
        "every draw; the chart shows its first draw.</p>"
    )


def _write_report_files(folder: Path, saved: SavedBacktest) -> None:
    from .portfolio_report import is_portfolio_report, write_portfolio_report_files
    from .tearsheet_html import tearsheet_sections

    if is_portfolio_report(saved.summary):
        write_portfolio_report_files(folder, saved)
        return

    fig = backtest_figure(saved.equity, saved.fills, saved.title, saved.periods_per_year)
    fig.savefig(folder / PNG_FILE)
    sections, trades = tearsheet_sections(saved.summary, saved.equity, saved.fills, saved.periods_per_year)
    trades.to_csv(folder / TRADES_CSV, index=False)
    saved.fills.to_csv(folder / FILLS_CSV, index=False)
    (folder / REPORT_FILE).write_text(report_html(saved, sections), encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON with sorted keys (NaN/inf as null, see
    :func:`~coinrl.agents.metrics.json_safe`)."""
    path.write_text(json.dumps(json_safe(data), indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


def write_result_tables(folder: Path, summary: Mapping[str, Any], equity: pd.DataFrame, fills: pd.DataFrame) -> None:
    """The tables of one backtest: ``equity.parquet``, ``fills.parquet`` and ``metrics.json``
    (a report folder, or one run of a walk-forward folder)."""
    equity.to_parquet(folder / EQUITY_FILE, index=False)
    fills.to_parquet(folder / FILLS_FILE, index=False)
    write_json(folder / METRICS_FILE, summary)


def atomic_folder(dest: Path, build: Callable[[Path], None]) -> None:
    """``build(tmp)`` a folder beside ``dest``, then rename it into place (replacing ``dest``)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        inner = tmp / "out"
        inner.mkdir()
        build(inner)
        if dest.exists():
            os.replace(dest, tmp / "old")
        os.replace(inner, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_backtest_results(
    results: BacktestResult | PortfolioBacktestResult,
    filename: str | Path,
    *,
    tracking: TrackingConfig | None = None,
    run_name: str | None = None,
) -> Path:
    """Write a self-contained report folder (atomically: built aside, then renamed in place).

    Args:
        results: the :class:`~coinrl.agents.backtest.BacktestResult` (or a portfolio's
            :class:`~coinrl.agents.portfolio_backtest.PortfolioBacktestResult`: the same
            folder, with the portfolio page of :mod:`~coinrl.agents.portfolio_report`).
        filename: the report folder (replaced if it exists).
        tracking: also log the report to a W&B run (``offline`` writes it beside the folder,
            under ``<parent>/wandb``); None or ``mode="disabled"``: no W&B.
        run_name: W&B run name (default ``backtest-<name>``).

    Returns:
        The folder, holding ``report.html``, ``backtest.png``, ``equity.parquet``,
        ``fills.parquet``, ``fills.csv``, ``trades.csv`` and ``metrics.json``.
    """
    dest = Path(filename)
    summary = results.to_dict()
    summary["versions"] = report_versions()
    saved = SavedBacktest(summary, results.equity_frame(), results.fills.reset_index(drop=True))

    def build(d: Path) -> None:
        write_result_tables(d, summary, saved.equity, saved.fills)
        _write_report_files(d, saved)

    atomic_folder(dest, build)
    logger.info(
        "saved backtest report path=%s name=%s fills=%d", dest, results.name, len(results.fills)
    )
    if tracking is not None and tracking.mode != "disabled":
        log_report_to_wandb(dest, tracking, run_name or f"backtest-{results.name}", results.flat())
    return dest


def render_report(folder: str | Path) -> Path:
    """Redraw ``report.html``, ``backtest.png``, ``trades.csv`` and ``fills.csv`` of a report
    folder from its tables.

    Returns:
        The path of ``report.html``.
    """
    root = Path(folder)
    saved = load_backtest_results(root)
    _write_report_files(root, saved)
    logger.info("rendered report path=%s", root / REPORT_FILE)
    return root / REPORT_FILE


def log_report_to_wandb(
    folder: str | Path,
    tracking: TrackingConfig,
    run_name: str,
    scalars: Mapping[str, float] | None = None,
) -> str | None:
    """Log a report folder to a new W&B run: summary scalars, the chart image, the page, the
    fills and equity tables and the folder as a ``backtest`` artifact.

    Returns:
        The W&B run id (None when tracking is disabled).
    """
    import wandb

    from .tracking import Tracker

    root = Path(folder)
    saved = load_backtest_results(root)
    tracker = Tracker(tracking, run_name, saved.summary.get("config", {}), root.parent)
    try:
        if not tracker.enabled:
            return None
        tracker.summary(dict(scalars or {}))
        run = tracker.run
        run.log({
            "backtest/chart": wandb.Image(str(root / PNG_FILE)),
            "backtest/report": wandb.Html((root / REPORT_FILE).read_text(encoding="utf-8")),
            "backtest/fills": wandb.Table(dataframe=saved.fills.head(10_000)),
            "backtest/equity": wandb.Table(dataframe=saved.equity.iloc[:: max(1, len(saved.equity) // 5000)]),
        })
        tracker.log_artifact(root, f"{run_name}-report", "backtest",
                             metadata=saved.summary.get("meta", {}))
        return tracker.run_id
    finally:
        tracker.finish()


__all__ = [
    "ANNUALISED_KEYS",
    "FILLS_CSV",
    "METRIC_ROWS",
    "TRADES_CSV",
    "atomic_folder",
    "fmt_frac",
    "fmt_int",
    "fmt_money",
    "fmt_num",
    "fmt_pct",
    "report_versions",
    "REPORT_FILES",
    "SavedBacktest",
    "fmt_ts",
    "fmt_value",
    "load_backtest_results",
    "log_report_to_wandb",
    "metric_cell",
    "metrics_table",
    "page",
    "render_report",
    "report_html",
    "save_backtest_results",
    "table_html",
    "verdicts_html",
    "warnings_html",
    "yaml_block",
]
