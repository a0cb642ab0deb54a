"""Walk-forward evaluation of a portfolio: retrain per fold and seed, backtest each fold's test rows.

For every walk-forward fold ``i`` of ``data.split`` (``walk_forward_folds >= 1``) and seed:

1. the portfolio is prepared on that fold (:func:`~coinrl.pipeline.source.load_portfolio_dataset`
   with ``fold=i``): its normalisers are fitted on the fold's train rows only;
2. a fresh agent trains on the fold's train rows, validating on its validation rows
   (:func:`~coinrl.agents.train.train_model`);
3. it is backtested on the fold's test rows beside the portfolio baselines, same books and
   costs (:func:`~coinrl.agents.portfolio_backtest.simulate_portfolio_strategy`).

:class:`PortfolioWalkForwardResult` keeps every backtest and summarises each metric of the agent
and of every baseline as a mean over the fold x seed runs with a bootstrap interval (folds
resampled, then seeds within folds: :func:`~coinrl.agents.stats.bootstrap_mean_ci`), and the
share of runs in which the agent's total return beat each baseline's.

``coinrl walkforward`` on a portfolio config runs it
(:mod:`coinrl.experiments.walkforward_portfolio_cmd` writes the results folder); the one-market :func:`~coinrl.agents.walkforward.walk_forward` and its report are
unchanged.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coinrl.envs.config import EnvConfig, PortfolioEnvConfig, portfolio_config_from
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.source import PortfolioDataConfig, load_portfolio_dataset

from .config import TrainConfig
from .metrics import json_safe
from .portfolio_backtest import PortfolioBacktestResult, simulate_portfolio_strategy
from .stats import bootstrap_mean_ci

logger = logging.getLogger(__name__)

KIND = "portfolio"
"""``walkforward.json``'s ``kind`` for a portfolio walk-forward (``coinrl walkforward``)."""

_ROWS = (("total_return", "total return", True), ("sharpe", "Sharpe", False),
         ("max_drawdown", "max drawdown", True), ("turnover", "turnover", False),
         ("fees_frac", "fees / initial equity", True))

SUMMARY_METRICS = ("total_return", "sharpe", "max_drawdown", "turnover", "fees_frac")
"""Metrics summarised over the fold x seed runs."""

ProgressFn = Callable[[str, int, int], None]


