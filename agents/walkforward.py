"""Walk-forward evaluation: retrain per fold and seed, test out of sample, judge with intervals.

:func:`walk_forward` takes prepared data with walk-forward folds
(:attr:`~coinrl.pipeline.splits.PreparedData.folds`: train / embargo / validation / embargo /
test blocks whose test blocks tile the end of the data), and for every fold and seed:

1. fits the normaliser on that fold's train rows only (:meth:`PreparedData.fold_data`);
2. trains a fresh agent on the fold's train rows, validating on its validation rows
   (:func:`~coinrl.agents.train.train_model`);
3. backtests it on the fold's test rows beside the baselines on the same bars and costs; all
   the fold x seed backtests run together (:func:`~coinrl.agents.backtest.simulate_many`).

The :class:`WalkForwardResult` reports every metric as a mean over runs with a bootstrap
confidence interval (folds resampled, then seeds within folds), a verdict per baseline on the
total return (:func:`~coinrl.agents.stats.verdict_from_runs`), and the deflated Sharpe ratio of
the stitched out-of-sample returns over the number of configurations tried (each seed is one;
pass ``n_trials`` to count the configurations tried before, e.g. in tuning).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from coinrl.envs.config import EnvConfig, env_config_from
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.splits import PreparedData

from .backtest import BacktestResult, simulate_many
from .baselines import MA_CROSSOVER_BARS
from .config import TrackingConfig, TrainConfig
from .metrics import can_annualise, json_safe, simple_returns
from .stats import Verdict, bootstrap_mean_ci, lookahead_warning, sharpe_stats, verdict_from_runs

if TYPE_CHECKING:
    import pandas as pd

    from .agent import TrainedAgent

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

SUMMARY_METRICS = (
    "total_return", "annualised_return", "sharpe", "sortino", "max_drawdown", "calmar",
    "win_rate", "profit_factor", "turnover", "exposure", "fees_paid_quote",
)
"""Metrics summarised as mean and confidence interval over the runs."""

SUMMARY_FILE = "walkforward.json"
STITCHED_FILE = "stitched.parquet"
REPORT_FILE = "report.html"
PNG_FILE = "walkforward.png"
RUNS_DIR = "runs"

ProgressFn = Callable[[str, int, int], None]
"""``(stage, done, total)``: called as folds train and backtests finish."""


def fold_prepared(prepared: PreparedData, i: int) -> PreparedData:
    """Fold ``i`` as a PreparedData for :func:`~coinrl.agents.train.train_model`: its train,
    validation and test parts and ``full``, all normalised by the normaliser fitted on the
    fold's own train rows."""
    fd = prepared.fold_data(i)
    full = dataclasses.replace(
        prepared.full,
        features=fd.normaliser.transform(prepared.raw_features),
        meta={**prepared.full.meta, "fold": i, "normaliser_fingerprint": fd.normaliser.fingerprint()},
    )
    return dataclasses.replace(
        prepared, train=fd.train, validation=fd.validation, test=fd.test, full=full,
        normaliser=fd.normaliser, main_fold=fd.fold,
    )


