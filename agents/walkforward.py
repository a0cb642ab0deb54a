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

The summary lives in :mod:`.walkforward_result`, the results folder and its report in
:mod:`.walkforward_report`; every public name is importable from here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from coinrl.envs.config import EnvConfig, env_config_from
from coinrl.envs.risk import RiskConfig
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.splits import PreparedData

from .backtest import simulate_many
from .baselines import MA_CROSSOVER_BARS
from .config import TrainConfig
from .metrics import json_safe
from .walkforward_report import (
    PNG_FILE,
    REPORT_FILE,
    RUNS_DIR,
    STITCHED_FILE,
    SUMMARY_FILE,
    render_walk_forward_report,
    save_walk_forward,
)
from .walkforward_result import SUMMARY_METRICS, WalkForwardResult, summarise, summary_means

if TYPE_CHECKING:
    from .agent import TrainedAgent

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
"""``(stage, done, total)``: called as folds train and backtests finish."""


def fold_prepared(prepared: PreparedData, i: int) -> PreparedData:
    """Fold ``i`` as a PreparedData for :func:`~coinrl.agents.train.train_model`: its train,
    validation and test parts and ``full``, all normalised by the normaliser fitted on the
    fold's own train rows."""
    fd = prepared.fold_data(i)
    full = dataclasses.replace(
        prepared.full,
        features=fd.normaliser.transform(fd.raw_features),
        meta={**prepared.full.meta, "fold": i, "normaliser_fingerprint": fd.normaliser.fingerprint(),
              "feature_spec_fingerprint": fd.spec.fingerprint()},
    )
    return dataclasses.replace(
        prepared, train=fd.train, validation=fd.validation, test=fd.test, full=full,
        normaliser=fd.normaliser, main_fold=fd.fold, spec=fd.spec, raw_features=fd.raw_features,
    )


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
    risk: RiskConfig | None = None,
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
        risk: the risk limits of paper and live trading, applied to every fold's backtest
            (:func:`~coinrl.agents.backtest.simulate_trading_strategy`'s ``risk``); recorded
            in ``meta["risk"]``.

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
        n_trials=max(int(n_trials or len(seeds)), len(seeds)), confidence=confidence, risk=risk,
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
    if risk is not None:
        out.meta["risk"] = risk.model_dump(mode="json")
    for j, f in enumerate(prepared.folds):
        out.meta["folds"][j].update({
            "train_rows": [f.train.start, f.train.stop],
            "validation_rows": [f.validation.start, f.validation.stop],
            "test_rows": [f.test.start, f.test.stop],
        })
    for line in out.verdict_lines():
        logger.info("walk-forward verdict: %s", line)
    return out


__all__ = [
    "PNG_FILE",
    "REPORT_FILE",
    "RUNS_DIR",
    "STITCHED_FILE",
    "SUMMARY_FILE",
    "SUMMARY_METRICS",
    "WalkForwardResult",
    "fold_prepared",
    "render_walk_forward_report",
    "save_walk_forward",
    "summarise",
    "summary_means",
    "walk_forward",
]
