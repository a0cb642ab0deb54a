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
overshoot the budget.

**The best trial.** :func:`train_best` trains the best configuration again (on train, validated
on validation, or on train + validation when configured), saves its bundle and evaluates it ONCE
on the test split, with the deflated Sharpe ratio over the number of trials; the result is
stored in the study, so a rerun reports it instead of looking at the test split again.

The dashboard reads either storage: ``optuna-dashboard sqlite:///runs/ppo_btc_1h_tune/ppo_btc_1h_tune.db``
or ``optuna-dashboard postgresql://user:pass@host/db`` (``pip install optuna-dashboard``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import pickle  # noqa: S403  (a job file our own process writes and reads)
import socket
import subprocess  # noqa: S404  (our own worker processes, fixed arguments)
import sys
import tempfile
import time
import traceback
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import pandas as pd
from pydantic import BaseModel
from stable_baselines3.common.logger import CSVOutputFormat, KVWriter, Logger

from coinrl.envs.config import EnvConfig
from coinrl.pipeline.config import validate_config
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import CoinrlError, ConfigError, DataError
from coinrl.pipeline.features import FeatureSpec, feature_engineering
from coinrl.pipeline.source import DataConfig
from coinrl.pipeline.splits import (
    Fold,
    Normaliser,
    PreparedData,
    SplitConfig,
    candles_fingerprint,
    make_market_data,
    prepare_data_for_model,
    split_bounds,
    walk_forward_folds,
)
from coinrl.pipeline.timeframes import bars_per_year

from .config import TrackingConfig, TrainConfig
from .metrics import json_safe
from .tune_space import (
    CategoricalParam,
    FloatParam,
    FoldMode,
    IntParam,
    TuneConfig,
    apply_params,
    space_fingerprint,
    suggest_params,
)

if TYPE_CHECKING:
    import optuna

    from .agent import TrainedAgent
    from .tracking import Tracker

logger = logging.getLogger(__name__)

MEMORY = ":memory:"
TRIALS_DIR = "trials"
BEST_DIR = "best"
RESULT_FILE = "tune_result.json"
TEST_ATTR = "coinrl_test_evaluation"
KEY_ATTR = "coinrl_study_key"
CONFIG_ATTR = "coinrl_config"

_DATA_CACHE_SIZE = 4


# --------------------------------------------------------------------------- config parts


@dataclass(frozen=True)
class _Parts:
    """The sections of an experiment config the tuner reads (typed views)."""

    name: str
    seed: int
    data: DataConfig
    env: EnvConfig
    train: TrainConfig
    tracking: TrackingConfig
    tune: TuneConfig | None


def _parts(config: BaseModel) -> _Parts:
    try:
        parts = _Parts(
            name=str(config.name),  # type: ignore[attr-defined]
            seed=int(config.seed),  # type: ignore[attr-defined]
            data=config.data,  # type: ignore[attr-defined]
            env=config.env,  # type: ignore[attr-defined]
            train=config.train,  # type: ignore[attr-defined]
            tracking=config.tracking,  # type: ignore[attr-defined]
            tune=getattr(config, "tune", None),
        )
    except AttributeError as e:
        raise ConfigError(
            f"{type(config).__name__} is not an experiment config (it lacks {e.name!r}); pass "
            "an ExperimentConfig with name, seed, data, env, train, tracking and tune"
        ) from e
    checks = (
        ("data", DataConfig),
        ("env", EnvConfig),
        ("train", TrainConfig),
        ("tracking", TrackingConfig),
    )
    for attr, cls in checks:
        if not isinstance(getattr(parts, attr), cls):
            raise ConfigError(f"config.{attr} must be a {cls.__name__}")
    return parts


def _tune_of(config: BaseModel) -> TuneConfig:
    tune = _parts(config).tune
    if tune is None:
        raise ConfigError(
            "the experiment config has no tune: section; add one with a search space "
            "(see experiments/configs/tune_ppo_btc_1h.yaml)"
        )
    return tune


def base_config_dict(config: BaseModel) -> dict[str, Any]:
    """The experiment config as plain data without its ``tune`` section (what trials change)."""
    data = dict(config.model_dump(mode="json"))
    data.pop("tune", None)
    return data


def trial_config(config: BaseModel, params: Mapping[str, Any]) -> BaseModel:
    """The experiment config of one trial: the base config with ``params`` set, re-validated.

    Raises:
        ConfigError: the combination is invalid (e.g. a PPO batch larger than its rollout).
    """
    data = apply_params(base_config_dict(config), params)
    return validate_config(type(config), data, source="trial parameters " + _short(params))


def _short(params: Mapping[str, Any]) -> str:
    text = json.dumps(json_safe(dict(params)), sort_keys=True, default=str)
    return text if len(text) <= 300 else text[:297] + "..."


def params_from_trial(
    space: Mapping[str, FloatParam | IntParam | CategoricalParam], optuna_params: Mapping[str, Any]
) -> dict[str, Any]:
    """Config values of a finished trial's Optuna parameters (categorical labels -> values)."""
    out: dict[str, Any] = {}
    for path, p in space.items():
        if path not in optuna_params:
            raise ConfigError(
                f"the stored trial has no parameter {path!r}; the study was run with another "
                "search space (use another study name)"
            )
        v = optuna_params[path]
        out[path] = p.value_of(v) if isinstance(p, CategoricalParam) else v
    return out


