"""Optuna studies over agents, rewards and features: one laptop or many machines.

:func:`optimize_parameters` runs a study whose search space is the ``tune:`` section of an
experiment config (see :mod:`coinrl.agents.tune_space`): algorithm hyper-parameters and env,
reward and feature settings, each addressed by its dotted config path.

**The objective never sees the test split.** The candles are cut before the test split's first
bar (in feature rows: ``split_bounds(...).validation.stop``) BEFORE any feature is computed, so
no test price reaches a feature, a normaliser or an env; :func:`tuning_folds` lays
``tune.folds`` walk-forward folds over those rows, each with a normaliser fitted on its own
train part. The objective is the mean over folds of the validation score (``train.eval_metric``
of the best validated weights, as :func:`~coinrl.agents.train.train_model` picks them).

**Pruning.** Every validation of :func:`~coinrl.agents.train.train_model` is reported to the
trial (the running mean over folds, at a step that counts evaluations, so trials with different
rollout sizes report at the same steps); the median or successive-halving pruner stops bad trials
mid-training. Trials record ``env_steps_used``/``env_steps_budget``, so
:func:`summarize_study` can say how much compute pruning saved.

**Failures.** A trial that raises (an infeasible combination such as a batch larger than the
rollout, a data problem) is marked FAIL with its error in the ``error`` user attribute; the study
goes on.

**Storage and workers.** ``:memory:`` (one process), a SQLite file (embedded, resumable: rerun
and it continues the same study) or a PostgreSQL URL shared by workers on many machines.
``n_jobs`` worker PROCESSES (torch and the GIL make threads useless) each run trials until the
study holds ``tune.n_trials`` trials. RDB storages run Optuna's heartbeat: the trial of a killed
worker is failed after ``grace_period_s`` and re-queued (``RetryHeartbeatStaleTrialCallback``), and
a re-queued trial counts once against the budget. Claiming a trial slot happens under a lock (a
PostgreSQL advisory lock, a file lock next to a SQLite file), so concurrent workers never
overshoot the budget. Worker processes receive their job as plain data (``job.json`` and
``candles.parquet`` in a private temporary folder), never a pickle.

**The config.** The tuner reads an experiment config through the :class:`TunableConfig`
protocol (``agents`` cannot import ``experiments``); ``ExperimentConfig`` satisfies it, and each
trial's config is re-validated by the caller's own model class.

**The best trial.** :func:`train_best` trains the best configuration again (on train, validated
on validation, or on train + validation when configured), saves its bundle and evaluates it ONCE
on the test split, with the deflated Sharpe ratio over the number of trials; the result is
stored in the study, so a rerun reports it instead of looking at the test split again. The
bundle already made for the same best trial is reused instead of trained again.

The dashboard reads either storage: ``optuna-dashboard sqlite:///runs/ppo_btc_1h_tune/ppo_btc_1h_tune.db``
or ``optuna-dashboard postgresql://user:pass@host/db`` (``pip install optuna-dashboard``).
"""

from .best import BestResult, train_best
from .config import (
    BEST_DIR,
    CONFIG_ATTR,
    KEY_ATTR,
    MEMORY,
    RESULT_FILE,
    TEST_ATTR,
    TRIALS_DIR,
    TunableConfig,
    base_config_dict,
    check_config,
    params_from_trial,
    study_key,
    trial_config,
)
from .data import TuningData, tuning_folds
from .objective import TrialObjective
from .optimize import optimize_parameters
from .storage import load_study, make_pruner, make_sampler, make_storage, open_study, redact_url
from .summary import (
    StudySummary,
    TuneProgress,
    logical_trial_count,
    progress_of,
    retried_numbers,
    summarize_study,
)
from .workers import run_worker, worker_name, worker_process_main

__all__ = [
    "BEST_DIR",
    "CONFIG_ATTR",
    "KEY_ATTR",
    "MEMORY",
    "RESULT_FILE",
    "TEST_ATTR",
    "TRIALS_DIR",
    "BestResult",
    "StudySummary",
    "TrialObjective",
    "TunableConfig",
    "TuneProgress",
    "TuningData",
    "base_config_dict",
    "check_config",
    "load_study",
    "logical_trial_count",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "open_study",
    "optimize_parameters",
    "params_from_trial",
    "progress_of",
    "redact_url",
    "retried_numbers",
    "run_worker",
    "study_key",
    "summarize_study",
    "train_best",
    "trial_config",
    "tuning_folds",
    "worker_name",
    "worker_process_main",
]
