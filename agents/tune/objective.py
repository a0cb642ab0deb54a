"""The objective of a study: parameters -> trial config -> folds -> mean validation score.

Every validation of :func:`~coinrl.agents.train.train_model` is reported to the trial (the
running mean over folds, at a step that counts evaluations, so trials with different rollout
sizes report at the same steps); the pruner stops bad trials mid-training. A trial that raises
is marked FAIL with its error in the ``error`` user attribute; the study goes on.
"""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from stable_baselines3.common.logger import CSVOutputFormat, KVWriter, Logger

from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.source import DataConfig, PortfolioDataConfig
from coinrl.pipeline.splits import PreparedData
from coinrl.pipeline.timeframes import bars_per_year

from ..metrics import json_safe
from ..tune_space import suggest_params
from .config import TRIALS_DIR, TunableConfig, trial_config, tune_of
from .data import TuningData, tuning_folds
from .portfolio_data import is_stacked, portfolio_tuning_folds

if TYPE_CHECKING:
    import optuna

    from ..agent import TrainedAgent
    from ..tracking import Tracker

logger = logging.getLogger(__name__)

_DATA_CACHE_SIZE = 4


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
    from ..tracking import LoggingWriter, WandbWriter

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
        candles: cleaned candles of the whole history (only rows before the test split are read);
            a portfolio's stacked candles (:mod:`~coinrl.agents.tune.portfolio_data`) for a
            portfolio config.
        out_dir: the study folder (per-trial ``progress`` CSVs, W&B files); None = no files
            and no W&B.
        study_name: the W&B group of the trial runs.
        worker: this worker's name (``host:pid``), recorded on each trial.
    """

    def __init__(
        self,
        config: TunableConfig,
        candles: pd.DataFrame,
        out_dir: Path | None,
        study_name: str,
        worker: str,
    ) -> None:
        self.config = config
        self.tune = tune_of(config)
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
        if is_stacked(self.candles):  # a portfolio's candles: its folds on the common clock
            if not isinstance(data, PortfolioDataConfig):
                raise ConfigError("portfolio candles need a portfolio data section (sources/symbols)")
            folds, dev_rows = portfolio_tuning_folds(self.candles, data, self.tune.folds, self.tune.fold_mode)
            td = TuningData(folds, dev_rows, dev_rows)
        else:
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

    def _run(self, trial: optuna.Trial, cfg: TunableConfig, params: Mapping[str, Any]) -> float:
        import optuna

        from ..train import train_model

        data = self.data_for(cfg.data)
        train = cfg.train.with_seed(cfg.seed)
        n_folds = len(data.folds)
        total = train.total_timesteps
        trial.set_user_attr("env_steps_budget", total * n_folds)
        evals_per_fold = (total // train.eval_every_steps + 3) if train.eval_every_steps else 2
        cfg_dict = cfg.model_dump(mode="json")
        tracker = self._tracker(trial, cfg, cfg_dict, params)
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
                    agent = train_model(fold, train, cfg.env, sink=sink, experiment_config=cfg_dict)
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
                if agent is not None and isinstance(data.folds[-1], PreparedData):
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
        cfg: TunableConfig,
        cfg_dict: Mapping[str, Any],
        params: Mapping[str, Any],
    ) -> Tracker | None:
        if self.out_dir is None or cfg.tracking.mode == "disabled":
            return None
        from ..tracking import Tracker

        tracking = cfg.tracking.model_copy(
            update={
                "group": self.study_name,
                "tags": (*cfg.tracking.tags, "tune"),
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
        from ..evaluate import evaluate_model
        from ..plots import equity_curve_figure

        report = evaluate_model(agent, fold.validation, split="validation", n_random=2)
        tracker.log_figure("eval/equity_curve", equity_curve_figure(report), step=step)
