"""``coinrl tune`` / ``coinrl tune-best``: the study folder, resume, the best bundle, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from coinrl.experiments.cli import app
from coinrl.experiments.config import load_experiment_config
from coinrl.experiments.tune_cmd import (
    SHARPE_NOTE,
    SUMMARY_FILE,
    probability_text,
    run_tune,
    run_tune_best,
    study_location,
)
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.store import store_data
from coinrl.pipeline.synthetic import planted_pattern

runner = CliRunner()


def write_config(tmp_path: Path, **tune: Any) -> Path:
    """A tiny tune experiment over a stored synthetic candle file; returns the YAML path."""
    candles = planted_pattern(1200, seed=4)[["ts_ms", "open", "high", "low", "close", "volume"]]
    data_file = store_data(candles, tmp_path / "candles.parquet", symbol="SYN/USD", timeframe="1h")
    t: dict[str, Any] = {
        "n_trials": 2,
        "pruner": "none",
        "space": {
            "train.ppo.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
            "env.window": {"type": "int", "low": 4, "high": 12, "step": 4},
        },
    }
    t.update(tune)
    data = {
        "name": "cli_tune",
        "seed": 0,
        "data": {
            "source": str(data_file),
            "features": {"features": [{"kind": "returns", "horizons": [1, 4]}, {"kind": "rsi", "window": 14}]},
            "split": {"train": 0.6, "validation": 0.2, "test": 0.2, "embargo_bars": 0},
        },
        "env": {"window": 8, "episode_length_bars": 128},
        "train": {
            "total_timesteps": 512,
            "n_envs": 4,
            "ppo": {"n_steps": 64, "batch_size": 128, "n_epochs": 1},
            "eval_every_steps": 256,
            "checkpoint_every_steps": 0,
            "early_stopping_patience": None,
            "torch_threads": 1,
            "progress_bar": False,
        },
        "tracking": {"mode": "disabled"},
        "tune": t,
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_help_lists_the_tune_options() -> None:
    result = runner.invoke(app, ["tune", "--help"])
    assert result.exit_code == 0
    for opt in ("--storage", "--n-jobs", "--n-trials", "--study-name", "--no-best"):
        assert opt in result.output
    assert runner.invoke(app, ["tune-best", "--help"]).exit_code == 0


def test_the_deflated_sharpe_is_printed_as_a_probability_in_words() -> None:
    assert probability_text(0.0312) == "3.1% (below 95%: not evidence of skill)"
    assert probability_text(0.97) == "97.0% (evidence of skill)"
    assert probability_text(None) == "- (not computed)"
    assert probability_text(float("nan")) == "- (not computed)"
    assert "12 trials of a skill-less strategy" in SHARPE_NOTE.format(n=12)


def test_study_location_defaults_to_a_sqlite_file_in_the_study_folder(tmp_path: Path) -> None:
    cfg = load_experiment_config(write_config(tmp_path))
    url, name, folder = study_location(cfg, None, None, tmp_path / "runs")
    assert name == "cli_tune"
    assert folder == tmp_path / "runs" / "cli_tune"
    assert url == f"sqlite:///{(folder / 'cli_tune.db').resolve()}"
    url2, name2, folder2 = study_location(cfg, "postgresql://u:p@h/db", "other", tmp_path)
    assert (url2, name2, folder2) == ("postgresql://u:p@h/db", "other", tmp_path / "other")


@pytest.mark.slow
def test_tune_command_runs_resumes_and_bundles_the_best_trial(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    out = tmp_path / "runs"
    result = runner.invoke(app, ["tune", str(config), "--n-trials", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    folder = out / "cli_tune"
    assert (folder / "cli_tune.db").is_file()
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    assert summary["n_trials"] == 2
    assert summary["states"] == {"COMPLETE": 2}
    best = json.loads((folder / "tune_result.json").read_text())
    assert best["trial_number"] == summary["best_number"]
    assert best["test"]["sharpe_stats"]["n_trials"] == 2.0
    assert (folder / "best" / "bundle").exists()
    assert "deflated Sharpe" in result.output
    assert "that it beats the best Sharpe that 2 trials of a skill-less strategy" in result.output
    assert "optuna-dashboard" in result.output
    # progress: one line per finished trial, with the budget, best so far and pruned count
    assert "trials 0/2 · no complete trial yet · pruned 0" in result.output
    assert "trials 1/2 · best " in result.output
    assert "trials 2/2 · best " in result.output
    assert "Using an existing study" not in result.output
    assert "/best/bundle (trained now)" in result.output

    # tune-best after tune: the bundle tune made for the best trial is reused, not retrained
    manifest = (folder / "best" / "bundle" / "manifest.json").read_bytes()
    reused = run_tune_best(config, out_dir=out)
    assert reused.best is not None
    assert reused.best.reused_bundle
    assert reused.best.reused_test
    assert (folder / "best" / "bundle" / "manifest.json").read_bytes() == manifest
    shown = runner.invoke(app, ["tune-best", str(config), "--out", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "/best/bundle (reused: made earlier for this trial)" in shown.output

    # rerun with a larger budget: the same study continues (trials 0 and 1 kept)
    again = run_tune(config, n_trials=3, out_dir=out, best=False)
    assert again.summary.n_trials == 3
    assert again.best is None
    assert json.loads((folder / SUMMARY_FILE).read_text())["n_trials"] == 3


@pytest.mark.slow
def test_tune_best_after_workers_tests_once_and_then_reuses(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    out = tmp_path / "runs"
    first = run_tune(config, out_dir=out, best=False)
    assert first.best is None
    a = run_tune_best(config, out_dir=out)
    assert a.best is not None
    assert a.best.test is not None
    assert not a.best.reused_test
    b = run_tune_best(config, out_dir=out)
    assert b.best is not None
    assert b.best.reused_test  # no second look at the test split
    assert b.best.test == a.best.test


def test_invalid_search_space_fails_before_any_trial_with_the_field_path(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["tune"]["space"]["env.window"] = {"type": "int", "low": 12, "high": 4}
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = runner.invoke(app, ["tune", str(config), "--out", str(tmp_path / "runs")])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "tune.space.env.window" in str(result.exception)
    assert not (tmp_path / "runs" / "cli_tune").exists()


def test_a_config_without_tune_section_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    del data["tune"]
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="no tune: section"):
        run_tune(config, out_dir=tmp_path / "runs")


def test_overrides_reach_the_tune_section(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with pytest.raises(ConfigError, match="tune.space"):
        run_tune(
            config,
            ["tune.space.env.window.low=0"],
            out_dir=tmp_path / "runs",
        )


@pytest.mark.slow
def test_packaged_tune_config_runs_one_trial_on_the_btc_sample_with_walk_forward_folds(
    tmp_path: Path,
) -> None:
    """The shipped YAML, unchanged but for its budget: one trial over two walk-forward folds of
    the packaged BTC/USD sample completes (its space, features and rewards all work)."""
    config = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "tune_ppo_btc_1h.yaml"
    run = run_tune(
        config,
        [
            "tune.n_trials=1",
            "tune.folds=2",
            "train.total_timesteps=2048",
            "train.eval_every_steps=0",
            "tracking.mode=disabled",
        ],
        out_dir=tmp_path / "runs",
        best=False,
    )
    assert run.summary.states == {"COMPLETE": 1}, run.summary.failed_errors
    assert run.study_dir == tmp_path / "runs" / "ppo_btc_1h_tune"
    assert run.summary.best_value is not None


@pytest.mark.slow
def test_tune_command_tunes_a_portfolio_config_and_bundles_its_best_trial(
    tmp_path: Path, shared_data: Path
) -> None:
    cfg = {
        "name": "cli_portfolio_tune",
        "seed": 0,
        "data": {
            "sources": [str(shared_data / f"{s}_BTC-5m.feather") for s in ("ADA", "ETH")],
            "features": {"features": [{"kind": "returns", "horizons": [1, 6]}]},
            "split": {"train": 0.6, "validation": 0.2, "test": 0.2, "embargo_bars": 8},
        },
        "env": {"window": 6, "episode_length_bars": 128},
        "train": {"total_timesteps": 512, "n_envs": 4, "ppo": {"n_steps": 64, "batch_size": 128, "n_epochs": 1},
                  "eval_every_steps": 256, "checkpoint_every_steps": 0, "early_stopping_patience": None,
                  "torch_threads": 1, "progress_bar": False},
        "tracking": {"mode": "disabled"},
        "tune": {"n_trials": 2, "pruner": "none", "space": {
            "train.ppo.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True}}},
    }
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = tmp_path / "runs"
    result = runner.invoke(app, ["tune", str(config), "--n-trials", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    folder = out / "cli_portfolio_tune"
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    assert summary["states"] == {"COMPLETE": 2}
    best = json.loads((folder / "tune_result.json").read_text())
    assert best["trial_number"] == summary["best_number"]
    assert best["test"]["split"] == "test"
    assert best["test"]["symbols"] == ["ADA/BTC", "ETH/BTC"]
    assert "crp_daily" in best["test"]["baselines"]  # the portfolio baselines on the same rows
    assert best["test"]["sharpe_stats"]["n_trials"] == 2.0
    assert (folder / "best" / "bundle").exists()
    assert "/best/bundle (trained now)" in result.output
