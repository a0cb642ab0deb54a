"""Tuning a portfolio: folds on the common clock before the test split, test candles never read."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from coinrl.agents.tune import load_study, optimize_parameters
from coinrl.agents.tune.portfolio_data import (
    load_stacked_candles,
    portfolio_tuning_folds,
    stack_candles,
    unstack_candles,
)
from coinrl.experiments.config import experiment_config_from

SPACE: dict[str, Any] = {
    "train.ppo.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "env.window": {"type": "int", "low": 4, "high": 8, "step": 4},
}


def portfolio_tune_dict(shared_data: Path, **tune: Any) -> dict[str, Any]:
    """Two real 5-minute coins, a tiny PPO budget (512 steps per fold) and a tune: section."""
    t: dict[str, Any] = {"n_trials": 2, "pruner": "none", "space": copy.deepcopy(SPACE)}
    t.update(tune)
    return {
        "name": "tiny_portfolio_tune",
        "seed": 0,
        "data": {
            "sources": [str(shared_data / f"{s}_BTC-5m.feather") for s in ("ADA", "ETH")],
            "features": {"features": [{"kind": "returns", "horizons": [1, 6]}]},
            "split": {"train": 0.6, "validation": 0.2, "test": 0.2, "embargo_bars": 8},
            "market_features": True,
        },
        "env": {"window": 6, "episode_length_bars": 128},
        "train": {"total_timesteps": 512, "n_envs": 4, "ppo": {"n_steps": 64, "batch_size": 128, "n_epochs": 1},
                  "eval_every_steps": 256, "checkpoint_every_steps": 0, "early_stopping_patience": None,
                  "torch_threads": 1, "progress_bar": False},
        "tracking": {"mode": "disabled"},
        "tune": t,
    }


def _poison_after(stacked: pd.DataFrame, cut_ts: int) -> pd.DataFrame:
    frames = []
    for f in unstack_candles(stacked):
        bad = f.copy()
        bad.attrs = dict(f.attrs)
        rows = bad.index[bad["ts_ms"] >= cut_ts]
        for col in ("open", "high", "low", "close"):
            bad.loc[rows, col] = np.nan
        bad.loc[rows[::2], "close"] = 1e12  # absurd prices where not NaN
        bad.loc[rows, "volume"] = -1.0
        frames.append(bad)
    return stack_candles(frames)


@pytest.fixture(scope="module")
def stacked(shared_data: Path) -> pd.DataFrame:
    cfg = experiment_config_from(portfolio_tune_dict(shared_data), source="test")
    return load_stacked_candles(cfg.data)


def _cut_ts(stacked: pd.DataFrame, cfg: Any) -> int:
    """The test split's first clock timestamp, as the tuner places it (from a fold's end)."""
    folds, _ = portfolio_tuning_folds(stacked, cfg.data, 1)
    last = int(folds[0].full.ts_ms[-1])
    ts = np.unique(stacked["ts_ms"].to_numpy(dtype=np.int64))
    return int(ts[ts > last][0])


def test_stacked_candles_round_trip_with_each_assets_attrs(stacked: pd.DataFrame) -> None:
    frames = unstack_candles(stacked)
    assert [f.attrs["symbol"] for f in frames] == ["ADA/BTC", "ETH/BTC"]
    assert "asset" not in frames[0].columns
    again = unstack_candles(stack_candles(frames))
    pd.testing.assert_frame_equal(again[1], frames[1])


@pytest.mark.parametrize("n_folds", [1, 2])
def test_portfolio_folds_are_unchanged_when_the_test_candles_are_poisoned(
    shared_data: Path, stacked: pd.DataFrame, n_folds: int
) -> None:
    cfg = experiment_config_from(portfolio_tune_dict(shared_data), source="test")
    cut = _cut_ts(stacked, cfg)
    poisoned = _poison_after(stacked, cut)
    clean, dev_rows = portfolio_tuning_folds(stacked, cfg.data, n_folds)
    bad, bad_rows = portfolio_tuning_folds(poisoned, cfg.data, n_folds)
    assert dev_rows == bad_rows
    assert len(clean) == n_folds
    for a, b in zip(clean, bad, strict=True):
        np.testing.assert_array_equal(a.train.features, b.train.features)
        np.testing.assert_array_equal(a.validation.features, b.validation.features)
        np.testing.assert_array_equal(a.validation.close, b.validation.close)
        np.testing.assert_array_equal(a.validation.market_features, b.validation.market_features)
        assert len(a.test) == 0
        assert int(a.full.ts_ms[-1]) < cut


def test_the_portfolio_split_boundary_is_tight(shared_data: Path, stacked: pd.DataFrame) -> None:
    """The poisoning test could pass vacuously if the tuner stopped reading early: a change in
    the last pre-test candle must reach the last validation row."""
    cfg = experiment_config_from(portfolio_tune_dict(shared_data), source="test")
    cut = _cut_ts(stacked, cfg)
    clean, _ = portfolio_tuning_folds(stacked, cfg.data, 1)
    frames = unstack_candles(stacked)
    last = frames[0].index[frames[0]["ts_ms"] < cut][-1]
    frames[0].loc[last, ["close", "high"]] *= 1.5
    touched, _ = portfolio_tuning_folds(stack_candles(frames), cfg.data, 1)
    assert touched[0].validation.close[-1, 0] != clean[0].validation.close[-1, 0]


@pytest.mark.slow
def test_portfolio_trial_values_are_unchanged_when_the_test_candles_are_poisoned(
    tmp_path: Path, shared_data: Path, stacked: pd.DataFrame
) -> None:
    cfg = experiment_config_from(portfolio_tune_dict(shared_data, folds=2), source="test")
    poisoned = _poison_after(stacked, _cut_ts(stacked, cfg))

    def run(frame: pd.DataFrame, name: str) -> list[tuple[Any, ...]]:
        url = f"sqlite:///{tmp_path / name}.db"
        summary = optimize_parameters(cfg, frame, storage=url, n_trials=2)
        assert summary.states == {"COMPLETE": 2}
        assert cfg.tune is not None
        trials = load_study(url, "tiny_portfolio_tune", cfg.tune).trials
        return [(t.params, t.value, t.intermediate_values) for t in trials]

    clean = run(stacked, "clean")
    assert all(np.isfinite(v) for _, v, _ in clean)
    assert clean == run(poisoned, "poisoned")


def test_a_portfolio_worker_job_round_trips_its_stacked_candles(
    tmp_path: Path, shared_data: Path, stacked: pd.DataFrame
) -> None:
    """Worker processes read the stacked candles from Parquet: every asset and its attrs return."""
    from coinrl.agents.tune.portfolio_data import is_stacked
    from coinrl.agents.tune.workers import WorkerJob, read_job, write_job
    from coinrl.experiments.config import PortfolioExperimentConfig

    cfg = experiment_config_from(portfolio_tune_dict(shared_data), source="test")
    back = read_job(write_job(WorkerJob(cfg, stacked, "sqlite:///x.db", "s", 2, None, 20), tmp_path))
    assert type(back.config) is PortfolioExperimentConfig
    assert is_stacked(back.candles)
    for a, b in zip(unstack_candles(back.candles), unstack_candles(stacked), strict=True):
        pd.testing.assert_frame_equal(a, b)
        assert a.attrs["symbol"] == b.attrs["symbol"]
