"""Training a challenger: the part of a retrain that runs at low priority, in a child process.

:func:`train_challenger` reads a job (plain JSON: the champion bundle, the training window's
candles as a Parquet file, the seed, the budget, the lineage), retrains the champion's config on
those candles (fresh weights, or warm-started from the champion's), and writes the challenger
bundle into the job's staging folder. :func:`run_training` runs it in a spawned child process
(``os.nice``, killable, time-limited) or in this one. Nothing here touches the live bundle or
the journal: the caller renames the finished bundle into place (one atomic rename), so a killed
training leaves a staging folder at most, never a half-written bundle.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
import traceback
from pathlib import Path
from typing import Any

from coinrl.pipeline.errors import CoinrlError, ConfigError, DataError

logger = logging.getLogger(__name__)

JOB_FILE = "job.json"
ERROR_FILE = "error.txt"
BUNDLE_DIR = "bundle"


def _warm_agent(champion: Any, prepared: Any, train_cfg: Any, env_cfg: Any) -> Any:
    """The champion's model trained further on ``prepared.train`` (same algorithm, same
    hyper-parameters, its own optimiser state), as a TrainedAgent with the new data's spec,
    normaliser and provenance."""
    from coinrl.agents.agent import TrainedAgent
    from coinrl.agents.train import torch_settings, train_target, weights_hash

    target = train_target(prepared, env_cfg)
    with torch_settings(train_cfg.torch_threads, train_cfg.deterministic_torch):
        model = champion.model
        model.set_env(target.make_venv(train_cfg.n_envs))
        model.set_random_seed(int(train_cfg.seed or 0))
        model.learn(total_timesteps=train_cfg.total_timesteps, reset_num_timesteps=False)
    return TrainedAgent(
        model=model, env_config=target.env, train_config=train_cfg,
        experiment_config=dict(champion.experiment_config),
        info={"num_timesteps": int(model.num_timesteps), "warm_started": True,
              "weights_sha256": weights_hash(model)},
        **target.agent_fields,
    )


def train_challenger(job: dict[str, Any]) -> Path:
    """Train one challenger as ``job`` says and save it under ``job["staging"]/bundle``.

    Args:
        job: ``bundle`` (champion path), ``candles`` (Parquet file of the training window),
            ``staging`` (folder), ``seed``, ``total_timesteps``, ``validation`` (share of the
            window), ``init`` (``fresh``/``warm``), ``lineage`` (dict, stored in the bundle's
            ``training.json`` info and its manifest), ``nice``.

    Returns:
        The challenger bundle folder.
    """
    from coinrl.agents.bundle import MANIFEST, load_model, save_model
    from coinrl.agents.train import train_model
    from coinrl.pipeline.splits import NormConfig, SplitConfig, prepare_data_for_model
    from coinrl.pipeline.store import atomic_write_bytes, load_data

    champion = load_model(job["bundle"])
    if champion.is_portfolio:
        raise ConfigError("retraining a portfolio bundle is not supported yet; retrain it with coinrl train")
    candles = load_data(job["candles"])
    val = float(job["validation"])
    info = champion.data_info
    embargo = int((info.get("split") or {}).get("embargo_bars", 0))
    split = SplitConfig(train=1.0 - val, validation=val, test=0.0, embargo_bars=embargo if val > 0 else 0)
    norm = NormConfig.model_validate(info["norm"]) if info.get("norm") else None
    prepared = prepare_data_for_model(candles, spec=champion.feature_spec, split=split, norm=norm)
    train_cfg = champion.train_config.model_copy(
        update={"seed": int(job["seed"]), "total_timesteps": int(job["total_timesteps"]),
                "progress_bar": False}
    )
    exp = dict(champion.experiment_config)
    exp["train"] = train_cfg.model_dump(mode="json")
    exp["seed"] = int(job["seed"])
    if job["init"] == "warm":
        agent = _warm_agent(champion, prepared, train_cfg, champion.env_config)
    else:
        agent = train_model(prepared, train_cfg, champion.env_config, experiment_config=exp)
    agent.experiment_config = exp
    agent.info["lineage"] = job["lineage"]
    dest = save_model(agent, Path(job["staging"]) / BUNDLE_DIR)
    manifest = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
    manifest["lineage"] = job["lineage"]
    atomic_write_bytes(
        dest / MANIFEST,
        lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8"),
    )
    return dest


def _child_main(job_path: str) -> None:
    """Entry point of the training process: lower priority, train, report errors in a file."""
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    try:
        os.nice(int(job.get("nice", 0)))
    except OSError:  # pragma: no cover - a platform without nice
        pass
    try:
        train_challenger(job)
    except BaseException as e:
        (Path(job["staging"]) / ERROR_FILE).write_text(
            f"{type(e).__name__}: {e}\n{traceback.format_exc()}", encoding="utf-8"
        )
        raise SystemExit(1) from e


def run_training(job: dict[str, Any], *, subprocess: bool, time_limit_s: float | None) -> Path:
    """Train ``job``'s challenger in a spawned low-priority child process (or here).

    Returns:
        The challenger bundle folder inside the job's staging folder.

    Raises:
        DataError: the training failed (its error is in the message) or ran past
            ``time_limit_s`` (the child is killed).
    """
    staging = Path(job["staging"])
    staging.mkdir(parents=True, exist_ok=True)
    if not subprocess:
        try:
            return train_challenger(job)
        except CoinrlError:
            raise
        except (ValueError, RuntimeError, OSError) as e:
            raise DataError(f"retrain failed: {type(e).__name__}: {e}") from e
    job_path = staging / JOB_FILE
    job_path.write_text(json.dumps(job), encoding="utf-8")
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_child_main, args=(str(job_path),), name="coinrl-retrain", daemon=True)
    t0 = time.monotonic()
    proc.start()
    logger.info("retrain: training in pid=%s nice=+%s", proc.pid, job.get("nice", 0))
    proc.join(time_limit_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
        raise DataError(
            f"retrain ran past its time limit ({time_limit_s:g} s) and was stopped; raise "
            "retrain.time_limit_s or lower retrain.total_timesteps"
        )
    if proc.exitcode != 0:
        err = staging / ERROR_FILE
        detail = err.read_text(encoding="utf-8").splitlines()[0] if err.is_file() else f"exit code {proc.exitcode}"
        raise DataError(f"retrain failed in the training process: {detail}")
    logger.info("retrain: training done in %.1f s", time.monotonic() - t0)
    return staging / BUNDLE_DIR


__all__ = ["run_training", "train_challenger"]