def study_key(config: BaseModel) -> str:
    """sha256 of what defines a trial's meaning: data, env, train, seed, space and folds.

    A stored study with another key was run on a different problem; :func:`open_study` refuses
    to mix them.
    """
    base = base_config_dict(config)
    tune = _tune_of(config)
    payload = {
        "data": base.get("data"),
        "env": base.get("env"),
        "train": base.get("train"),
        "seed": base.get("seed"),
        "space": space_fingerprint(tune.space),
        "folds": tune.folds,
        "fold_mode": tune.fold_mode,
    }
    canon = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class TuningData:
    """Walk-forward folds over the rows before the test split.

    Attributes:
        folds: one :class:`~coinrl.pipeline.splits.PreparedData` per fold: ``train`` and
            ``validation`` normalised with a normaliser fitted on that fold's train rows;
            ``test`` is EMPTY (0 rows) and ``full`` stops before the test split.
        dev_rows: feature rows before the test split (train, embargo, validation).
        dev_candles: candle rows the features were computed from (warm-up + ``dev_rows``).
    """

    folds: tuple[PreparedData, ...]
    dev_rows: int
    dev_candles: int


def _fold_layout(
    dev_rows: int, main: Fold, split: SplitConfig, folds: int, mode: FoldMode
) -> list[tuple[range, range]]:
    if folds == 1:
        return [(main.train, main.validation)]
    val_share = split.validation / (split.train + split.validation)
    wf = SplitConfig(
        train=1.0 - val_share,
        validation=0.0,
        test=val_share,
        embargo_bars=split.embargo_bars,
        walk_forward_folds=folds,
        walk_forward_mode=mode,
    )
    # each walk-forward fold's "test" block is the tuning validation block
    return [(f.train, f.test) for f in walk_forward_folds(dev_rows, wf)]


def tuning_folds(
    candles: pd.DataFrame,
    data: DataConfig,
    folds: int = 1,
    mode: FoldMode = "anchored",
) -> TuningData:
    """The tuner's data: ``folds`` train/validation folds over the rows before the test split.

    The candles are cut at the test split's first bar BEFORE features are computed, so the
    test rows are never read (their prices may be anything, even NaN). With ``folds=1`` the one
    fold is exactly the experiment's own train/validation split (same rows, same normaliser as
    :func:`~coinrl.pipeline.splits.prepare_data_for_model` on all the candles).

    Args:
        candles: cleaned candles of the whole history (train, validation AND test span).
        data: the data section (feature spec, split, normalisation).
        folds: walk-forward folds inside the pre-test rows (1 = the main split).
        mode: ``anchored`` or ``rolling`` folds.

    Returns:
        The :class:`TuningData`.

    Raises:
        ConfigError: no validation split to tune on.
        DataError: too few rows for the warm-up, the split or the folds.
    """
    spec: FeatureSpec = data.features
    split = data.split
    if split.validation <= 0:
        raise ConfigError(
            "data.split.validation is 0: the tuner scores trials on the validation split; give "
            "it a share (e.g. validation: 0.15)"
        )
    warm = spec.warmup_bars
    n_rows = len(candles) - warm
    if n_rows < 2:
        raise DataError(
            f"{len(candles)} candles leave {max(n_rows, 0)} feature rows after a {warm}-bar "
            "warm-up; load a longer history"
        )
    main = split_bounds(n_rows, split)
    dev_rows = main.validation.stop
    n_candles = warm + dev_rows
    dev = candles.iloc[:n_candles].reset_index(drop=True)
    dev.attrs.update(candles.attrs)
    frame = feature_engineering(dev, spec)
    if len(frame) != dev_rows:  # the warm-up is exactly spec.warmup_bars rows
        raise DataError(
            f"feature rows {len(frame)} != expected {dev_rows}; the spec's warm-up changed"
        )
    names = spec.feature_names
    raw = frame[list(names)].to_numpy(dtype=np.float64)
    fingerprint = candles_fingerprint(dev)
    out = []
    for i, (tr, va) in enumerate(_fold_layout(dev_rows, main, split, folds, mode)):
        norm = Normaliser.fit(raw[tr.start : tr.stop], names, data.norm)
        full = make_market_data(
            dev, frame, norm, split="tune", meta={"fold": i, "data_fingerprint": fingerprint}
        )
        parts: dict[str, MarketData] = {}
        for name, rows in (("train", tr), ("validation", va), ("test", range(dev_rows, dev_rows))):
            md = full.slice(rows.start, rows.stop)
            md.meta.update({"split": name, "row_start": rows.start, "row_stop": rows.stop})
            parts[name] = md
        out.append(
            PreparedData(
                train=parts["train"],
                validation=parts["validation"],
                test=parts["test"],
                full=full,
                raw_features=raw,
                normaliser=norm,
                spec=spec,
                split=split,
                norm=data.norm,
                folds=(),
                main_fold=Fold(i, tr, va, range(dev_rows, dev_rows)),
                data_fingerprint=fingerprint,
                warmup_rows_dropped=warm,
            )
        )
    logger.info(
        "tuning data symbol=%s rows_before_test=%d folds=%d mode=%s train=%s validation=%s",
        candles.attrs.get("symbol", "?"),
        dev_rows,
        len(out),
        mode,
        [len(p.train) for p in out],
        [len(p.validation) for p in out],
    )
    return TuningData(tuple(out), dev_rows, n_candles)


