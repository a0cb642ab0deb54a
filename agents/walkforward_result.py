"""The summary of a walk-forward: every fold x seed backtest, means with intervals, verdicts.

:func:`summarise` turns ``results[fold][seed]`` test backtests into a :class:`WalkForwardResult`:
every metric of :data:`SUMMARY_METRICS` as a mean over runs with a bootstrap confidence interval
(folds resampled, then seeds within folds), the annualised return as the aggregate over the
folds (fold means compounded, annualised over all test bars, n/a when they are too few), a
verdict per baseline on the total return and the deflated Sharpe ratio of the stitched
out-of-sample returns. Importable from :mod:`coinrl.agents.walkforward` too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from coinrl.pipeline.errors import DataError

from .backtest_result import BacktestResult
from .metrics import can_annualise, json_safe, simple_returns
from .stats import Verdict, bootstrap_mean_ci, lookahead_warning, sharpe_stats, verdict_from_runs

if TYPE_CHECKING:
    import pandas as pd

F64 = npt.NDArray[np.float64]

SUMMARY_METRICS = (
    "total_return", "annualised_return", "sharpe", "sortino", "max_drawdown", "calmar",
    "win_rate", "profit_factor", "turnover", "exposure", "fees_paid_quote",
)
"""Metrics summarised as mean and confidence interval over the runs."""


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


def summary_means(summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The mean of each metric per strategy, as the tables print it.

    Args:
        summary: :attr:`WalkForwardResult.summary` (or the ``summary`` of a saved
            ``walkforward.json``: NaN there is ``None``).

    Returns:
        ``{strategy: {metric: mean, ..., "short_sample": 1.0 | 0.0}}``; ``short_sample`` is 1.0
        when the folds together are too short to annualise (the aggregate annualised return is
        n/a), so :func:`~coinrl.agents.report.metric_cell` writes ``n/a (short sample)`` in the
        console table and the HTML page alike.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, metrics in summary.items():
        row: dict[str, Any] = {metric: x.get("mean") for metric, x in metrics.items()}
        agg = metrics.get("annualised_return") or {}
        value = agg.get("mean")
        row["short_sample"] = 1.0 if agg.get("aggregate") and (value is None or value != value) else 0.0
        out[name] = row
    return out


__all__ = ["SUMMARY_METRICS", "WalkForwardResult", "summarise", "summary_means"]
