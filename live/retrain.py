"""Scheduled retraining of a live bundle, honestly: :func:`retrain_once`.

One retrain cuts a rolling training window from the candles, retrains the running bundle's
config on it (at low priority, in a child process), writes the challenger bundle atomically
with its lineage, and judges it against the champion on the newest candles neither trained on
(:func:`~coinrl.live.retrain_gate.gate_challenger`). Every step is a ``model`` row of the
journal (payload ``event``: ``retrain_start``, ``retrain_end``, ``retrain_gate``,
``retrain_failed``); the number of ``retrain_start`` rows is the number of challengers tried
in the run, which the deflated Sharpe ratio is deflated by.

Crash safety: the challenger is built in ``out_dir/.staging-<id>`` and renamed to
``out_dir/<id>`` in one ``os.replace`` once complete; a retrain killed at any point leaves at
most a staging folder (removed by the next retrain) and the journal's committed rows. The
champion is never touched here: promotion is the runner's validated hot reload
(:func:`~coinrl.live.reload.update_live_model`) of a bundle that passed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from coinrl.pipeline.errors import CoinrlError, ConfigError, DataError

from .journal import Journal
from .retrain_config import RetrainConfig, RetrainOutcome, RetrainStatus
from .retrain_gate import gate_challenger
from .retrain_train import run_training

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
RETRAIN_EVENTS = ("retrain_start", "retrain_end", "retrain_gate", "retrain_failed")


def bundle_id(path: str | Path) -> str:
    """A bundle's identity: sha256 of its ``manifest.json`` (which holds every file's sha256),
    first 16 hex digits. "" for a zipped or unreadable bundle."""
    try:
        return hashlib.sha256((Path(path) / "manifest.json").read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def retrain_trials(journal: Journal) -> int:
    """Challengers tried in the journal's run so far (``retrain_start`` rows)."""
    return sum(1 for e in journal.events("model") if e.payload.get("event") == "retrain_start")


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> dict[str, list[Any]]:
    """``{dotted.path: [old, new]}`` for every leaf that differs between two nested configs."""
    out: dict[str, list[Any]] = {}
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.update(config_diff(a, b, f"{path}."))
        elif a != b:
            out[path] = [a, b]
    return out


def _candles(source: pd.DataFrame | str | Path | Any) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, str | Path):
        from coinrl.pipeline.store import load_data

        return load_data(source)
    from coinrl.pipeline.source import load_candles

    return load_candles(source)


def _slice(frame: pd.DataFrame, start: int, stop: int) -> pd.DataFrame:
    out = frame.iloc[start:stop].reset_index(drop=True)
    out.attrs = dict(frame.attrs)
    return out


def _journal(journal: Journal, event: str, ts_ms: int, **payload: Any) -> None:
    journal.append("model", ts_ms=ts_ms, payload={"event": event, **payload})