# --------------------------------------------------------------------------- reporting


class _TrialReporter(KVWriter):
    """SB3 output format that reports each validation to the trial and prunes.

    It receives every dump of the training run's logger; on a dump carrying ``eval/score`` it
    reports the running mean over folds (finished folds' scores plus this one) at step
    ``fold * evals_per_fold + k`` (``k``: the evaluation's ordinal in the fold) and raises
    ``optuna.TrialPruned`` when the pruner says so, which stops ``train_model`` right there.
    """

    def __init__(
        self, trial: optuna.Trial, fold: int, done: Sequence[float], evals_per_fold: int
    ) -> None:
        self.trial = trial
        self.fold = fold
        self.done = list(done)
        self.evals_per_fold = evals_per_fold
        self.k = 0
        self.last_step = 0

    def write(
        self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0
    ) -> None:
        import optuna

        if "eval/score" not in key_values:
            return
        self.k += 1
        self.last_step = int(step)
        if self.k >= self.evals_per_fold:  # more evaluations than planned: no report slot
            return
        score = float(key_values["eval/score"])
        value = (sum(self.done) + score) / (len(self.done) + 1)
        report_step = self.fold * self.evals_per_fold + self.k
        self.trial.report(value, report_step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"fold {self.fold} step {step}: running mean score {value:.4g} is below the pruner's bar"
            )

    def close(self) -> None:
        """Nothing to close."""


class _StepOffset(KVWriter):
    """Wraps an SB3 output format, adding ``offset`` to every step (folds follow each other)."""

    def __init__(self, inner: KVWriter, offset: int) -> None:
        self.inner = inner
        self.offset = offset

    def write(
        self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0
    ) -> None:
        self.inner.write(key_values, key_excluded, step + self.offset)

    def close(self) -> None:
        self.inner.close()


def _trial_sink(
    csv_path: Path | None, tracker: Tracker | None, offset: int, reporter: _TrialReporter
) -> Logger:
    from .tracking import LoggingWriter, WandbWriter

    formats: list[KVWriter] = [LoggingWriter(level=logging.DEBUG)]
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        formats.append(CSVOutputFormat(str(csv_path)))
    if tracker is not None and tracker.enabled:
        formats.append(_StepOffset(WandbWriter(tracker), offset))
    formats.append(reporter)  # last: the metrics are written before a prune
    return Logger(folder=None, output_formats=formats)


# --------------------------------------------------------------------------- the objective


def _fold_score(agent: TrainedAgent, fold: int, n_val: int) -> tuple[float, float]:
    """``(score, annualised sharpe)`` of the weights train_model returned, on the validation."""
    if not agent.history:
        raise DataError(
            f"fold {fold}: no validation ran (its validation part has {n_val} bars, the env "
            f"window is {agent.env_config.window}); use fewer folds, more data or a smaller window"
        )
    best_step = agent.info.get("best_step")
    use_best = agent.train_config.use_best_model and best_step is not None
    rec = next((h for h in agent.history if use_best and h["step"] == best_step), agent.history[-1])
    score = rec["score"]
    sharpe = rec.get("sharpe")
    return float(score), float("nan") if sharpe is None else float(sharpe)


