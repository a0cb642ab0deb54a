"""Tuning: search-space validation, seeded proposals, validation-only objective, failures,
pruning, SQLite resume and the best trial's single test evaluation."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from coinrl.agents.tune import (
    TuneProgress,
    check_config,
    load_study,
    make_pruner,
    make_storage,
    open_study,
    optimize_parameters,
    params_from_trial,
    redact_url,
    summarize_study,
    train_best,
    trial_config,
    tuning_folds,
)
from coinrl.agents.tune.workers import WorkerJob, read_job, write_job
from coinrl.agents.tune_space import suggest_params
from coinrl.experiments.config import (
    ExperimentConfig,
    experiment_config_from,
    load_experiment_config,
)
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.splits import split_bounds
from coinrl.pipeline.synthetic import planted_pattern

REPO = Path(__file__).resolve().parents[2]

SPACE: dict[str, Any] = {
    "train.ppo.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "env.window": {"type": "int", "low": 4, "high": 12, "step": 4},
    "env.reward": {"type": "categorical", "choices": ["log_return", "drawdown_penalised"]},
}


def tune_dict(**tune: Any) -> dict[str, Any]:
    """A tiny experiment (1,024 PPO steps per fold, validations every 256 steps) with a tune:
    section; keyword arguments override ``tune`` keys."""
    t: dict[str, Any] = {"n_trials": 2, "pruner": "none", "space": copy.deepcopy(SPACE)}
    t.update(tune)
    return {
        "name": "tiny_tune",
        "seed": 0,
        "data": {
            "features": {
                "features": [{"kind": "column", "name": "signal"}, {"kind": "returns", "horizons": [1, 4]}]
            },
            "split": {"train": 0.6, "validation": 0.2, "test": 0.2, "embargo_bars": 0},
        },
        "env": {"window": 8, "episode_length_bars": 128},
        "train": {
            "total_timesteps": 1024,
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


def tune_config(**tune: Any) -> ExperimentConfig:
    return experiment_config_from(tune_dict(**tune), source="test")


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return planted_pattern(1200, seed=3)


def test_base_config_no_tune_section_still_dumps_without_it() -> None:
    cfg = experiment_config_from({"name": "plain"})
    assert cfg.tune is None
    assert "tune" not in cfg.to_dict()
    assert "tune" in tune_config().to_dict()


# --------------------------------------------------------------------------- validation at load


@pytest.mark.parametrize(
    ("path", "param", "needle"),
    [
        ("train.ppo.learning_rate", {"type": "float", "low": 0.01, "high": 0.001}, "greater than high"),
        ("train.ppo.no_such_thing", {"type": "float", "low": 0.1, "high": 0.2}, "unknown parameter"),
        ("env.windw", {"type": "int", "low": 4, "high": 8}, "unknown parameter"),
        ("env.window", {"type": "float", "low": 4.0, "high": 8.0}, "wrong type"),
        ("env.window", {"type": "int", "low": 0, "high": 8}, "low=0"),
        ("env.reward", {"type": "categorical", "choices": ["log_return", "no_such_reward"]}, "no_such_reward"),
        ("env.window", {"type": "int", "low": "four", "high": 8}, "low"),
        ("data.split.train", {"type": "float", "low": 0.5, "high": 0.7}, "cannot be tuned"),
    ],
)
def test_invalid_search_space_fails_at_load_with_the_field_path(
    tmp_path: Path, path: str, param: dict[str, Any], needle: str
) -> None:
    data = tune_dict()
    data["tune"]["space"] = {path: param}
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_experiment_config(file)
    msg = str(e.value)
    assert f"tune.space.{path}" in msg
    assert needle in msg


def test_packaged_tune_config_loads_and_every_categorical_choice_is_a_valid_trial() -> None:
    cfg = load_experiment_config(REPO / "experiments" / "configs" / "tune_ppo_btc_1h.yaml")
    assert cfg.tune is not None
    assert "train.ppo.learning_rate" in cfg.tune.space
    assert {"env.window", "env.reward", "data.features"} <= set(cfg.tune.space)
    # the space's ends make valid trial configs (no batch larger than the rollout, ...)
    for pick in (0, -1):
        params: dict[str, Any] = {}
        for path, p in cfg.tune.space.items():
            if p.type == "categorical":
                params[path] = p.values()[pick]
            else:
                params[path] = p.low if pick == 0 else p.high
        trial_config(cfg, params)


def test_invalid_combination_inside_a_trial_is_a_config_error() -> None:
    cfg = tune_config()
    with pytest.raises(ConfigError, match="batch_size"):
        trial_config(cfg, {"train.ppo.batch_size": 100_000})


# --------------------------------------------------------------------------- seeded proposals


def _proposals(seed: int, n: int = 12) -> list[dict[str, Any]]:
    cfg = tune_config(seed=seed, startup_trials=3)
    assert cfg.tune is not None
    space = cfg.tune.space
    study = open_study(cfg, make_storage(None, cfg.tune), "seeded")

    def objective(trial: optuna.Trial) -> float:
        p = suggest_params(trial, space)
        # a deterministic score so TPE's model (after the startup trials) is exercised too
        return -abs(math.log10(p["train.ppo.learning_rate"]) + 3) - p["env.window"] / 100

    study.optimize(objective, n_trials=n)
    return [t.params for t in study.trials]


def test_same_seed_in_memory_studies_propose_identical_trials() -> None:
    a, b = _proposals(seed=11), _proposals(seed=11)
    assert a == b
    assert len({repr(sorted(p.items())) for p in a}) > 1  # it did explore
    assert _proposals(seed=12) != a


@pytest.mark.slow
def test_same_seed_tuning_runs_give_identical_trials_and_values(candles: pd.DataFrame) -> None:
    cfg = tune_config(seed=5)
    s1 = optimize_parameters(cfg, candles, n_trials=2)
    s2 = optimize_parameters(cfg, candles, n_trials=2)
    assert s1.best_params == s2.best_params
    assert s1.best_value == s2.best_value


# --------------------------------------------------------------------------- never the test split


def _test_start_candle(cfg: ExperimentConfig, n_candles: int) -> int:
    """Index of the first candle of the test split (features have a warm-up)."""
    warm = cfg.data.features.warmup_bars
    return warm + split_bounds(n_candles - warm, cfg.data.split).validation.stop


def _poison_test_rows(candles: pd.DataFrame, start: int) -> pd.DataFrame:
    bad = candles.copy()
    rows = bad.index[start:]
    for col in ("open", "high", "low", "close"):
        bad.loc[rows, col] = np.nan
    bad.loc[rows[::2], "close"] = 1e12  # absurd prices where not NaN
    bad.loc[rows, "volume"] = -1.0
    bad.loc[rows, "signal"] = np.inf
    return bad


@pytest.mark.slow
@pytest.mark.parametrize("folds", [1, 2])
def test_objective_is_unchanged_when_the_test_split_is_poisoned(
    tmp_path: Path, candles: pd.DataFrame, folds: int
) -> None:
    cfg = tune_config(folds=folds, n_trials=2)
    start = _test_start_candle(cfg, len(candles))
    assert 0 < start < len(candles) - 100
    poisoned = _poison_test_rows(candles, start)

    def run(frame: pd.DataFrame, name: str) -> list[tuple[Any, ...]]:
        url = f"sqlite:///{tmp_path / name}.db"
        summary = optimize_parameters(cfg, frame, storage=url, n_trials=2)
        assert summary.states == {"COMPLETE": 2}
        assert cfg.tune is not None
        trials = load_study(url, "tiny_tune", cfg.tune).trials
        return [(t.params, t.value, t.intermediate_values) for t in trials]

    clean_folds = tuning_folds(candles, cfg.data, folds)
    bad_folds = tuning_folds(poisoned, cfg.data, folds)
    for a, b in zip(clean_folds.folds, bad_folds.folds, strict=True):
        np.testing.assert_array_equal(a.train.features, b.train.features)
        np.testing.assert_array_equal(a.validation.features, b.validation.features)
        np.testing.assert_array_equal(a.validation.close, b.validation.close)
        assert len(a.test) == 0
    assert run(candles, "clean") == run(poisoned, "poisoned")


def test_the_split_boundary_is_tight_a_change_just_before_test_changes_the_data(
    candles: pd.DataFrame,
) -> None:
    """The poisoning test above could pass vacuously if the tuner stopped reading early: a
    change in the last pre-test candle must reach the validation data."""
    cfg = tune_config()
    start = _test_start_candle(cfg, len(candles))
    touched = candles.copy()
    touched.loc[touched.index[start - 1], ["close", "high"]] *= 1.5
    a = tuning_folds(candles, cfg.data, 1).folds[0]
    b = tuning_folds(touched, cfg.data, 1).folds[0]
    assert a.validation.close[-1] != b.validation.close[-1]


# --------------------------------------------------------------------------- failures, pruning


@pytest.mark.slow
def test_failed_trial_is_recorded_with_its_error_and_the_study_goes_on(
    tmp_path: Path, candles: pd.DataFrame
) -> None:
    data = tune_dict(n_trials=3, sampler="random", seed=2)  # seed 2: later trials feasible
    data["tune"]["space"]["train.ppo.batch_size"] = {"type": "categorical", "choices": [128, 100000]}
    cfg = experiment_config_from(data)
    assert cfg.tune is not None
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(cfg, make_storage(url, cfg.tune), "fails")
    study.enqueue_trial({"train.ppo.batch_size": 100000})  # infeasible: batch > rollout of 256
    summary = optimize_parameters(cfg, candles, storage=url, study_name="fails")
    assert summary.n_trials == 3  # the failure did not stop the study
    assert 0 in summary.failed_errors
    assert "ConfigError" in summary.failed_errors[0]
    assert "batch_size" in summary.failed_errors[0]
    trials = load_study(url, "fails", cfg.tune).trials
    for t in trials:
        infeasible = t.params["train.ppo.batch_size"] == 100000
        assert t.state.name == ("FAIL" if infeasible else "COMPLETE")
    assert summary.states.get("COMPLETE", 0) >= 1


@pytest.mark.slow
def test_pruning_stops_trials_early_and_counts_the_compute_saved(candles: pd.DataFrame) -> None:
    cfg = tune_config(n_trials=3)
    seen: list[TuneProgress] = []
    # a pruner that prunes at the first report: every trial stops after its first validation
    summary = optimize_parameters(
        cfg,
        candles,
        n_trials=3,
        pruner=optuna.pruners.ThresholdPruner(lower=1e9),
        progress=seen.append,
    )
    assert summary.states == {"PRUNED": 3}
    # the progress line: one report at the start, one after each trial, pruned ones counted
    assert [(p.done, p.budget, p.pruned) for p in seen] == [(0, 3, 0), (1, 3, 1), (2, 3, 2), (3, 3, 3)]
    assert seen[-1].best_value is None
    assert "trials 3/3" in seen[-1].line()
    assert "pruned 3" in seen[-1].line()
    assert summary.pruned_fraction == 1.0
    budget = 3 * 1024
    assert 0 < summary.env_steps_used < budget
    assert summary.compute_saved_fraction == pytest.approx(1 - summary.env_steps_used / budget)


@pytest.mark.slow
def test_median_pruner_from_the_config_prunes_a_trial_below_the_median(
    tmp_path: Path, candles: pd.DataFrame
) -> None:
    cfg = tune_config(n_trials=2, pruner="median", pruner_startup_trials=1, pruner_warmup_evals=0)
    assert cfg.tune is not None
    url = f"sqlite:///{tmp_path / 'median.db'}"
    study = open_study(cfg, make_storage(url, cfg.tune), "median")
    # an earlier trial that scored far above anything a real trial reaches, at every step
    study.add_trial(
        optuna.trial.create_trial(
            value=1e6, intermediate_values={s: 1e6 for s in range(40)}, user_attrs={}
        )
    )
    summary = optimize_parameters(cfg, candles, storage=url, study_name="median")
    assert summary.states == {"COMPLETE": 1, "PRUNED": 1}
    pruned = next(t for t in load_study(url, "median", cfg.tune).trials if t.state.name == "PRUNED")
    assert len(pruned.intermediate_values) == 1  # stopped at its first validation
    assert 0 < pruned.user_attrs["env_steps_used"] < pruned.user_attrs["env_steps_budget"]
    assert summary.compute_saved_fraction > 0


# --------------------------------------------------------------------------- resume


@pytest.mark.slow
def test_sqlite_study_resumes_where_it_stopped(tmp_path: Path, candles: pd.DataFrame) -> None:
    cfg = tune_config(n_trials=2)
    url = f"sqlite:///{tmp_path / 'resume.db'}"
    first = optimize_parameters(cfg, candles, storage=url)
    assert first.n_trials == 2
    assert cfg.tune is not None
    before = [(t.number, t.params, t.value) for t in load_study(url, "tiny_tune", cfg.tune).trials]
    again = optimize_parameters(cfg, candles, storage=url)  # budget spent: nothing new
    assert again.n_trials == 2
    more = optimize_parameters(cfg, candles, storage=url, n_trials=3)  # continues
    assert more.n_trials == 3
    after = [(t.number, t.params, t.value) for t in load_study(url, "tiny_tune", cfg.tune).trials]
    assert after[:2] == before
    assert after[2][0] == 2


@pytest.mark.slow
def test_a_stored_study_of_another_problem_is_refused(tmp_path: Path, candles: pd.DataFrame) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    optimize_parameters(tune_config(n_trials=1), candles, storage=url)
    other = experiment_config_from({**tune_dict(n_trials=1), "seed": 99})
    with pytest.raises(ConfigError, match="different"):
        optimize_parameters(other, candles, storage=url)


def test_several_workers_need_a_shared_storage(candles: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="in-memory"):
        optimize_parameters(tune_config(), candles, n_jobs=2)


def test_no_tune_section_is_a_config_error(candles: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="tune"):
        optimize_parameters(experiment_config_from({"name": "plain"}), candles)


# --------------------------------------------------------------------------- the best trial


@pytest.mark.slow
def test_best_trial_is_bundled_and_tested_once_with_the_deflated_sharpe(
    tmp_path: Path, candles: pd.DataFrame
) -> None:
    cfg = tune_config(n_trials=2)
    url = f"sqlite:///{tmp_path / 'best.db'}"
    optimize_parameters(cfg, candles, storage=url)
    assert cfg.tune is not None
    study = load_study(url, "tiny_tune", cfg.tune)
    result = train_best(cfg, candles, study, tmp_path / "out")
    assert result.trial_number == study.best_trial.number
    assert result.params == params_from_trial(cfg.tune.space, study.best_trial.params)
    assert (result.bundle / "config.yaml").exists() or result.bundle.exists()
    assert result.test is not None
    stats = result.test["sharpe_stats"]
    assert stats["n_trials"] == 2.0
    assert 0.0 <= stats["dsr"] <= stats["psr"] <= 1.0
    assert (tmp_path / "out" / "tune_result.json").exists()
    assert not result.reused_bundle
    # a second call does not look at the test split again: the stored result is reused
    again = train_best(cfg, candles, load_study(url, "tiny_tune", cfg.tune), tmp_path / "out2")
    assert again.reused_test
    assert again.test == result.test
    assert not again.reused_bundle  # no bundle in out2 yet: trained (to the same weights)
    # the bundle already made for this trial is reused, not trained again
    manifest = (result.bundle / "manifest.json").read_bytes()
    third = train_best(cfg, candles, load_study(url, "tiny_tune", cfg.tune), tmp_path / "out")
    assert third.reused_bundle
    assert third.reused_test
    assert third.test == result.test
    assert third.validation == result.validation
    assert (result.bundle / "manifest.json").read_bytes() == manifest
    assert summarize_study(load_study(url, "tiny_tune", cfg.tune)).n_trials == 2


# --------------------------------------------------------------------------- W&B


def _wandb_bytes(root: Path, expect: bytes, timeout_s: float = 30.0) -> dict[Path, bytes]:
    """Bytes of each offline run folder under ``root`` (waits, bounded, for ``expect`` in all:
    wandb-core may still be writing after ``finish``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = {
            d: b"".join(p.read_bytes() for p in d.rglob("*") if p.is_file())
            for d in root.rglob("offline-run-*")
            if d.is_dir()
        }
        if (runs and all(expect in b for b in runs.values())) or time.monotonic() > deadline:
            return runs
        time.sleep(0.3)


@pytest.mark.slow
def test_each_trial_is_a_wandb_run_in_the_study_group(
    offline_wandb: Path, tmp_path: Path, candles: pd.DataFrame
) -> None:
    data = tune_dict(n_trials=2)
    data["tracking"] = {"mode": "offline", "project": "coinrl-test"}
    cfg = experiment_config_from(data)
    summary = optimize_parameters(cfg, candles, study_name="grouped", out_dir=tmp_path / "study")
    assert summary.states == {"COMPLETE": 2}
    runs = _wandb_bytes(tmp_path / "study", b"tune/value")
    assert len(runs) == 2  # one run per trial
    for blob in runs.values():
        assert b"grouped" in blob  # the group (= study name)
        assert b"tune_trial" in blob  # the trial's config and parameters
        assert b"tune/value" in blob  # its objective
        assert b"eval/equity_curve" in blob  # and its equity curve
    trials_dir = tmp_path / "study" / "trials"
    assert sorted(p.name for p in trials_dir.iterdir()) == ["00000", "00001"]
    assert (trials_dir / "00000" / "progress_fold0.csv").is_file()


def test_an_unreachable_storage_is_a_config_error_without_the_password() -> None:
    cfg = tune_config()
    assert cfg.tune is not None
    url = "postgresql://coinrl:s3cretpw@127.0.0.1:1/nothing"
    with pytest.raises(ConfigError) as e:
        make_storage(url, cfg.tune)
    assert "s3cretpw" not in str(e.value)
    assert "127.0.0.1:1" in str(e.value)
    assert redact_url(url) == "postgresql://coinrl:***@127.0.0.1:1/nothing"


@pytest.mark.slow
def test_best_trial_retrained_on_train_and_validation_fits_its_normaliser_on_both(
    tmp_path: Path, candles: pd.DataFrame
) -> None:
    from coinrl.agents.bundle import load_model
    from coinrl.pipeline.splits import Normaliser, prepare_data_for_model

    cfg = tune_config(n_trials=1, retrain_on_train_and_validation=True)
    url = f"sqlite:///{tmp_path / 'retrain.db'}"
    optimize_parameters(cfg, candles, storage=url)
    assert cfg.tune is not None
    study = load_study(url, "tiny_tune", cfg.tune)
    result = train_best(cfg, candles, study, tmp_path / "out")
    assert result.retrained_on == "train+validation"
    assert result.validation is None
    assert result.test is not None
    agent = load_model(result.bundle)
    best_cfg = trial_config(cfg, result.params)
    prepared = prepare_data_for_model(
        candles, best_cfg.data.features, best_cfg.data.split, best_cfg.data.norm
    )
    stop = prepared.main_fold.validation.stop
    both = Normaliser.fit(
        prepared.raw_features[:stop], prepared.spec.feature_names, prepared.norm
    )
    assert agent.normaliser.fingerprint() == both.fingerprint()
    assert agent.normaliser.fingerprint() != prepared.normaliser.fingerprint()  # not train only
    # the same trial retrained on train only is another bundle: it is not reused
    plain = experiment_config_from(tune_dict(n_trials=1))
    other = train_best(plain, candles, load_study(url, "tiny_tune", cfg.tune), tmp_path / "out")
    assert not other.reused_bundle
    assert other.retrained_on == "train"
    assert load_model(other.bundle).normaliser.fingerprint() == prepared.normaliser.fingerprint()


@pytest.mark.slow
def test_two_worker_processes_share_the_default_sqlite_file(
    tmp_path: Path, candles: pd.DataFrame
) -> None:
    """The laptop case: ``--n-jobs 2`` on the SQLite file (a file lock guards the budget)."""
    cfg = tune_config(n_trials=4)
    url = f"sqlite:///{tmp_path / 'two.db'}"
    seen: list[TuneProgress] = []
    summary = optimize_parameters(cfg, candles, storage=url, n_jobs=2, progress=seen.append)
    assert seen[-1].done == 4  # the parent polls the shared storage while the workers run
    assert seen[-1].complete == 4
    assert seen[-1].best_value == summary.best_value
    assert cfg.tune is not None
    trials = load_study(url, "tiny_tune", cfg.tune).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # none lost, none extra
    assert summary.states == {"COMPLETE": 4}
    assert summary.workers >= 1


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("median", optuna.pruners.MedianPruner),
        ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_the_configured_pruner_is_the_one_the_study_uses(name: str, cls: type) -> None:
    cfg = tune_config(pruner=name)
    assert cfg.tune is not None
    study = open_study(cfg, make_storage(None, cfg.tune), "p")
    assert type(study.pruner) is cls
    assert type(make_pruner(cfg.tune)) is cls


# --------------------------------------------------------------------------- typing, messages, jobs


def test_a_second_open_of_a_study_never_logs_optunas_existing_study_line() -> None:
    """Every worker opens the study its parent created; Optuna's "Using an existing study"
    line was printed once per worker even for a brand-new study."""
    import logging

    cfg = tune_config()
    assert cfg.tune is not None
    storage = make_storage(None, cfg.tune)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    optuna_logger = logging.getLogger("optuna")
    optuna_logger.addHandler(handler)
    try:
        optuna.logging.set_verbosity(optuna.logging.INFO)
        open_study(cfg, storage, "twice")
        open_study(cfg, storage, "twice", seed_salt="worker:1")
        optuna.create_study(storage=storage, study_name="twice", load_if_exists=True)  # the control
    finally:
        optuna_logger.removeHandler(handler)
    messages = [r.getMessage() for r in records]
    assert len(messages) == 1  # only the control call, not ours
    assert "Using an existing study" in messages[0]


def test_the_progress_line_counts_done_best_pruned_and_failed() -> None:
    from coinrl.agents.tune import progress_of

    study = optuna.create_study(direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for state, value in (("COMPLETE", 0.25), ("COMPLETE", 0.5), ("PRUNED", None), ("FAIL", None)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": 0.1},
                distributions=dist,
                value=value,
                state=optuna.trial.TrialState[state],
            )
        )
    p = progress_of(study.get_trials(), budget=10)
    assert (p.done, p.complete, p.pruned, p.failed, p.running) == (4, 2, 1, 1, 0)
    assert (p.best_number, p.best_value) == (1, 0.5)
    assert p.line() == "trials 4/10 · best 0.5 (trial 1) · pruned 1 · failed 1 · running 0"


def test_a_non_config_is_refused_with_what_to_pass(candles: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="not a pydantic config model.*ExperimentConfig"):
        check_config({"name": "x"})
    from coinrl.pipeline.source import DataConfig

    with pytest.raises(ConfigError, match="config.data must be a DataConfig"):
        check_config(DataConfig())
    cfg = tune_config()
    assert check_config(cfg) is cfg


def test_the_worker_job_is_plain_data_that_round_trips(tmp_path: Path, candles: pd.DataFrame) -> None:
    """Workers get JSON + Parquet (nothing unpickled); the config and candles come back equal,
    so the worker's study key is the parent's."""
    from coinrl.agents.tune import study_key

    cfg = tune_config()
    frame = candles.copy()
    frame.attrs = {"symbol": "SYN/USD", "timeframe": "1h", "n": np.int64(3)}
    job = WorkerJob(cfg, frame, "sqlite:///x.db", "s", 5, tmp_path / "out", 20)
    path = write_job(job, tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["candles.parquet", "job.json"]
    back = read_job(path)
    assert type(back.config) is ExperimentConfig
    assert back.config == cfg
    assert study_key(back.config) == study_key(cfg)
    pd.testing.assert_frame_equal(back.candles, frame)
    assert back.candles.attrs == {"symbol": "SYN/USD", "timeframe": "1h", "n": 3}
    assert (back.storage_url, back.study_name, back.n_trials) == ("sqlite:///x.db", "s", 5)
    assert (back.out_dir, back.log_level) == (tmp_path / "out", 20)
    payload = path.read_text()
    payload = payload.replace("coinrl.experiments.config:ExperimentConfig", "os:system")
    path.write_text(payload)
    with pytest.raises(ConfigError, match="not a pydantic model"):
        read_job(path)