def _clear_staging(out_dir: Path) -> None:
    for stale in out_dir.glob(f"{STAGING_PREFIX}*"):
        logger.warning("retrain: removing %s left by an interrupted retrain", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def retrain_once(
    bundle: str | Path,
    candles: pd.DataFrame | str | Path | Any,
    config: RetrainConfig | Mapping[str, Any] | None,
    out_dir: str | Path,
    journal: Journal,
    *,
    as_of_ts_ms: int | None = None,
) -> RetrainOutcome:
    """Retrain the bundle on a rolling window and gate the challenger against it.

    Args:
        bundle: the champion bundle folder (the one the live session trades).
        candles: cleaned candles of the bundle's market: a frame, a Parquet file from
            :func:`~coinrl.pipeline.store.store_data`/``update_data``, or a ``DataConfig``.
        config: the :class:`RetrainConfig` (or its mapping; None: defaults).
        out_dir: where challenger bundles are written (``out_dir/<run>-c<trial>``).
        journal: the live run's journal (every step is journalled there).
        as_of_ts_ms: only candles opening before this time (UTC epoch ms) exist for this
            retrain; None: all of them.

    Returns:
        The :class:`RetrainOutcome` (``failed`` with reasons when the training did not finish:
        nothing is promoted then, and no bundle is left half-written).

    Raises:
        ConfigError: a portfolio bundle, or an embargo shorter than the gate's context.
        DataError: too few candles for window + embargo + gate.
    """
    from coinrl.agents.bundle import load_model
    from coinrl.pipeline.splits import candles_fingerprint

    cfg = config if isinstance(config, RetrainConfig) else RetrainConfig.model_validate(dict(config or {}))
    t0 = time.monotonic()
    champ_path = Path(bundle)
    champion = load_model(champ_path)
    if champion.is_portfolio:
        raise ConfigError(
            f"{champ_path} is a portfolio bundle; retrain_once handles one-asset bundles so far "
            "(retrain a portfolio with coinrl train on fresh data)"
        )
    frame = _candles(candles)
    if as_of_ts_ms is not None:
        frame = _slice(frame, 0, int((frame["ts_ms"] < int(as_of_ts_ms)).sum()))
    context = champion.feature_spec.warmup_bars + champion.env_config.window
    embargo = context if cfg.embargo_bars is None else cfg.embargo_bars
    if embargo < context:
        raise ConfigError(
            f"retrain.embargo_bars={embargo} lets the gate read training candles: its features "
            f"need {champion.feature_spec.warmup_bars} warm-up bars and the observation window "
            f"{champion.env_config.window}; set embargo_bars >= {context} (or leave it unset)"
        )
    n = len(frame)
    need = cfg.window_bars + embargo + cfg.gate_bars
    if n < need:
        raise DataError(
            f"{n} candles are too few to retrain: window_bars {cfg.window_bars} + embargo "
            f"{embargo} + gate_bars {cfg.gate_bars} = {need}; fetch more history or shrink them"
        )
    gate_start = n - cfg.gate_bars
    train_stop = gate_start - embargo
    window = _slice(frame, train_stop - cfg.window_bars, train_stop)
    gate = _slice(frame, gate_start - context, n)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear_staging(out)
    trial = retrain_trials(journal) + 1
    now_ms = int(as_of_ts_ms) if as_of_ts_ms is not None else int(frame["ts_ms"].iloc[-1])
    name = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', journal.run_id)}-c{trial:04d}"
    seed = int(cfg.seed if cfg.seed is not None else int(champion.train_config.seed or 0) + trial)
    steps = int(cfg.total_timesteps or champion.train_config.total_timesteps)
    new_train = champion.train_config.model_dump(mode="json") | {"seed": seed, "total_timesteps": steps}
    lineage = {
        "parent_bundle_id": bundle_id(champ_path),
        "parent_bundle": str(champ_path),
        "trial": trial,
        "init": cfg.init,
        "data": {
            "start_ts_ms": int(window["ts_ms"].iloc[0]),
            "end_ts_ms": int(window["ts_ms"].iloc[-1]),
            "rows": len(window),
            "data_fingerprint": candles_fingerprint(window),
            "symbol": str(frame.attrs.get("symbol", "")),
            "timeframe": str(frame.attrs.get("timeframe", "")),
        },
        "gate": {"start_ts_ms": int(frame["ts_ms"].iloc[gate_start]), "end_ts_ms": int(frame["ts_ms"].iloc[-1]),
                 "rows": cfg.gate_bars, "embargo_bars": embargo},
        "config_diff": config_diff({"train": champion.train_config.model_dump(mode="json")},
                                   {"train": new_train}),
    }
    final = out / name
    if final.exists():
        raise ConfigError(f"{final} already exists: another run wrote challengers there; use "
                          "another out_dir or this run's own journal")
    _journal(journal, "retrain_start", now_ms, challenger=name, lineage=lineage,
             config=cfg.model_dump(mode="json"))
    staging = out / f"{STAGING_PREFIX}{name}"
    try:
        from coinrl.pipeline.store import store_data

        store_data(window, staging / "train_candles.parquet")
        job = {"bundle": str(champ_path), "candles": str(staging / "train_candles.parquet"),
               "staging": str(staging), "seed": seed, "total_timesteps": steps,
               "validation": cfg.validation, "init": cfg.init, "lineage": lineage, "nice": cfg.nice}
        built = run_training(job, subprocess=cfg.subprocess, time_limit_s=cfg.time_limit_s)
        os.replace(built, final)
        _fsync_dir(out)
    except CoinrlError as e:
        shutil.rmtree(staging, ignore_errors=True)
        wall = time.monotonic() - t0
        _journal(journal, "retrain_failed", now_ms, challenger=name, reason=str(e), wall_s=wall)
        logger.error("retrain %s failed: %s", name, e)
        return RetrainOutcome("failed", trial, None, champ_path, reasons=[str(e)], lineage=lineage, wall_s=wall)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        challenger = load_model(final)
        _journal(journal, "retrain_end", now_ms, challenger=name, path=str(final), bundle_id=bundle_id(final),
                 weights_sha256=challenger.info.get("weights_sha256"), wall_s=time.monotonic() - t0)
        passed, figures, reasons = gate_challenger(challenger, champion, gate, cfg, n_trials=trial, seed=seed)
    except CoinrlError as e:  # the challenger stays on disk, unjudged: never promoted
        wall = time.monotonic() - t0
        _journal(journal, "retrain_failed", now_ms, challenger=name, reason=f"gate: {e}", wall_s=wall)
        logger.error("retrain %s: the gate could not judge it: %s", name, e)
        return RetrainOutcome("failed", trial, final, champ_path, reasons=[f"gate: {e}"], lineage=lineage,
                              wall_s=wall)
    status: RetrainStatus = "promoted" if passed else "rejected"
    wall = time.monotonic() - t0
    _journal(journal, "retrain_gate", now_ms, challenger=name, verdict=status, figures=figures,
             reasons=reasons, champion=str(champ_path), wall_s=wall)
    return RetrainOutcome(status, trial, final, champ_path, figures, reasons, lineage, wall)


__all__ = ["RETRAIN_EVENTS", "bundle_id", "config_diff", "retrain_once", "retrain_trials"]
