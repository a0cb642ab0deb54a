"""The best trial: trained again, bundled and evaluated ONCE on the test split.

:func:`train_best` trains the best configuration again (on train, validated on validation, or on
train + validation when configured), saves its bundle and evaluates it once on the test split,
with the deflated Sharpe ratio over the number of trials; the result is stored in the study, so
a rerun reports it instead of looking at the test split again. A bundle already made for the
same trial of the same study (same trial config, same retraining) is reused, not retrained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from coinrl.envs.config import portfolio_config_from
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import CoinrlError, ConfigError, DataError
from coinrl.pipeline.features import feature_engineering, fit_feature_spec
from coinrl.pipeline.portfolio import PreparedPortfolio
from coinrl.pipeline.source import PortfolioDataConfig
from coinrl.pipeline.splits import Fold, Normaliser, PreparedData, prepare_data_for_model

from ..metrics import json_safe
from .config import (
    BEST_DIR,
    RESULT_FILE,
    TEST_ATTR,
    TunableConfig,
    params_from_trial,
    trial_config,
    tune_of,
)
from .portfolio_data import is_stacked, prepare_best_portfolio
from .summary import summarize_study

if TYPE_CHECKING:
    import optuna

    from ..agent import TrainedAgent
    from ..evaluate import EvaluationReport
    from ..tracking import Tracker

logger = logging.getLogger(__name__)


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
        reused_bundle: True when the bundle ``tune`` already made for this trial was reused
            instead of training it again.
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
    reused_bundle: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain data."""
        d = dataclasses.asdict(self)
        d["bundle"] = str(self.bundle)
        return dict(json_safe(d))


def _train_plus_validation(prepared: PreparedData) -> PreparedData:
    """Train on rows ``[0, validation.stop)`` (normaliser and fitted features such as
    ``hmm_regime`` refitted on them), no validation."""
    stop = prepared.main_fold.validation.stop
    rows = range(0, stop)
    spec, raw = prepared.spec, prepared.raw_features
    if spec.fitted_kinds and prepared.candles is not None:
        warm = prepared.warmup_rows_dropped
        spec = fit_feature_spec(prepared.candles, spec, range(warm, warm + stop))
        frame = feature_engineering(prepared.candles, spec)
        raw = frame[list(spec.feature_names)].to_numpy(dtype=np.float64)
    norm = Normaliser.fit(raw[:stop], spec.feature_names, prepared.norm)
    x = norm.transform(raw)
    full = dataclasses.replace(
        prepared.full,
        features=x,
        meta={
            **prepared.full.meta,
            "normaliser_fingerprint": norm.fingerprint(),
            "feature_spec_fingerprint": spec.fingerprint(),
        },
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
        spec=spec,
        raw_features=raw,
    )


def _trial_sharpe_variance(trials: Sequence[optuna.trial.FrozenTrial]) -> float | None:
    """Variance of the complete trials' per-bar validation Sharpe ratios (None below 2)."""
    per_bar = []
    for t in trials:
        s, ppy = t.user_attrs.get("sharpe"), t.user_attrs.get("periods_per_year")
        if s is not None and ppy and math.isfinite(float(s)):
            per_bar.append(float(s) / math.sqrt(float(ppy)))
    return float(np.var(per_bar, ddof=1)) if len(per_bar) >= 2 else None