@dataclass(eq=False)
class WalkForwardResult:
    """Every fold x seed backtest and their summary.

    Attributes:
        results: ``results[fold][seed_index]``: the test-split backtest of that run.
        seeds: the training seeds.
        summary: per strategy (``agent`` and each baseline), per metric of
            :data:`SUMMARY_METRICS`: ``mean``, ``median``, ``ci_low``, ``ci_high`` over the
            runs. ``annualised_return`` is the exception: the per-run figures of short folds
            are not annualised, so its ``mean`` is the AGGREGATE: the mean total return of
            each fold compounded over the folds and annualised over all their bars (nan when
            the folds together are too short, see
            :func:`~coinrl.agents.metrics.can_annualise`); ``aggregate`` is 1.0 there.
        verdicts: the agent against each baseline on the total return, over runs.
        stats: deflated Sharpe ratio of the stitched out-of-sample returns (best seed) and
            per seed (``dsr_seed_<s>``), ``n_trials``.
        warnings: plain-language warnings (implausible Sharpe ratios).
        config: the experiment config that was walked forward.
        meta: symbol, timeframe, fold layout (row ranges and times), embargo.
    """

    results: list[list[BacktestResult]]
    seeds: list[int]
    summary: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_folds(self) -> int:
        """Number of folds."""
        return len(self.results)

    def metric_matrix(self, metric: str, strategy: str = "agent") -> F64:
        """``(folds, seeds)`` values of a metric for the agent or a baseline."""
        def get(r: BacktestResult) -> float:
            m = r.metrics if strategy == "agent" else r.baselines[strategy].metrics
            return float(m[metric])

        return np.asarray([[get(r) for r in row] for row in self.results], dtype=np.float64)

    def stitched_returns(self, seed_index: int) -> F64:
        """The agent's out-of-sample bar returns of one seed, folds in time order."""
        return np.concatenate([simple_returns(row[seed_index].equity_quote) for row in self.results])

    def stitched_frame(self) -> pd.DataFrame:
        """Out-of-sample equity stitched over the folds (each fold starts where the last ended):
        ``ts_ms``, ``fold``, ``agent_seed_<s>_equity_quote`` per seed and
        ``baseline_<name>_equity_quote`` (baselines of the first seed's runs), from 1.0."""
        import pandas as pd

        first = [row[0] for row in self.results]
        ts = np.concatenate([r.ts_ms[1:] for r in first])
        ts = np.r_[first[0].ts_ms[0], ts]
        fold = np.r_[0, np.concatenate([np.full(len(r.ts_ms) - 1, i) for i, r in enumerate(first)])]
        cols: dict[str, Any] = {"ts_ms": ts.astype(np.int64), "fold": fold.astype(np.int64)}
        for j, s in enumerate(self.seeds):
            r = self.stitched_returns(j)
            cols[f"agent_seed_{s}_equity_quote"] = np.r_[1.0, np.cumprod(1.0 + r)]
        for name in first[0].baselines:
            r = np.concatenate([simple_returns(x.baselines[name].equity_quote) for x in first])
            cols[f"baseline_{name}_equity_quote"] = np.r_[1.0, np.cumprod(1.0 + r)]
        return pd.DataFrame(cols)

    def runs_table(self) -> list[dict[str, Any]]:
        """One row per run: fold, seed, test time range, agent and baseline total returns,
        agent Sharpe, max drawdown, fills."""
        rows = []
        for i, row in enumerate(self.results):
            for s, r in zip(self.seeds, row, strict=True):
                rows.append({
                    "fold": i,
                    "seed": s,
                    "start_ts_ms": r.meta.get("start_ts_ms"),
                    "end_ts_ms": r.meta.get("end_ts_ms"),
                    "n_decisions": r.meta.get("n_decisions"),
                    "total_return": r.metrics["total_return"],
                    "sharpe": r.metrics["sharpe"],
                    "max_drawdown": r.metrics["max_drawdown"],
                    "n_fills": r.metrics.get("n_fills"),
                    **{f"{b}_total_return": x.metrics["total_return"] for b, x in r.baselines.items()},
                })
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (what ``walkforward.json`` holds)."""
        return dict(json_safe({
            "kind": "walkforward",
            "n_folds": self.n_folds,
            "seeds": self.seeds,
            "summary": self.summary,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "stats": self.stats,
            "warnings": self.warnings,
            "runs": self.runs_table(),
            "config": self.config,
            "meta": self.meta,
        }))

    def verdict_lines(self) -> list[str]:
        """The plain verdict sentences, one per baseline."""
        return [v.line() for v in self.verdicts]


def _aggregate_annualised(total_returns: F64, total_bars: float, ppy: float) -> dict[str, float]:
    """The folds' mean total returns compounded and annualised over all their bars."""
    growth = float(np.prod(1.0 + np.nanmean(total_returns, axis=1)))
    if not can_annualise(total_bars, ppy) or total_bars <= 0:
        value = float("nan")
    else:
        value = -1.0 if growth <= 0 else float(growth ** (ppy / total_bars) - 1.0)
    return {
        "mean": value, "median": value, "ci_low": float("nan"), "ci_high": float("nan"),
        "aggregate": 1.0,
    }


