"""What ``coinrl train`` and ``coinrl evaluate`` do (the CLI only parses arguments and prints).

* :func:`run_train`: experiment YAML (+ overrides) → data → W&B run → :func:`train_model` →
  validation report against the baselines → bundle (+ artifact, equity plot) → bundle path.
  ``resume=True`` continues the run's latest checkpoint (and its W&B run).
* :func:`run_evaluate`: bundle → the bundle's data config, features and normaliser → report
  of the agent and the baselines on a split.
* :func:`retrain_from_bundle`: train again from a bundle's ``config.yaml`` alone and say
  whether the result has the same weights.

Run folder layout (``out_dir/<name>/``): ``run.json`` (run id and identity, see
:mod:`~coinrl.experiments.run_dir`), ``checkpoints/``, ``best/``, ``progress.csv``, ``train.log``
(every log line of the run, metric dumps included), ``wandb/`` (offline runs), ``bundle/``,
``evaluation.json`` (validation report) and ``equity_validation.png`` (agent vs baselines).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from coinrl.agents.agent import TrainedAgent
from coinrl.agents.bundle import CONFIG_FILE, load_model, save_model
from coinrl.agents.evaluate import evaluate_model
from coinrl.agents.metrics import json_safe
from coinrl.agents.plots import equity_curve_figure
from coinrl.agents.tracking import Tracker, make_logger
from coinrl.agents.train import check_trainable, train_model
from coinrl.agents.train_portfolio import evaluate_portfolio, portfolio_data_for, split_of
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.portfolio import PreparedPortfolio
from coinrl.pipeline.source import (
    PortfolioDataConfig,
    load_candles,
    load_dataset,
    load_portfolio_dataset,
)
from coinrl.pipeline.splits import (
    PreparedData,
    candles_fingerprint,
    market_data_from_spec,
    split_bounds,
)

from .config import ExperimentConfig, experiment_config_from, load_experiment_config
from .run_dir import claim_run_dir, run_identity

if TYPE_CHECKING:
    from stable_baselines3.common.logger import Logger

logger = logging.getLogger(__name__)

BUNDLE_DIR = "bundle"
EVALUATION_FILE = "evaluation.json"
WANDB_ID_FILE = "wandb_run_id.txt"
EQUITY_PLOT_FILE = "equity_validation.png"
LOG_FILE = "train.log"
SPLITS = ("train", "validation", "test", "full")


def train_experiment(
    config: ExperimentConfig, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False
) -> Path:
    """Train, validate, bundle and track one experiment (see :func:`run_train`).

    The data is loaded and checked against the env (window, episode length) and the run
    folder is claimed (:func:`~coinrl.experiments.run_dir.claim_run_dir`) before anything is
    written, so a bad run leaves nothing behind and a run folder holds one run.

    Returns:
        The bundle folder ``out_dir/<name>/bundle``.
    """
    run_dir = Path(out_dir) / config.name
    prepared: PreparedData | PreparedPortfolio
    if isinstance(config.data, PortfolioDataConfig):
        prepared = load_portfolio_dataset(config.data)
    else:
        prepared = load_dataset(config.data)
    check_trainable(prepared, config.env)
    claim_run_dir(run_dir, run_identity(config, prepared), resume=resume, overwrite=overwrite)
    log_file = _attach_log_file(run_dir / LOG_FILE)
    try:
        return _train_in(run_dir, config, prepared, resume)
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()


def _attach_log_file(path: Path) -> logging.Handler:
    """Append every log record of the run (metric dumps included) to ``path``."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
    ))
    logging.getLogger().addHandler(handler)
    return handler