@dataclass(eq=False)
class PortfolioWalkForwardResult:
    """Fold x seed portfolio backtests and their summary.

    Attributes:
        results: ``results[fold][seed_index]`` test-rows backtests (with baselines).
        seeds: the training seeds, in the order of each row.
        summary: ``summary[strategy][metric] = {"mean", "ci_low", "ci_high"}`` for ``agent``
            and every baseline.
        beats: ``beats[baseline]``: the share of runs whose agent total return beat it.
        meta: folds (rows and spans), confidence, symbols.
    """

    results: list[list[PortfolioBacktestResult]]
    seeds: list[int]
    summary: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    beats: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_folds(self) -> int:
        """Walk-forward folds."""
        return len(self.results)

    def verdict_lines(self) -> list[str]:
        """One line per baseline: the share of fold x seed runs whose agent total return beat it
        (as the one-market :meth:`~coinrl.agents.walkforward_result.WalkForwardResult.verdict_lines`
        the console table prints)."""
        return beat_lines({"beats": self.beats, "runs": [r for row in self.results for r in row]})

    def metric_matrix(self, metric: str, strategy: str = "agent") -> np.ndarray:
        """``(folds, seeds)`` values of a metric for the agent or a baseline."""
        def get(r: PortfolioBacktestResult) -> float:
            m = r.metrics if strategy == "agent" else r.baselines_metrics[strategy]
            return float(m[metric])

        return np.asarray([[get(r) for r in row] for row in self.results], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: summary, beats, meta and each run's agent metrics."""
        runs = [
            {"fold": i, "seed": s, "metrics": r.metrics}
            for i, row in enumerate(self.results) for s, r in zip(self.seeds, row, strict=True)
        ]
        return dict(json_safe({"summary": self.summary, "beats": self.beats, "meta": self.meta,
                               "seeds": self.seeds, "runs": runs}))


def summarise_portfolio(
    results: list[list[PortfolioBacktestResult]], seeds: Sequence[int], *, confidence: float = 0.95
) -> PortfolioWalkForwardResult:
    """Means with bootstrap intervals and beat shares of fold x seed portfolio backtests."""
    out = PortfolioWalkForwardResult(results=results, seeds=list(seeds))
    names = ["agent", *results[0][0].baselines_metrics]
    for name in names:
        out.summary[name] = {}
        for metric in SUMMARY_METRICS:
            x = out.metric_matrix(metric, name)
            if not np.isfinite(x).all():
                continue
            mean, lo, hi, _ = bootstrap_mean_ci(x, confidence=confidence)
            out.summary[name][metric] = {"mean": mean, "ci_low": lo, "ci_high": hi}
    mine = out.metric_matrix("total_return")
    for name in names[1:]:
        out.beats[name] = float((mine > out.metric_matrix("total_return", name)).mean())
    out.meta["confidence"] = confidence
    return out


def walk_forward_portfolio(
    data: PortfolioDataConfig | Mapping[str, Any],
    train_config: TrainConfig,
    env_config: PortfolioEnvConfig | EnvConfig | Mapping[str, Any] | None = None,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    experiment_config: Mapping[str, Any] | None = None,
    n_random: int = 5,
    confidence: float = 0.95,
    progress: ProgressFn | None = None,
) -> PortfolioWalkForwardResult:
    """Retrain a portfolio agent per fold and seed, backtest each on its fold's test rows.

    Args:
        data: the portfolio ``data:`` section; ``split.walk_forward_folds`` folds.
        train_config: the training config (its seed is replaced by each of ``seeds``).
        env_config: costs and rules (the same for training, test and baselines).
        seeds: training seeds per fold.
        experiment_config: the full config to record in each agent.
        n_random: draws of the turnover-matched random baseline per backtest.
        confidence: level of the intervals.
        progress: called with ``("train", done, total)`` after each training.

    Returns:
        The :class:`PortfolioWalkForwardResult`.

    Raises:
        ConfigError: no walk-forward folds, or no seeds.
    """
    from .train import train_model

    cfg = data if isinstance(data, PortfolioDataConfig) else PortfolioDataConfig.model_validate(data)
    k = cfg.split.walk_forward_folds
    if k < 1:
        raise ConfigError("the data has no walk-forward folds; set data.split.walk_forward_folds (e.g. 4)")
    if not seeds:
        raise ConfigError("walk_forward_portfolio needs at least one seed")
    env = portfolio_config_from(env_config)
    results: list[list[PortfolioBacktestResult]] = []
    folds_meta = []
    done, total = 0, k * len(seeds)
    for i in range(k):
        prepared = load_portfolio_dataset(cfg, fold=i)
        row = []
        for s in seeds:
            tc = train_config.model_copy(update={"seed": int(s)})
            logger.info("portfolio walk-forward fold=%d/%d seed=%d train_rows=%d test_rows=%d",
                        i + 1, k, s, len(prepared.train), len(prepared.test))
            agent = train_model(prepared, tc, env, experiment_config={**dict(experiment_config or {}), "seed": int(s)})
            agent.info["fold"] = i
            row.append(simulate_portfolio_strategy(
                agent, prepared.test, env_config=env, n_random=n_random, seed=int(s),
                n_trials=len(seeds), confidence=confidence,
            ))
            done += 1
            if progress is not None:
                progress("train", done, total)
        results.append(row)
        f = prepared.main_fold
        folds_meta.append({
            "fold": i, "train_rows": [f.train.start, f.train.stop],
            "validation_rows": [f.validation.start, f.validation.stop],
            "test_rows": [f.test.start, f.test.stop],
            "test_start_ts_ms": int(prepared.test.ts_ms[0]), "test_end_ts_ms": int(prepared.test.ts_ms[-1]),
        })
    out = summarise_portfolio(results, seeds, confidence=confidence)
    out.meta.update({"folds": folds_meta, "symbols": list(results[0][0].symbols),
                     "embargo_bars": cfg.split.embargo_bars, "walk_forward_mode": cfg.split.walk_forward_mode})
    for name, share in out.beats.items():
        logger.info("portfolio walk-forward: the agent beat %s in %.0f%% of %d runs", name, 100 * share, total)
    return out


def _cell(stats: Mapping[str, Any] | None, pct: bool) -> str:
    if not stats:
        return "n/a"
    f = (lambda x: f"{100 * x:.2f}%") if pct else (lambda x: f"{x:.3f}")
    return f"{f(stats['mean'])} [{f(stats['ci_low'])}, {f(stats['ci_high'])}]"


def summary_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """``(strategy names, rows)``: each row a metric label then one ``mean [ci]`` cell per
    strategy (the agent first, then every baseline by name), from a portfolio ``walkforward.json``."""
    names = ["agent", *sorted(n for n in summary["summary"] if n != "agent")]  # as after a JSON round trip
    rows = [[label, *(_cell(summary["summary"][n].get(key), pct) for n in names)] for key, label, pct in _ROWS]
    return names, rows


def beat_lines(summary: Mapping[str, Any]) -> list[str]:
    """One line per baseline: the share of fold x seed runs whose agent total return beat it."""
    n = len(summary.get("runs", []))
    return [f"the agent beat {name} in {100 * share:.0f}% of {n} runs (total return, test rows)"
            for name, share in sorted(summary.get("beats", {}).items())]


def portfolio_walkforward_html(summary: Mapping[str, Any]) -> str:
    """A self-contained page: the means table with intervals and the beat shares."""
    names, rows = summary_table(summary)
    esc = html.escape
    head = "".join(f"<th>{esc(n)}</th>" for n in ["metric", *names])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    symbols = ", ".join(summary.get("meta", {}).get("symbols", []))
    title = (f"{esc(str(summary.get('config', {}).get('name', 'portfolio')))}: portfolio walk-forward, "
             f"{summary.get('n_folds')} folds x {len(summary.get('seeds', []))} seeds ({esc(symbols)})")
    lines = "".join(f"<li>{esc(line)}</li>" for line in beat_lines(summary))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"<h1>{title}</h1><p>Out of sample (each fold's test rows), fees, slippage and funding "
            f"charged; means over runs with {summary.get('meta', {}).get('confidence', 0.95):.0%} bootstrap "
            f"intervals.</p><table border='1'><tr>{head}</tr>{body}</table><ul>{lines}</ul></body></html>\n")


__all__ = [
    "KIND",
    "SUMMARY_METRICS",
    "beat_lines",
    "portfolio_walkforward_html",
    "summary_table",
    "PortfolioWalkForwardResult",
    "summarise_portfolio",
    "walk_forward_portfolio",
]