def _config_sha256(cfg_dict: Mapping[str, Any]) -> str:
    canon = json.dumps(json_safe(dict(cfg_dict)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def _reusable_bundle(path: Path, tune_info: Mapping[str, Any]) -> TrainedAgent | None:
    """The agent of the bundle at ``path`` when it was made for the same trial (same study,
    trial number, trial config and retraining), else None (then it is trained again)."""
    from ..bundle import load_model

    if not path.exists():
        return None
    try:
        agent = load_model(path)
    except CoinrlError as e:
        logger.warning("best bundle path=%s cannot be reused (%s); training it again", path, e)
        return None
    saved = agent.info.get("tune") or {}
    keys = ("study", "trial", "retrained_on", "config_sha256")
    if any(saved.get(k) != tune_info[k] for k in keys):
        logger.info(
            "best bundle path=%s is of another trial or config (%s); training the best again",
            path,
            {k: saved.get(k) for k in keys},
        )
        return None
    return agent


def train_best(
    config: TunableConfig,
    candles: pd.DataFrame,
    study: optuna.Study,
    out_dir: str | Path,
) -> BestResult:
    """Train the study's best configuration again (or reuse the bundle already made for it),
    bundle it and evaluate it once on test.

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

    from ..bundle import save_model
    from ..evaluate import evaluate_model
    from ..tracking import Tracker
    from ..train import train_model
    from ..train_portfolio import evaluate_portfolio

    tune = tune_of(config)
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
    cfg_dict = cfg.model_dump(mode="json")
    on = "train+validation" if tune.retrain_on_train_and_validation else "train"
    prepared: PreparedData | PreparedPortfolio
    if is_stacked(candles):  # a portfolio: every asset on the common clock
        if not isinstance(cfg.data, PortfolioDataConfig):
            raise ConfigError("portfolio candles need a portfolio data section (sources/symbols)")
        prepared = prepare_best_portfolio(candles, cfg.data, tune.retrain_on_train_and_validation)
    else:
        prepared = prepare_data_for_model(candles, cfg.data.features, cfg.data.split, cfg.data.norm)
        if tune.retrain_on_train_and_validation:
            prepared = _train_plus_validation(prepared)
    n_tried = sum(
        1
        for t in trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    tune_info = {
        "study": study.study_name,
        "trial": best.number,
        "value": best.value,
        "n_trials": n_tried,
        "retrained_on": on,
        "config_sha256": _config_sha256(cfg_dict),
    }
    bundle = folder / BEST_DIR / "bundle"
    agent = _reusable_bundle(bundle, tune_info)
    reused_bundle = agent is not None
    tracker: Tracker | None = None
    try:
        if agent is None:
            tracking = cfg.tracking.model_copy(
                update={"group": study.study_name, "tags": (*cfg.tracking.tags, "tune", "best")}
            )
            tracker = Tracker(
                tracking,
                f"{study.study_name}-best",
                {**cfg_dict, "tune_best": {"trial": best.number}},
                folder,
            )
            agent = train_model(
                prepared,
                cfg.train.with_seed(cfg.seed),
                cfg.env,
                tracker=tracker,
                experiment_config=cfg_dict,
            )
            agent.info["tune"] = tune_info
            if len(prepared.validation) > cfg.env.window:
                agent.info["validation"] = (
                    evaluate_portfolio(agent, prepared.validation, split="validation", seed=cfg.seed)
                    if isinstance(prepared, PreparedPortfolio)
                    else evaluate_model(agent, prepared.validation, split="validation", seed=cfg.seed).to_dict()
                )
            bundle = save_model(agent, bundle)
        else:
            logger.info(
                "reusing the best bundle path=%s of trial %d (made by coinrl tune)",
                bundle,
                best.number,
            )
        validation = agent.info.get("validation")
        test: dict[str, Any] | None = None
        reused = False
        if tune.evaluate_test:
            test, reused = _test_once(study, agent, prepared, cfg.seed, n_tried, complete, tracker)
        if tracker is not None:
            tracker.log_artifact(
                bundle, f"{study.study_name}-best-bundle", "model", metadata={"trial": best.number}
            )
    finally:
        if tracker is not None:
            tracker.finish()
    result = BestResult(
        best.number,
        float(best.value or 0.0),
        params,
        bundle,
        on,
        validation,
        test,
        n_tried,
        reused,
        reused_bundle,
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


def _test_once(
    study: optuna.Study,
    agent: TrainedAgent,
    prepared: PreparedData | PreparedPortfolio,
    seed: int,
    n_tried: int,
    complete: Sequence[optuna.trial.FrozenTrial],
    tracker: Tracker | None,
) -> tuple[dict[str, Any], bool]:
    """``(test result, reused)``: the study's stored test evaluation of these very weights, or a
    new one (stored in the study; a warning when another trial's test result was stored)."""
    from ..evaluate import evaluate_model
    from ..metrics import simple_returns
    from ..stats import sharpe_stats

    best = int(agent.info["tune"]["trial"])
    stored = study.user_attrs.get(TEST_ATTR)
    if (
        stored is not None
        and stored.get("trial") == best
        and stored.get("weights_sha256") == agent.info["weights_sha256"]
    ):
        logger.info("test evaluation of trial %d reused from the study (no second look)", best)
        return dict(stored["result"]), True
    if stored is not None:
        logger.warning(
            "the test split was already evaluated for trial %s; evaluating the new best "
            "trial %d is a second look at the test data: treat its figures with care",
            stored.get("trial"),
            best,
        )
    report: EvaluationReport | None = None
    if isinstance(prepared, PreparedPortfolio):
        from ..portfolio_rollout import rollout_portfolio
        from ..train_portfolio import evaluate_portfolio

        evaluated = evaluate_portfolio(agent, prepared.test, split="test", seed=seed)
        equity = rollout_portfolio(prepared.test, portfolio_config_from(agent.env_config),
                                   policy=agent.model, deterministic=True).equity_quote
    else:
        report = evaluate_model(agent, prepared.test, split="test", seed=seed)
        evaluated, equity = report.to_dict(), report.rollout.equity_quote
    rets = simple_returns(equity)
    var = _trial_sharpe_variance(complete)
    stats = sharpe_stats(rets, n_trials=max(n_tried, 1), sharpe_variance=var)
    test = dict(
        json_safe(
            {
                **evaluated,
                "sharpe_stats": stats,
                "sharpe_variance_source": "trials" if var is not None else "sampling",
            }
        )
    )
    study.set_user_attr(
        TEST_ATTR,
        {
            "trial": best,
            "weights_sha256": agent.info["weights_sha256"],
            "result": test,
            "evaluations": int((stored or {}).get("evaluations", 0)) + 1,
        },
    )
    if tracker is not None and tracker.enabled and report is not None:
        _log_test(tracker, report, stats)
    return test, False


def _log_test(tracker: Tracker, report: EvaluationReport, stats: Mapping[str, float]) -> None:
    from ..plots import equity_curve_figure

    tracker.log_figure("test/equity_curve", equity_curve_figure(report))
    tracker.summary({**report.flat("test"), "test/dsr": stats["dsr"], "test/psr": stats["psr"]})