class TrialObjective:
    """The objective of one worker: parameters -> trial config -> folds -> mean validation score.

    Args:
        config: the experiment config with its ``tune`` section.
        candles: cleaned candles of the whole history (only rows before the test split are read).
        out_dir: the study folder (per-trial ``progress`` CSVs, W&B files); None = no files
            and no W&B.
        study_name: the W&B group of the trial runs.
        worker: this worker's name (``host:pid``), recorded on each trial.
    """

    def __init__(
        self,
        config: BaseModel,
        candles: pd.DataFrame,
        out_dir: Path | None,
        study_name: str,
        worker: str,
    ) -> None:
        self.config = config
        self.tune = _tune_of(config)
        self.candles = candles
        self.out_dir = out_dir
        self.study_name = study_name
        self.worker = worker
        self._cache: OrderedDict[str, TuningData] = OrderedDict()

    def data_for(self, data: DataConfig) -> TuningData:
        """The tuning folds for a trial's data section (cached per feature spec and norm)."""
        key = json.dumps(
            [data.model_dump(mode="json"), self.tune.folds, self.tune.fold_mode], sort_keys=True
        )
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        td = tuning_folds(self.candles, data, self.tune.folds, self.tune.fold_mode)
        self._cache[key] = td
        while len(self._cache) > _DATA_CACHE_SIZE:
            self._cache.popitem(last=False)
        return td

    def __call__(self, trial: optuna.Trial) -> float:
        """Run one trial (Optuna calls this); returns the mean validation score over folds."""
        import optuna

        t0 = time.monotonic()
        trial.set_user_attr("worker", self.worker)
        try:
            params = suggest_params(trial, self.tune.space)
            cfg = trial_config(self.config, params)
            value = self._run(trial, cfg, params)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:4000])
            trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            logger.warning(
                "trial failed study=%s trial=%d error=%s: %s",
                self.study_name,
                trial.number,
                type(e).__name__,
                str(e).splitlines()[0][:300],
            )
            raise
        finally:
            trial.set_user_attr("seconds", round(time.monotonic() - t0, 3))
        return value

    def _run(self, trial: optuna.Trial, cfg: BaseModel, params: Mapping[str, Any]) -> float:
        import optuna

        from .train import train_model

        parts = _parts(cfg)
        data = self.data_for(parts.data)
        train = parts.train.with_seed(parts.seed)
        n_folds = len(data.folds)
        total = train.total_timesteps
        trial.set_user_attr("env_steps_budget", total * n_folds)
        evals_per_fold = (total // train.eval_every_steps + 3) if train.eval_every_steps else 2
        cfg_dict = cfg.model_dump(mode="json")
        tracker = self._tracker(trial, parts, cfg_dict, params)
        trial_dir = (
            None if self.out_dir is None else self.out_dir / TRIALS_DIR / f"{trial.number:05d}"
        )
        scores: list[float] = []
        sharpes: list[float] = []
        used = 0
        agent = None
        try:
            for i, fold in enumerate(data.folds):
                reporter = _TrialReporter(trial, i, scores, evals_per_fold)
                csv = None if trial_dir is None else trial_dir / f"progress_fold{i}.csv"
                sink = _trial_sink(csv, tracker, i * total, reporter)
                try:
                    agent = train_model(
                        fold, train, parts.env, sink=sink, experiment_config=cfg_dict
                    )
                except optuna.TrialPruned:
                    used += reporter.last_step
                    trial.set_user_attr("env_steps_used", used)
                    trial.set_user_attr("fold_scores", scores)
                    trial.set_user_attr("pruned_at_fold", i)
                    raise
                finally:
                    sink.close()
                used += int(agent.info["num_timesteps"])
                score, sharpe = _fold_score(agent, i, len(fold.validation))
                scores.append(score)
                sharpes.append(sharpe)
                # between folds: the mean so far, at the fold's last step
                mean = float(np.mean(scores))
                trial.report(mean, (i + 1) * evals_per_fold)
                if i + 1 < n_folds and trial.should_prune():
                    trial.set_user_attr("env_steps_used", used)
                    trial.set_user_attr("fold_scores", scores)
                    trial.set_user_attr("pruned_at_fold", i + 1)
                    raise optuna.TrialPruned(f"after fold {i}: mean score {mean:.4g}")
            value = float(np.mean(scores))
            finite = [s for s in sharpes if math.isfinite(s)]
            trial.set_user_attr("env_steps_used", used)
            trial.set_user_attr("fold_scores", scores)
            trial.set_user_attr("sharpe", float(np.mean(finite)) if finite else None)
            trial.set_user_attr("periods_per_year", bars_per_year(data.folds[0].train.timeframe))
            if tracker is not None and tracker.enabled:
                tracker.summary(
                    {"tune/value": value, "tune/fold_scores": scores, "tune/env_steps_used": used}
                )
                if agent is not None:
                    self._log_equity(tracker, agent, data.folds[-1], n_folds * total)
            logger.info(
                "trial done study=%s trial=%d value=%.4g folds=%s steps=%d",
                self.study_name,
                trial.number,
                value,
                [round(s, 4) for s in scores],
                used,
            )
            return value
        finally:
            if tracker is not None:
                tracker.finish()

    def _tracker(
        self,
        trial: optuna.Trial,
        parts: _Parts,
        cfg_dict: Mapping[str, Any],
        params: Mapping[str, Any],
    ) -> Tracker | None:
        if self.out_dir is None or parts.tracking.mode == "disabled":
            return None
        from .tracking import Tracker

        tracking = parts.tracking.model_copy(
            update={
                "group": self.study_name,
                "tags": (*parts.tracking.tags, "tune"),
                "log_bundle": False,
            }
        )
        run_cfg = {
            **cfg_dict,
            "tune_trial": {
                "study": self.study_name,
                "number": trial.number,
                "params": json_safe(dict(params)),
            },
        }
        return Tracker(
            tracking, f"{self.study_name}-trial{trial.number:05d}", run_cfg, self.out_dir
        )

    @staticmethod
    def _log_equity(tracker: Tracker, agent: TrainedAgent, fold: PreparedData, step: int) -> None:
        from .evaluate import evaluate_model
        from .plots import equity_curve_figure

        report = evaluate_model(agent, fold.validation, split="validation", n_random=2)
        tracker.log_figure("eval/equity_curve", equity_curve_figure(report), step=step)


# --------------------------------------------------------------------------- storage


def redact_url(url: str) -> str:
    """The storage URL with its password masked (for logs and summaries)."""
    if url == MEMORY:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (an unparsable URL is shown without its userinfo)
        head, _, tail = url.partition("@")
        return f"{head.split('//')[0]}//***@{tail}" if tail else url


def make_storage(url: str | None, tune: TuneConfig) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: in-memory, or an RDB storage with the heartbeat.

    Args:
        url: ``:memory:``/None, ``sqlite:///path.db`` (the folder is created) or any SQLAlchemy
            URL Optuna supports (``postgresql://user:pass@host:port/db``).
        tune: heartbeat interval, grace period and retries of re-queued trials.

    Raises:
        ConfigError: an unreadable URL or an unreachable database (the message says which).
    """
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if url is None or url == MEMORY:
        return optuna.storages.InMemoryStorage()
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != MEMORY:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=tune.heartbeat_interval_s,
                grace_period=tune.grace_period_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=tune.max_retry
                ),
            )
    except (ImportError, ModuleNotFoundError) as e:
        raise ConfigError(
            f"storage {redact_url(url)} needs a database driver that is not installed ({e}); "
            "for PostgreSQL: pip install 'psycopg[binary]' (SQLAlchemy's default postgresql:// "
            "driver), or psycopg2-binary with a postgresql+psycopg2:// URL"
        ) from e
    except Exception as e:  # sqlalchemy's errors: bad URL, refused connection, bad password
        raise ConfigError(
            f"cannot open the Optuna storage {redact_url(url)}: {type(e).__name__}: {e}"
        ) from e


def _sampler_seed(base: int, salt: str | None) -> int:
    if salt is None:
        return base
    digest = hashlib.sha256(f"{base}:{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def make_sampler(tune: TuneConfig, seed: int) -> optuna.samplers.BaseSampler:
    """TPE (or random) sampler seeded with ``seed``."""
    import optuna

    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune.startup_trials)


def make_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    """The median or successive-halving pruner (or none) of ``tune``."""
    import optuna

    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=tune.pruner_startup_trials, n_warmup_steps=tune.pruner_warmup_evals
        )
    if tune.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def open_study(
    config: BaseModel,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    *,
    seed_salt: str | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study, or load it when it exists (resume), checking it tunes the same problem.

    The sampler is seeded with ``tune.seed`` (or the experiment seed) for a new study run by
    one worker, so the same seed proposes the same trials; when the study already has trials,
    or ``seed_salt`` names one of several workers, the seed is derived from both, so a resumed
    or parallel worker does not replay the first proposals.

    Raises:
        ConfigError: the stored study was created from another config or search space.
    """
    import optuna

    tune = _tune_of(config)
    base_seed = tune.seed if tune.seed is not None else _parts(config).seed
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize",
        pruner=pruner or make_pruner(tune),
        load_if_exists=True,
    )
    key = study_key(config)
    stored = study.user_attrs.get(KEY_ATTR)
    if stored is None:
        study.set_user_attr(KEY_ATTR, key)
        study.set_user_attr(CONFIG_ATTR, json_safe(_public_config(config)))
    elif stored != key:
        raise ConfigError(
            f"study {study_name!r} in this storage was run with a different data/env/train "
            "config, seed or search space; use another study name (--study-name) or the "
            "config it was created with"
        )
    n_existing = len(study.get_trials(deepcopy=False))
    salt = seed_salt if n_existing == 0 else f"{seed_salt}:{n_existing}"
    study.sampler = make_sampler(tune, _sampler_seed(base_seed, salt))
    return study


def _public_config(config: BaseModel) -> dict[str, Any]:
    from .redact import scrub_secrets

    data = dict(config.model_dump(mode="json"))
    tune = dict(data.get("tune") or {})
    tune.pop("storage", None)  # may hold a database password
    data["tune"] = tune
    return dict(scrub_secrets(data))


# --------------------------------------------------------------------------- budget and locks


def retried_numbers(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of trials that were re-queued after their worker died (superseded by a copy)."""
    out: set[int] = set()
    for t in trials:
        out.update(int(n) for n in t.system_attrs.get("retry_history", []))
    return out


def logical_trial_count(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    """Trials counted against the budget: every trial except those superseded by a retry."""
    superseded = retried_numbers(trials)
    return sum(1 for t in trials if t.number not in superseded)


class _Lock:
    """The budget lock of one process (no-op base); ``release`` is idempotent, since either
    the claimed trial or the worker loop releases it."""

    def __init__(self) -> None:
        self.held = False

    def acquire(self) -> None:
        self.held = True

    def release(self) -> None:
        self.held = False


class _FileLock(_Lock):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.fh: TextIO | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a")  # noqa: SIM115  (held across calls)
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None
        self.held = False


class _AdvisoryLock(_Lock):
    """A PostgreSQL session advisory lock (released by the server if the worker dies)."""

    def __init__(self, url: str, key: int) -> None:
        super().__init__()
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        self.engine = create_engine(url, poolclass=NullPool)
        self.key = key
        self.conn: Any = None

    def acquire(self) -> None:
        from sqlalchemy import text

        self.conn = self.engine.connect()
        self.conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        self.held = True

    def release(self) -> None:
        from sqlalchemy import text

        if self.conn is not None:
            try:
                self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            finally:
                self.conn.close()
                self.conn = None
        self.held = False


def _budget_lock(url: str | None, study_name: str) -> _Lock:
    if url is None or url == MEMORY:
        return _Lock()
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != MEMORY:
            return _FileLock(Path(path + f".{_safe(study_name)}.lock"))
        return _Lock()
    if url.startswith("postgres"):
        key = int.from_bytes(
            hashlib.sha256(f"coinrl-tune:{study_name}".encode()).digest()[:8], "big", signed=True
        )
        return _AdvisoryLock(url, key)
    return _Lock()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    *,
    lock: _Lock | None = None,
    poll_s: float = 5.0,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Run trials of ``study`` until it holds ``n_trials`` trials and none is waiting or running.

    Each round, under ``lock``: fail stale trials (a dead worker's), count the trials against
    the budget (:func:`logical_trial_count`), then claim one (a re-queued trial first); the lock
    is released as soon as the trial exists. When the budget is spent but other workers' trials
    are still running, it waits (``poll_s``) so a trial whose worker dies is still re-run.

    Returns:
        The number of trials this worker ran.
    """
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import is_heartbeat_enabled
    from optuna.trial import TrialState

    lock = lock or _Lock()
    heartbeat = is_heartbeat_enabled(study._storage)
    ran = 0
    while should_stop is None or not should_stop():
        lock.acquire()
        try:
            if heartbeat:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            count = logical_trial_count(trials)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            running = any(t.state == TrialState.RUNNING for t in trials)
        except BaseException:
            lock.release()
            raise
        if count < n_trials or waiting:

            def claimed(trial: optuna.Trial) -> float:
                lock.release()  # the trial exists now: other workers may claim the next one
                return objective(trial)

            try:
                study.optimize(claimed, n_trials=1, catch=(Exception,), gc_after_trial=True)
            finally:
                if lock.held:
                    lock.release()
            ran += 1
            continue
        lock.release()
        if running and heartbeat:
            time.sleep(poll_s)
            continue
        break
    return ran


# --------------------------------------------------------------------------- workers


def worker_name() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class _WorkerJob:
    config: BaseModel
    candles: pd.DataFrame
    storage_url: str
    study_name: str
    n_trials: int
    out_dir: Path | None
    log_level: int


def _worker_main(job: _WorkerJob, index: int) -> None:
    """Run one worker of ``job`` in this process (the body of a worker process)."""
    from coinrl.pipeline.logutil import setup_logging

    setup_logging(
        -1 if job.log_level >= logging.WARNING else 0 if job.log_level >= logging.INFO else 1
    )
    tune = _tune_of(job.config)
    storage = make_storage(job.storage_url, tune)
    name = worker_name()
    study = open_study(job.config, storage, job.study_name, seed_salt=f"{name}:{index}")
    objective = TrialObjective(job.config, job.candles, job.out_dir, job.study_name, name)
    lock = _budget_lock(job.storage_url, job.study_name)
    ran = run_worker(
        study, objective, job.n_trials, lock=lock, poll_s=min(5.0, tune.heartbeat_interval_s)
    )
    logger.info("worker done study=%s worker=%s trials_run=%d", job.study_name, name, ran)


def worker_process_main(job_file: str, index: int) -> None:
    """Entry point of a worker process started by :func:`optimize_parameters`.

    Args:
        job_file: the pickled job the parent wrote (its own temp file).
        index: the worker's index on this machine.
    """
    with open(job_file, "rb") as fh:
        job = pickle.load(fh)  # noqa: S301  (written by our parent process)
    _worker_main(job, index)


def _run_processes(job: _WorkerJob, n_jobs: int) -> list[int]:
    """Start ``n_jobs`` fresh interpreters running one worker each; their exit codes.

    Fresh interpreters (not ``multiprocessing``) keep the caller's ``__main__`` out of the
    children: a script without a ``__main__`` guard still works, and no state is forked.
    """
    with tempfile.TemporaryDirectory(prefix="coinrl-tune-") as tmp:
        job_file = Path(tmp) / "job.pkl"
        with open(job_file, "wb") as fh:
            pickle.dump(job, fh, protocol=pickle.HIGHEST_PROTOCOL)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for i in range(n_jobs):
                code = (
                    "from coinrl.agents.tune import worker_process_main; "
                    f"worker_process_main({str(job_file)!r}, {i})"
                )
                procs.append(subprocess.Popen([sys.executable, "-c", code]))  # noqa: S603
            logger.info(
                "started %d tuning worker processes pids=%s", n_jobs, [p.pid for p in procs]
            )
            return [p.wait() for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=30)


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class StudySummary:
    """What a study holds.

    Attributes:
        study_name: the study.
        storage: its storage URL (password masked).
        n_trials: trials counted against the budget (re-queued trials once).
        states: trials per state (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``),
            re-queued attempts included.
        best_number, best_value, best_params: the best complete trial (None without one).
        pruned_fraction: pruned / (complete + pruned).
        compute_saved_fraction: env steps pruning saved / env steps without pruning (of the
            complete and pruned trials: pruned trials' unspent budget over all steps spent plus
            that).
        env_steps_used: env steps trained over all trials.
        workers: distinct worker processes that ran trials.
        failed_errors: ``{trial number: error}`` of the failed trials.
    """

    study_name: str
    storage: str
    n_trials: int
    states: dict[str, int]
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    pruned_fraction: float
    compute_saved_fraction: float
    env_steps_used: int
    workers: int
    failed_errors: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain data."""
        return dict(json_safe(dataclasses.asdict(self)))


def summarize_study(study: optuna.Study, storage_url: str = MEMORY) -> StudySummary:
    """Counts, best trial, pruning and compute figures of a study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    pruned = [t for t in done if t.state == TrialState.PRUNED]
    used = sum(int(t.user_attrs.get("env_steps_used", 0)) for t in trials)
    saved = sum(
        max(
            0,
            int(t.user_attrs.get("env_steps_budget", 0))
            - int(t.user_attrs.get("env_steps_used", 0)),
        )
        for t in pruned
    )
    done_used = sum(int(t.user_attrs.get("env_steps_used", 0)) for t in done)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = (
        max(complete, key=lambda t: float(t.value if t.value is not None else -math.inf))
        if complete
        else None
    )
    return StudySummary(
        study_name=study.study_name,
        storage=redact_url(storage_url),
        n_trials=logical_trial_count(trials),
        states=states,
        best_number=None if best is None else best.number,
        best_value=None if best is None else best.value,
        best_params={} if best is None else dict(best.params),
        pruned_fraction=len(pruned) / len(done) if done else 0.0,
        compute_saved_fraction=saved / (done_used + saved) if (done_used + saved) > 0 else 0.0,
        env_steps_used=used,
        workers=len({t.user_attrs.get("worker") for t in trials if t.user_attrs.get("worker")}),
        failed_errors={
            t.number: str(t.user_attrs["error"])
            for t in trials
            if t.state == TrialState.FAIL and "error" in t.user_attrs
        },
    )


# --------------------------------------------------------------------------- entry point


def optimize_parameters(
    hyperparameters: BaseModel,
    data: pd.DataFrame,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    n_jobs: int | None = None,
    out_dir: str | Path | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
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
    tune = _tune_of(hyperparameters)
    url = storage or tune.storage or MEMORY
    name = study_name or tune.study_name or _parts(hyperparameters).name
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
    if jobs == 1:
        objective = TrialObjective(hyperparameters, data, folder, name, worker_name())
        run_worker(
            study,
            objective,
            budget,
            lock=_budget_lock(url, name),
            poll_s=min(5.0, tune.heartbeat_interval_s),
        )
    else:
        level = logging.getLogger().getEffectiveLevel()
        job = _WorkerJob(hyperparameters, data, url, name, budget, folder, level)
        codes = _run_processes(job, jobs)
        bad = [c for c in codes if c != 0]
        if bad:
            logger.warning("tuning workers exited with codes %s (0 = done)", codes)
        if len(bad) == len(codes):
            raise CoinrlError(f"every tuning worker failed (exit codes {codes}); see the log above")
        study = open_study(hyperparameters, store, name, seed_salt="summary")
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


# --------------------------------------------------------------------------- the best trial


@dataclass(frozen=True)
class BestResult:
    """The best trial, trained again, bundled and evaluated once on the test split.

    Attributes:
        trial_number, value, params: the best trial (params as config values).
        bundle: the saved bundle folder.
        retrained_on: ``train`` or ``train+validation``.
        validation: validation report (agent and baselines) when trained on train only.
        test: test report (agent, baselines) plus ``sharpe_stats`` (per-bar Sharpe, PSR, DSR
            over ``n_trials``); None when ``evaluate_test`` is off.
        n_trials: trials behind the deflation (complete and pruned).
        reused_test: True when the test result came from the study (no second look at test).
    """

    trial_number: int
    value: float
    params: dict[str, Any]
    bundle: Path
    retrained_on: str
    validation: dict[str, Any] | None
    test: dict[str, Any] | None
    n_trials: int
    reused_test: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain data."""
        d = dataclasses.asdict(self)
        d["bundle"] = str(self.bundle)
        return dict(json_safe(d))


def _train_plus_validation(prepared: PreparedData) -> PreparedData:
    """Train on rows ``[0, validation.stop)`` (normaliser refitted on them), no validation."""
    stop = prepared.main_fold.validation.stop
    rows = range(0, stop)
    norm = Normaliser.fit(prepared.raw_features[:stop], prepared.spec.feature_names, prepared.norm)
    x = norm.transform(prepared.raw_features)
    full = dataclasses.replace(
        prepared.full,
        features=x,
        meta={**prepared.full.meta, "normaliser_fingerprint": norm.fingerprint()},
    )
    test_rows = prepared.main_fold.test

    def part(name: str, r: range) -> MarketData:
        md = full.slice(r.start, r.stop)
        md.meta.update({"split": name, "row_start": r.start, "row_stop": r.stop})
        return md

    return dataclasses.replace(
        prepared,
        train=part("train", rows),
        validation=part("validation", range(stop, stop)),
        test=part("test", test_rows),
        full=full,
        normaliser=norm,
        main_fold=Fold(0, rows, range(stop, stop), test_rows),
    )


def _trial_sharpe_variance(trials: Sequence[optuna.trial.FrozenTrial]) -> float | None:
    """Variance of the complete trials' per-bar validation Sharpe ratios (None below 2)."""
    per_bar = []
    for t in trials:
        s, ppy = t.user_attrs.get("sharpe"), t.user_attrs.get("periods_per_year")
        if s is not None and ppy and math.isfinite(float(s)):
            per_bar.append(float(s) / math.sqrt(float(ppy)))
    return float(np.var(per_bar, ddof=1)) if len(per_bar) >= 2 else None


def train_best(
    config: BaseModel,
    candles: pd.DataFrame,
    study: optuna.Study,
    out_dir: str | Path,
) -> BestResult:
    """Train the study's best configuration again, bundle it and evaluate it once on test.

    Args:
        config: the experiment config the study was run with.
        candles: cleaned candles of the whole history (now the test rows ARE read, once).
        study: the finished study.
        out_dir: the study folder; the bundle goes to ``<out_dir>/best/bundle``.

    Returns:
        The :class:`BestResult` (also written to ``<out_dir>/tune_result.json``).

    Raises:
        DataError: the study has no complete trial.
    """
    import optuna

    from .bundle import save_model
    from .evaluate import evaluate_model
    from .metrics import simple_returns
    from .stats import sharpe_stats
    from .tracking import Tracker
    from .train import train_model

    tune = _tune_of(config)
    folder = Path(out_dir)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise DataError(
            f"study {study.study_name!r} has no complete trial yet (states: "
            f"{summarize_study(study).states}); run more trials or look at the failed trials' errors"
        )
    best = study.best_trial
    params = params_from_trial(tune.space, best.params)
    cfg = trial_config(config, params)
    parts = _parts(cfg)
    cfg_dict = cfg.model_dump(mode="json")
    prepared = prepare_data_for_model(
        candles, parts.data.features, parts.data.split, parts.data.norm
    )
    on = "train+validation" if tune.retrain_on_train_and_validation else "train"
    if tune.retrain_on_train_and_validation:
        prepared = _train_plus_validation(prepared)
    n_tried = sum(
        1
        for t in trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    stored = study.user_attrs.get(TEST_ATTR)
    tracking = parts.tracking.model_copy(
        update={"group": study.study_name, "tags": (*parts.tracking.tags, "tune", "best")}
    )
    tracker = Tracker(
        tracking,
        f"{study.study_name}-best",
        {**cfg_dict, "tune_best": {"trial": best.number}},
        folder,
    )
    try:
        agent = train_model(
            prepared,
            parts.train.with_seed(parts.seed),
            parts.env,
            tracker=tracker,
            experiment_config=cfg_dict,
        )
        agent.info["tune"] = {
            "study": study.study_name,
            "trial": best.number,
            "value": best.value,
            "n_trials": n_tried,
        }
        validation = None
        if len(prepared.validation) > parts.env.window:
            validation = evaluate_model(
                agent, prepared.validation, split="validation", seed=parts.seed
            ).to_dict()
            agent.info["validation"] = validation
        bundle = save_model(agent, folder / BEST_DIR / "bundle")
        test: dict[str, Any] | None = None
        reused = False
        if tune.evaluate_test:
            if (
                stored is not None
                and stored.get("trial") == best.number
                and stored.get("weights_sha256") == agent.info["weights_sha256"]
            ):
                test, reused = dict(stored["result"]), True
                logger.info(
                    "test evaluation of trial %d reused from the study (no second look)",
                    best.number,
                )
            else:
                if stored is not None:
                    logger.warning(
                        "the test split was already evaluated for trial %s; evaluating the new best "
                        "trial %d is a second look at the test data: treat its figures with care",
                        stored.get("trial"),
                        best.number,
                    )
                report = evaluate_model(agent, prepared.test, split="test", seed=parts.seed)
                rets = simple_returns(report.rollout.equity_quote)
                var = _trial_sharpe_variance(complete)
                stats = sharpe_stats(rets, n_trials=max(n_tried, 1), sharpe_variance=var)
                test = {
                    **report.to_dict(),
                    "sharpe_stats": stats,
                    "sharpe_variance_source": "trials" if var is not None else "sampling",
                }
                test = dict(json_safe(test))
                study.set_user_attr(
                    TEST_ATTR,
                    {
                        "trial": best.number,
                        "weights_sha256": agent.info["weights_sha256"],
                        "result": test,
                        "evaluations": int((stored or {}).get("evaluations", 0)) + 1,
                    },
                )
                if tracker.enabled:
                    from .plots import equity_curve_figure

                    tracker.log_figure("test/equity_curve", equity_curve_figure(report))
                    tracker.summary(
                        {**report.flat("test"), "test/dsr": stats["dsr"], "test/psr": stats["psr"]}
                    )
            tracker.log_artifact(
                bundle, f"{study.study_name}-best-bundle", "model", metadata={"trial": best.number}
            )
    finally:
        tracker.finish()
    result = BestResult(
        best.number, float(best.value or 0.0), params, bundle, on, validation, test, n_tried, reused
    )
    (folder / RESULT_FILE).write_text(
        json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    if test is not None:
        st = test["sharpe_stats"]
        logger.info(
            "best trial=%d test total_return=%.4f sharpe=%.3f dsr=%.3f (n_trials=%d) bundle=%s",
            best.number,
            test["agent"]["total_return"],
            test["agent"]["sharpe"] or float("nan"),
            st["dsr"],
            n_tried,
            bundle,
        )
    return result


def load_study(url: str, study_name: str, tune: TuneConfig) -> optuna.Study:
    """Load an existing study (for summaries and :func:`train_best`).

    Raises:
        ConfigError: no such study in the storage.
    """
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=make_storage(url, tune))
    except KeyError as e:
        raise ConfigError(f"no study {study_name!r} in {redact_url(url)}") from e


__all__ = [
    "BestResult",
    "StudySummary",
    "TrialObjective",
    "TuningData",
    "base_config_dict",
    "load_study",
    "logical_trial_count",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "open_study",
    "optimize_parameters",
    "params_from_trial",
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
