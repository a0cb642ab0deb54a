"""The entry point: :func:`optimize_parameters` runs (or continues) a study on this machine."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from coinrl.pipeline.errors import CoinrlError, ConfigError

from .config import MEMORY, TunableConfig, tune_of
from .objective import TrialObjective
from .storage import budget_lock, make_storage, open_study, redact_url
from .summary import StudySummary, TuneProgress, logical_trial_count, progress_of, summarize_study
from .workers import WorkerJob, run_processes, run_worker, worker_name

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)


def optimize_parameters(
    hyperparameters: TunableConfig,
    data: pd.DataFrame,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    n_jobs: int | None = None,
    out_dir: str | Path | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    progress: Callable[[TuneProgress], None] | None = None,
) -> StudySummary:
    """Run (or continue) an Optuna study over the search space of an experiment config.

    Args:
        hyperparameters: the experiment config (an ``ExperimentConfig``) with a ``tune:``
            section; its data/env/train sections are the base every trial changes.
        data: cleaned candles of the whole history (e.g. ``load_candles(config.data)``). Only
            the rows before the test split are read.
        storage: Optuna storage URL; None = ``tune.storage``, else ``:memory:``.
        study_name: None = ``tune.study_name``, else the experiment name.
        n_trials: the study's trial budget; None = ``tune.n_trials``.
        n_jobs: worker processes; None = ``tune.n_jobs``. More than one needs a shared
            (SQLite or PostgreSQL) storage.
        out_dir: the study folder (per-trial progress CSVs, W&B runs); None = no files, no W&B.
        pruner: an Optuna pruner instead of ``tune.pruner`` (one process only).
        progress: called with a :class:`TuneProgress` at the start, after each trial of this
            process and, with worker processes, every few seconds while they run.

    Returns:
        The :class:`StudySummary` after this run.

    Raises:
        ConfigError: no ``tune`` section, ``n_jobs > 1`` with in-memory storage, a stored study
            of another problem, an unreachable storage.
        DataError: too little data for the split and folds.

    Example:
        >>> cfg = load_experiment_config("experiments/configs/tune_ppo_btc_1h.yaml")  # doctest: +SKIP
        >>> summary = optimize_parameters(cfg, load_candles(cfg.data), n_trials=4)  # doctest: +SKIP
    """
    tune = tune_of(hyperparameters)
    url = storage or tune.storage or MEMORY
    name = study_name or tune.study_name or hyperparameters.name
    budget = int(n_trials if n_trials is not None else tune.n_trials)
    jobs = int(n_jobs if n_jobs is not None else tune.n_jobs)
    if budget < 1 or jobs < 1:
        raise ConfigError(f"n_trials and n_jobs must be >= 1, got n_trials={budget} n_jobs={jobs}")
    if jobs > 1 and url == MEMORY:
        raise ConfigError(
            f"n_jobs={jobs} worker processes cannot share an in-memory study; pass a storage URL "
            "(sqlite:///study.db, or postgresql://... for several machines)"
        )
    if jobs > 1 and pruner is not None:
        raise ConfigError(
            "a custom pruner object only works with n_jobs=1; set tune.pruner instead"
        )
    folder = Path(out_dir) if out_dir is not None else None
    store = make_storage(url, tune)
    study = open_study(hyperparameters, store, name, seed_salt=None, pruner=pruner)
    before = logical_trial_count(study.get_trials(deepcopy=False))
    logger.info(
        "tuning study=%s storage=%s n_trials=%d existing=%d n_jobs=%d folds=%d space=%s",
        name,
        redact_url(url),
        budget,
        before,
        jobs,
        tune.folds,
        sorted(tune.space),
    )
    t0 = time.monotonic()

    def report() -> None:
        if progress is not None:
            progress(progress_of(study.get_trials(deepcopy=False), budget))

    report()
    if jobs == 1:
        objective = TrialObjective(hyperparameters, data, folder, name, worker_name())
        run_worker(
            study,
            objective,
            budget,
            lock=budget_lock(url, name),
            poll_s=min(5.0, tune.heartbeat_interval_s),
            on_trial=report,
        )
    else:
        level = logging.getLogger().getEffectiveLevel()
        job = WorkerJob(hyperparameters, data, url, name, budget, folder, level)
        codes = run_processes(job, jobs, poll=report if progress is not None else None)
        bad = [c for c in codes if c != 0]
        if bad:
            logger.warning("tuning workers exited with codes %s (0 = done)", codes)
        if len(bad) == len(codes):
            raise CoinrlError(f"every tuning worker failed (exit codes {codes}); see the log above")
        study = open_study(hyperparameters, store, name, seed_salt="summary")
        report()
    summary = summarize_study(study, url)
    logger.info(
        "tuned study=%s trials=%d states=%s best=%s value=%s pruned=%.2f saved=%.2f seconds=%.1f",
        name,
        summary.n_trials,
        summary.states,
        summary.best_number,
        summary.best_value,
        summary.pruned_fraction,
        summary.compute_saved_fraction,
        time.monotonic() - t0,
    )
    return summary