def summarise(
    results: list[list[BacktestResult]],
    seeds: Sequence[int],
    *,
    n_trials: int | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> WalkForwardResult:
    """Means, intervals, verdicts and deflated Sharpe ratios of fold x seed backtests.

    Args:
        results: ``results[fold][seed_index]`` test backtests (with baselines).
        seeds: the seeds, in the order of each row.
        n_trials: configurations tried (default: the number of seeds; never fewer).
        confidence: level of the intervals.
        seed: seed of the bootstrap.
    """
    if not results or not results[0]:
        raise DataError("walk-forward summary of no runs; train at least one fold and seed")
    out = WalkForwardResult(results=results, seeds=list(seeds))
    names = ["agent", *results[0][0].baselines]
    ppy = float(results[0][0].rollout.periods_per_year)
    fold_bars = np.asarray([row[0].rollout.n_steps for row in results], dtype=np.float64)
    total_bars = float(fold_bars.sum())
    short_folds = int(sum(not can_annualise(b, ppy) for b in fold_bars))
    for name in names:
        out.summary[name] = {}
        for metric in SUMMARY_METRICS:
            if metric == "annualised_return":
                out.summary[name][metric] = _aggregate_annualised(
                    out.metric_matrix("total_return", name), total_bars, ppy
                )
                continue
            x = out.metric_matrix(metric, name)
            finite = x[np.isfinite(x)]
            if finite.size == 0:
                continue
            if finite.size == x.size:
                mean, lo, hi, _ = bootstrap_mean_ci(x, confidence=confidence, seed=seed)
            else:  # inf ratios (no losses at all): no interval, mean of the finite runs
                mean, lo, hi = float(finite.mean()), float("nan"), float("nan")
            out.summary[name][metric] = {
                "mean": mean, "median": float(np.median(finite)), "ci_low": lo, "ci_high": hi,
            }
    if short_folds:
        out.warnings.append(
            f"SMALL SAMPLE: {short_folds} of {len(results)} test folds are shorter than a quarter "
            "of a year of bars; their annualised figures are n/a and the annualised return "
            "shown is the aggregate over all folds."
        )
    agent_tr = out.metric_matrix("total_return")
    out.verdicts = [
        verdict_from_runs(agent_tr, out.metric_matrix("total_return", b), b, "total_return",
                          confidence=confidence, seed=seed, small_sample=short_folds > 0)
        for b in names[1:]
    ]
    s = len(seeds)
    trials = max(int(n_trials or s), s)
    per_seed = [sharpe_stats(out.stitched_returns(j)) for j in range(s)]
    srs = np.asarray([p["sharpe_per_bar"] for p in per_seed])
    var = float(srs.var(ddof=1)) if s > 1 else None
    dsrs = [sharpe_stats(out.stitched_returns(j), trials, var) for j in range(s)]
    best = int(np.argmax(srs))
    out.stats = {
        "n_trials": float(trials),
        "dsr_best_seed": dsrs[best]["dsr"],
        "best_seed": float(seeds[best]),
        "psr_best_seed": dsrs[best]["psr"],
        "sharpe_per_bar_best_seed": float(srs[best]),
        "sharpe_variance_across_seeds": var if var is not None else float("nan"),
        "sr0_per_bar": dsrs[best]["sr0_per_bar"],
        **{f"dsr_seed_{sd}": d["dsr"] for sd, d in zip(seeds, dsrs, strict=True)},
    }
    mean_sharpe = out.summary["agent"].get("sharpe", {}).get("mean", 0.0)
    warn = lookahead_warning(mean_sharpe)
    if warn:
        out.warnings.append(warn)
    first = results[0][0]
    out.meta = {
        "symbol": first.meta.get("symbol"),
        "timeframe": first.meta.get("timeframe"),
        "periods_per_year": first.meta.get("periods_per_year"),
        "folds": [
            {"fold": i, "start_ts_ms": row[0].meta.get("start_ts_ms"),
             "end_ts_ms": row[0].meta.get("end_ts_ms"), "n_decisions": row[0].meta.get("n_decisions")}
            for i, row in enumerate(results)
        ],
    }
    return out


def walk_forward(
    prepared: PreparedData,
    train_config: TrainConfig,
    env_config: EnvConfig | Mapping[str, Any] | None = None,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    n_trials: int | None = None,
    experiment_config: Mapping[str, Any] | None = None,
    confidence: float = 0.95,
    n_random: int = 5,
    ma_crossover: tuple[int, int] | None = MA_CROSSOVER_BARS,
    progress: ProgressFn | None = None,
) -> WalkForwardResult:
    """Retrain per fold and seed, backtest each on its fold's test rows, summarise.

    Args:
        prepared: data with walk-forward folds (``split.walk_forward_folds >= 1``; set an
            ``embargo_bars`` of at least the env window so no observation of a test block
            reaches back into its validation block).
        train_config: the training config (its seed is replaced by each of ``seeds``).
        env_config: costs and rules (the same for training, test and baselines).
        seeds: training seeds per fold.
        n_trials: configurations tried in total (deflated Sharpe ratio); default
            ``len(seeds)``.
        experiment_config: the full config to record in the bundles and the result.
        confidence: level of the intervals and verdicts.
        n_random: draws of the random baseline per run.
        ma_crossover: windows of the crossover baseline (None: leave it out).
        progress: called with ``("train", done, total)`` after each training and
            ``("backtest", 1, 1)`` when the backtests are done.

    Returns:
        The :class:`WalkForwardResult`.

    Raises:
        ConfigError: no folds, or no seeds.
    """
    from .train import train_model

    if not prepared.folds:
        raise ConfigError(
            "the data has no walk-forward folds; set data.split.walk_forward_folds (e.g. 4) "
            "or pass --folds"
        )
    if not seeds:
        raise ConfigError("walk_forward needs at least one seed")
    env = env_config_from(env_config)
    k = len(prepared.folds)
    total = k * len(seeds)
    agents: list[TrainedAgent] = []
    datas = []
    done = 0
    for i in range(k):
        fp = fold_prepared(prepared, i)
        for s in seeds:
            cfg = train_config.model_copy(update={"seed": int(s)})
            logger.info("walk-forward fold=%d/%d seed=%d train_rows=%d test_rows=%d",
                        i + 1, k, s, len(fp.train), len(fp.test))
            agent = train_model(fp, cfg, env, experiment_config={**dict(experiment_config or {}), "seed": int(s)})
            agent.info["fold"] = i
            agents.append(agent)
            datas.append(fp.test)
            done += 1
            if progress is not None:
                progress("train", done, total)
    flat = simulate_many(
        agents, datas, env_config=env, n_random=n_random, ma_crossover=ma_crossover,
        n_trials=max(int(n_trials or len(seeds)), len(seeds)), confidence=confidence,
    )
    if progress is not None:
        progress("backtest", 1, 1)
    ns = len(seeds)
    results = [flat[i * ns : (i + 1) * ns] for i in range(k)]
    out = summarise(results, seeds, n_trials=n_trials, confidence=confidence)
    out.config = dict(json_safe(dict(experiment_config or {})))
    out.meta["embargo_bars"] = prepared.split.embargo_bars
    out.meta["walk_forward_mode"] = prepared.split.walk_forward_mode
    out.meta["data_fingerprint"] = prepared.data_fingerprint
    for j, f in enumerate(prepared.folds):
        out.meta["folds"][j].update({
            "train_rows": [f.train.start, f.train.stop],
            "validation_rows": [f.validation.start, f.validation.stop],
            "test_rows": [f.test.start, f.test.stop],
        })
    for line in out.verdict_lines():
        logger.info("walk-forward verdict: %s", line)
    return out


# --------------------------------------------------------------------------- saving and report


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

    from .report import EQUITY_FILE, FILLS_FILE, METRICS_FILE, atomic_folder, report_versions

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
                r.equity_frame().to_parquet(rd / EQUITY_FILE, index=False)
                pd.DataFrame(r.fills).to_parquet(rd / FILLS_FILE, index=False)
                (rd / METRICS_FILE).write_text(
                    json.dumps(r.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n",
                    encoding="utf-8",
                )
        stitched.to_parquet(d / STITCHED_FILE, index=False)
        (d / SUMMARY_FILE).write_text(
            json.dumps(json_safe(summary), indent=2, sort_keys=True, allow_nan=False) + "\n",
            encoding="utf-8",
        )
        _write_walk_forward_report(d, summary, stitched)

    atomic_folder(dest, build)
    logger.info("saved walk-forward results path=%s runs=%d", dest, result.n_folds * len(result.seeds))
    if tracking is not None and tracking.mode != "disabled":
        _log_walk_forward(dest, tracking, run_name, summary)
    return dest


def _stitched_plotly(stitched: pd.DataFrame, title: str) -> Any:
    import plotly.graph_objects as go

    from .plots import AGENT_COLOR, BASELINE_COLORS, thin_index, utc_times

    idx = thin_index(len(stitched))
    st = stitched.iloc[idx]
    t = utc_times(st["ts_ms"])
    fig = go.Figure()
    for c in st.columns:
        if c.startswith("agent_seed_"):
            fig.add_trace(go.Scatter(x=t, y=st[c], name=c[len("agent_"):-len("_equity_quote")].replace("_", " "),
                                     line={"color": AGENT_COLOR, "width": 2}))
        elif c.startswith("baseline_"):
            name = c[len("baseline_"):-len("_equity_quote")]
            fig.add_trace(go.Scatter(x=t, y=st[c], name=name,
                                     line={"color": BASELINE_COLORS.get(name, "#999999"), "width": 1}))
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
    for c in st.columns:
        if c.startswith("agent_seed_"):
            ax.plot(t, st[c], color=AGENT_COLOR, lw=1.2, alpha=0.8)
        elif c.startswith("baseline_"):
            name = c[len("baseline_"):-len("_equity_quote")]
            ax.plot(t, st[c], color=BASELINE_COLORS.get(name), lw=0.9, label=name)
    ax.plot([], [], color=AGENT_COLOR, label="agent (one line per seed)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_ylabel("growth of 1 (out of sample)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)


def _write_walk_forward_report(folder: Path, summary: Mapping[str, Any], stitched: pd.DataFrame) -> None:
    import html

    from .plots import plotly_html
    from .report import (
        fmt_frac,
        fmt_int,
        fmt_pct,
        fmt_ts,
        fmt_value,
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
    names = list(summ)
    rows = []
    for metric in SUMMARY_METRICS:
        f = fmt_pct if metric.endswith("return") else (fmt_frac if metric in ("max_drawdown", "win_rate", "exposure") else (lambda v: f"{v:,.3f}"))
        cells = []
        for n in names:
            x = summ[n].get(metric)
            if x is None:
                cells.append("-")
                continue
            if x.get("aggregate"):
                v = x["mean"]
                cells.append("n/a (short sample)" if v is None or v != v else fmt_value(v, f))
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
    "SUMMARY_METRICS",
    "WalkForwardResult",
    "fold_prepared",
    "render_walk_forward_report",
    "save_walk_forward",
    "summarise",
    "walk_forward",
]
