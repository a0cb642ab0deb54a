"""What ``coinrl quickstart`` does: train, backtest and report on the packaged sample, offline.

:func:`run_quickstart` trains PPO on the packaged hourly BTC/USD sample with a small budget,
backtests it on the held-out test split beside the baselines and writes the report folder.
Importable from :mod:`coinrl.experiments.backtest_cmd` too (which registers the command).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from coinrl.agents.backtest import simulate_trading_strategy
from coinrl.agents.bundle import save_model
from coinrl.agents.report import save_backtest_results
from coinrl.pipeline.errors import ConfigError

from .config import ExperimentConfig, experiment_config_from
from .run_dir import claim_run_dir, read_run_record, run_fingerprint, run_identity
from .stages import ProgressFn, notify

logger = logging.getLogger(__name__)

QUICKSTART_TIMESTEPS = 60_000
"""Default training budget of :func:`run_quickstart` (env steps; about a minute of PPO on one
core of a laptop)."""


def quickstart_config(timesteps: int = QUICKSTART_TIMESTEPS, *, track: bool = False) -> ExperimentConfig:
    """The quickstart experiment: the packaged BTC/USD 1h sample, default features, costs and
    env, PPO with a small budget (16 envs, rollouts of 2,048 steps), validated 4 times."""
    if timesteps < 2048:
        raise ConfigError(f"quickstart needs at least 2,048 timesteps (one PPO rollout), got {timesteps}")
    return experiment_config_from({
        "name": "quickstart",
        "seed": 0,
        "data": {"source": "sample", "split": {"train": 0.7, "validation": 0.15, "test": 0.15,
                                               "embargo_bars": 24}},
        "train": {
            "algo": "ppo",
            "total_timesteps": int(timesteps),
            "n_envs": 16,
            "ppo": {"n_steps": 128, "batch_size": 512, "n_epochs": 4},
            "eval_every_steps": max(2048, int(timesteps) // 4),
            "early_stopping_patience": None,
            "checkpoint_every_steps": 0,
            "progress_bar": False,
            "torch_threads": 1,
        },
        "tracking": {"mode": "offline" if track else "disabled", "tags": ["quickstart"]},
    }, source="quickstart")


def run_quickstart(
    out_dir: Path,
    timesteps: int = QUICKSTART_TIMESTEPS,
    *,
    track: bool = False,
    progress: ProgressFn | None = None,
    overwrite: bool = False,
) -> Path:
    """``coinrl quickstart``: train, backtest and report on the packaged sample, offline.

    Trains PPO on the train split of the packaged hourly BTC/USD sample (validated on its
    validation split, best model kept), saves the bundle, backtests the deterministic policy on
    the held-out test split beside buy-and-hold, flat, the moving-average crossover and the
    turnover-matched random policy, and writes the report folder.

    Args:
        out_dir: parent folder; the run goes to ``out_dir/quickstart/`` (bundle) and the
            report to ``out_dir/quickstart/report/``.
        timesteps: training budget in env steps (>= 2,048).
        track: also log to W&B in offline mode.
        progress: ``(stage, done, total)`` callback: ``data``, ``train`` (steps done),
            ``backtest``, ``report``.
        overwrite: replace whatever run ``out_dir/quickstart/`` holds. Without it, only the
            same quickstart (same config, budget and data: a seeded, reproducible run) is
            replaced; any other run there is refused, never mixed with this one.

    Returns:
        The report folder (open its ``report.html``).

    Raises:
        ConfigError: ``out_dir/quickstart/`` holds another run and ``overwrite`` is False.
    """
    from coinrl.agents.train import train_model
    from coinrl.pipeline.source import load_dataset

    cfg = quickstart_config(timesteps, track=track)
    run_dir = Path(out_dir) / cfg.name
    notify(progress, "data", 0, 1)
    prepared = load_dataset(cfg.data)
    notify(progress, "data", 1, 1)
    _claim_quickstart_dir(run_dir, run_identity(cfg, prepared), overwrite=overwrite)
    total = cfg.train.total_timesteps
    sink = _progress_sink(progress, total)
    notify(progress, "train", 0, total)
    agent = train_model(
        prepared, cfg.resolved_train, cfg.env, out_dir=run_dir, experiment_config=cfg.to_dict(),
        sink=sink,
    )
    notify(progress, "train", total, total)
    bundle = save_model(agent, run_dir / "bundle")
    agent.info["bundle"] = str(bundle)
    notify(progress, "backtest", 0, 1)
    res = simulate_trading_strategy(agent, prepared.test, split="test", seed=cfg.seed)
    notify(progress, "backtest", 1, 1)
    notify(progress, "report", 0, 1)
    folder = save_backtest_results(
        res, run_dir / "report", tracking=cfg.tracking if track else None, run_name="quickstart"
    )
    notify(progress, "report", 1, 1)
    logger.info("quickstart report=%s", folder / "report.html")
    return folder


def _claim_quickstart_dir(run_dir: Path, identity: dict[str, Any], *, overwrite: bool) -> None:
    """Claim ``run_dir`` for this quickstart: the same quickstart run is replaced (it is seeded,
    so it reproduces itself), another run is refused unless ``overwrite``."""
    occupied = run_dir.is_dir() and any(run_dir.iterdir())
    record = read_run_record(run_dir) if occupied else None
    same = record is not None and record.get("fingerprint") == run_fingerprint(identity)
    if occupied and not (same or overwrite):
        what = f"run {record.get('run_id')}" if record else "files of an earlier run"
        raise ConfigError(
            f"{run_dir} holds {what} that is not this quickstart (another budget, config or "
            "coinrl version); pass --overwrite to replace it, or --out another folder"
        )
    if same:
        logger.info("quickstart: replacing the same quickstart run in %s", run_dir)
    claim_run_dir(run_dir, identity, overwrite=occupied)


def _progress_sink(progress: ProgressFn | None, total: int) -> Any:
    """An SB3 logger whose dumps report ``time/total_timesteps`` to ``progress``."""
    from stable_baselines3.common.logger import KVWriter, Logger

    class _Progress(KVWriter):
        def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
            done = key_values.get("time/total_timesteps", step)
            if progress is not None and isinstance(done, int | float):
                progress("train", int(min(done, total)), total)

        def close(self) -> None:
            return None

    return Logger(folder=None, output_formats=[_Progress()])


__all__ = ["QUICKSTART_TIMESTEPS", "quickstart_config", "run_quickstart"]