def _train_in(run_dir: Path, config: ExperimentConfig, prepared: Any, resume: bool) -> Path:
    full_cfg = config.to_dict()
    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
    tracker = Tracker(config.tracking, config.name, full_cfg, run_dir, run_id=run_id)
    if tracker.run_id:
        id_file.write_text(tracker.run_id + "\n", encoding="utf-8")
    sink = make_logger(run_dir, tracker)
    try:
        agent = train_model(
            prepared,
            config.resolved_train,
            config.env,
            out_dir=run_dir,
            resume=resume,
            tracker=tracker,
            experiment_config=full_cfg,
            sink=sink,
        )
        if isinstance(prepared, PreparedPortfolio):
            return _finish_portfolio(run_dir, config, agent, prepared, sink, tracker)
        report = evaluate_model(agent, prepared.validation, split="validation", seed=config.seed)
        step = int(agent.info["num_timesteps"])
        for key, value in report.flat("eval/final").items():
            sink.record(key, value)
        sink.dump(step)
        agent.info["validation"] = report.to_dict()
        bundle = save_model(agent, run_dir / BUNDLE_DIR)
        (run_dir / EVALUATION_FILE).write_text(
            json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        fig = equity_curve_figure(report)
        fig.savefig(run_dir / EQUITY_PLOT_FILE)
        if tracker.enabled:
            tracker.log_figure("eval/equity_curve", fig, step=step)
            tracker.summary(report.flat("final"))
            tracker.log_artifact(
                bundle, f"{config.name}-bundle", "model",
                metadata={"algo": agent.algo, "data_fingerprint": agent.data_info.get("data_fingerprint")},
            )
    finally:
        sink.close()
        tracker.finish()
    logger.info(
        "run name=%s bundle=%s validation_total_return=%.4f buy_and_hold=%.4f",
        config.name, bundle, report.agent["total_return"],
        report.baselines["buy_and_hold"]["total_return"],
    )
    return bundle


def _finish_portfolio(
    run_dir: Path, config: ExperimentConfig, agent: TrainedAgent, prepared: PreparedPortfolio,
    sink: Logger, tracker: Tracker,
) -> Path:
    """Validation report (agent and the portfolio baselines) and bundle of a portfolio run."""
    report = evaluate_portfolio(agent, prepared.validation, split="validation")
    step = int(agent.info["num_timesteps"])
    for name, metrics in (("agent", report["agent"]), *report["baselines"].items()):
        for key, value in metrics.items():
            sink.record(f"eval/final/{name}/{key}", value)
    sink.dump(step)
    agent.info["validation"] = report
    bundle = save_model(agent, run_dir / BUNDLE_DIR)
    (run_dir / EVALUATION_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if tracker.enabled:
        tracker.summary({f"final/agent/{k}": v for k, v in report["agent"].items()})
        tracker.log_artifact(
            bundle, f"{config.name}-bundle", "model",
            metadata={"algo": agent.algo, "data_fingerprint": agent.data_info.get("data_fingerprint")},
        )
    logger.info(
        "run name=%s bundle=%s validation_total_return=%.4f crp_daily=%.4f cash=%.4f",
        config.name, bundle, report["agent"]["total_return"],
        report["baselines"]["crp_daily"]["total_return"], report["baselines"]["cash"]["total_return"],
    )
    return bundle


def run_train(
    config_path: Path, overrides: list[str], resume: bool, out_dir: Path, *, overwrite: bool = False
) -> Path:
    """``coinrl train CONFIG [key=value ...] [--resume | --overwrite] [--out DIR]``.

    Args:
        config_path: experiment YAML (``experiments/configs/*.yaml`` or a bundle's
            ``config.yaml``).
        overrides: ``key.path=value`` overrides (e.g. ``train.total_timesteps=50000``).
        resume: continue the run in ``out_dir/<name>`` from its latest checkpoint (refused
            when that folder holds a different run).
        out_dir: parent folder of the run folder.
        overwrite: delete the run in ``out_dir/<name>`` and start a new one (without this or
            ``resume``, an occupied run folder is refused).

    Returns:
        The bundle folder.

    Raises:
        ConfigError: bad config or overrides; an occupied run folder; a checkpoint or run
            folder from a different config.
        DataError: unusable data (e.g. shorter than the env's window and episode).
    """
    config = load_experiment_config(config_path, overrides)
    return train_experiment(config, out_dir, resume=resume, overwrite=overwrite)


def run_evaluate(bundle: Path, split: str) -> dict[str, Any]:
    """``coinrl evaluate BUNDLE [--split validation|test|train|full]``.

    Rebuilds the split from the bundle's data config with the bundle's OWN feature spec and
    normaliser (never refitted), rolls the deterministic policy over it and plays the
    baselines through the same env and costs.

    Args:
        bundle: bundle folder or zip.
        split: ``train``, ``validation``, ``test`` or ``full``.

    Returns:
        JSON-safe dict: ``split``, ``agent``, ``policy``, ``baselines``, ``meta`` (plus
        ``data_matches_bundle``: whether the candles hash to the bundle's data fingerprint) and
        ``bundle`` (algo, data provenance, training info).

    Raises:
        ConfigError: unknown split, or a bundle without a data section.
        DataError: a tampered bundle, or data too short for the split.
    """
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    agent = load_model(bundle)
    raw = agent.experiment_config
    if "data" not in raw:
        raise ConfigError(
            f"{bundle} has no data section in its config (it was saved from train_model "
            "without an experiment config); evaluate it with evaluate_model on your own data"
        )
    if agent.is_portfolio:
        data = split_of(portfolio_data_for(agent), split)
        out = evaluate_portfolio(agent, data, split=split)
        out["meta"]["data_matches_bundle"] = bool(data.meta.get("data_matches_agent"))
        out["bundle"] = _bundle_summary(bundle, agent)
        return out
    cfg = experiment_config_from(raw, source=f"{bundle}/{CONFIG_FILE}")
    candles = load_candles(cfg.data)
    full = market_data_from_spec(candles, agent.feature_spec, agent.normaliser, split="full")
    if split == "full":
        md = full
    else:
        rows = split_bounds(len(full), cfg.data.split).parts()[split]
        md = full.slice(rows.start, rows.stop)
        md.meta["split"] = split
    matches = candles_fingerprint(candles) == agent.data_info.get("data_fingerprint")
    if not matches:
        logger.warning(
            "evaluate: the candles of %s differ from those the bundle was trained on "
            "(data fingerprint mismatch); the splits may cover other bars",
            cfg.data.source,
        )
    report = evaluate_model(agent, md, split=split, seed=cfg.seed)
    out = report.to_dict()
    out["meta"]["data_matches_bundle"] = matches
    out["bundle"] = _bundle_summary(bundle, agent)
    return out


def _bundle_summary(bundle: Path, agent: TrainedAgent) -> Any:
    return json_safe(
        {
            "path": str(bundle),
            "algo": agent.algo,
            "data": agent.data_info,
            "training": {k: v for k, v in agent.info.items() if k not in ("versions", "validation")},
        }
    )


def retrain_from_bundle(
    bundle: Path, out_dir: Path, overrides: Sequence[str] = ()
) -> tuple[Path, bool]:
    """Train again from a bundle's ``config.yaml`` alone.

    Args:
        bundle: bundle folder or zip.
        out_dir: parent folder of the new run folder.
        overrides: ``key.path=value`` overrides on top of the bundle's config.

    Returns:
        ``(new bundle path, same_weights)``; ``same_weights`` is True when the new policy's
        weights hash equals the bundle's (same config, data, seed and library versions on CPU).
    """
    old = load_model(bundle)
    raw = old.experiment_config
    if "data" not in raw:
        raise ConfigError(f"{bundle} has no data section in its config; it cannot be retrained alone")
    with tempfile.TemporaryDirectory(prefix="coinrl-retrain-") as tmp:
        path = Path(tmp) / CONFIG_FILE
        path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        config = load_experiment_config(path, overrides)
    new_bundle = train_experiment(config, out_dir)
    new = load_model(new_bundle)
    same = new.info.get("weights_sha256") == old.info.get("weights_sha256")
    logger.info("retrained bundle=%s new=%s same_weights=%s", bundle, new_bundle, same)
    return new_bundle, same


__all__ = ["retrain_from_bundle", "run_evaluate", "run_train", "train_experiment"]
