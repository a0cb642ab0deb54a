"""Tuning against a REAL PostgreSQL server: worker processes sharing one study, a killed worker.

The server is started by ``.ci/postgres`` (CI: ``eval "$(.ci/postgres)"`` exports
``COINRL_TEST_POSTGRES_URL``; locally run the same line). Without the URL these tests are
skipped, except in CI (``CI=true``), where a missing server is a failure.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest

from coinrl.agents.tune import (
    load_study,
    optimize_parameters,
    retried_numbers,
    summarize_study,
)
from coinrl.agents.tune.workers import WorkerJob, write_job
from coinrl.experiments.config import ExperimentConfig, experiment_config_from
from coinrl.pipeline.synthetic import planted_pattern

URL = os.environ.get("COINRL_TEST_POSTGRES_URL", "")

if not URL:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            "CI=true but COINRL_TEST_POSTGRES_URL is unset: start the server with "
            'eval "$(.ci/postgres)" before the tests',
            pytrace=False,
        )
    pytest.skip(
        'no PostgreSQL: run eval "$(.ci/postgres)" to start one and set COINRL_TEST_POSTGRES_URL',
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow

SPACE: dict[str, Any] = {
    "train.ppo.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "env.window": {"type": "int", "low": 4, "high": 12, "step": 4},
}


def pg_config(total_timesteps: int = 512, **tune: Any) -> ExperimentConfig:
    """A tiny experiment tuned against PostgreSQL, with a 1 s heartbeat and 3 s grace period."""
    t: dict[str, Any] = {
        "n_trials": 4,
        "pruner": "none",
        "heartbeat_interval_s": 1,
        "grace_period_s": 3,
        "max_retry": 2,
        "space": SPACE,
    }
    t.update(tune)
    return experiment_config_from(
        {
            "name": "pg_tune",
            "seed": 0,
            "data": {
                "features": {
                    "features": [
                        {"kind": "column", "name": "signal"},
                        {"kind": "returns", "horizons": [1, 4]},
                    ]
                },
                "split": {"train": 0.6, "validation": 0.2, "test": 0.2, "embargo_bars": 0},
            },
            "env": {"window": 8, "episode_length_bars": 128},
            "train": {
                "total_timesteps": total_timesteps,
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
    )


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return planted_pattern(1200, seed=3)


@pytest.fixture
def study_name() -> Iterator[str]:
    """A fresh study name, deleted from the server afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=URL)
    except KeyError:
        pass


def test_two_worker_processes_share_one_study_without_duplicate_or_lost_trials(
    candles: pd.DataFrame, study_name: str
) -> None:
    cfg = pg_config(total_timesteps=1024)  # trials long enough for both workers to start
    assert cfg.tune is not None
    summary = optimize_parameters(
        cfg, candles, storage=URL, study_name=study_name, n_trials=6, n_jobs=2
    )
    trials = load_study(URL, study_name, cfg.tune).trials
    # not lost: exactly the budget, every one finished with a value
    assert len(trials) == 6
    assert summary.n_trials == 6
    assert summary.states == {"COMPLETE": 6}
    assert all(t.value is not None for t in trials)
    # not duplicated: distinct numbers and ids, each trial run by exactly one worker
    assert sorted(t.number for t in trials) == list(range(6))
    assert len({t._trial_id for t in trials}) == 6
    workers = [t.user_attrs["worker"] for t in trials]
    assert len(set(workers)) == 2, workers  # two processes (host:pid), not threads
    assert os.getpid() not in {int(w.rsplit(":", 1)[1]) for w in workers}
    assert summary.workers == 2
    # the two workers sample with distinct seeds: no proposal is repeated
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6


_WORKER = """
import sys
from pathlib import Path
from coinrl.agents.tune import optimize_parameters
from coinrl.agents.tune.workers import read_job
job = read_job(Path(sys.argv[1]))
optimize_parameters(job.config, job.candles, storage=job.storage_url, study_name=job.study_name)
"""


def test_a_sigkilled_worker_leaves_the_study_usable_and_a_restart_continues(
    tmp_path: Path, candles: pd.DataFrame, study_name: str
) -> None:
    cfg = pg_config(total_timesteps=8192, n_trials=3)
    assert cfg.tune is not None
    job = write_job(WorkerJob(cfg, candles, URL, study_name, 3, None, logging.INFO), tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(job)])  # noqa: S603
    killed: optuna.trial.FrozenTrial | None = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                trials = optuna.load_study(study_name=study_name, storage=URL).trials
            except KeyError:  # not created yet
                trials = []
            running = [t for t in trials if t.state.name == "RUNNING"]
            # mid-trial: running for a while (data prepared, heartbeat written, training)
            if running and running[0].datetime_start is not None:
                age = time.time() - running[0].datetime_start.timestamp()
                if age > 0.5:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                    killed = running[0]
                    break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert killed is not None, "the worker never ran a trial long enough to be killed mid-trial"
    assert proc.returncode == -signal.SIGKILL

    # usable right after the kill: it loads, the dead worker's trial is still RUNNING
    study = load_study(URL, study_name, cfg.tune)
    assert study.trials[killed.number].state.name == "RUNNING"
    summarize_study(study, URL)

    # a restart fails the stale trial (after the grace period), re-queues it and finishes
    summary = optimize_parameters(cfg, candles, storage=URL, study_name=study_name)
    trials = load_study(URL, study_name, cfg.tune).trials
    dead = trials[killed.number]
    assert dead.state.name == "FAIL"
    assert killed.number in retried_numbers(trials)
    retry = [t for t in trials if killed.number in t.system_attrs.get("retry_history", [])]
    assert len(retry) == 1
    assert retry[0].state.name == "COMPLETE"
    assert retry[0].params == killed.params  # the same trial again, not a new proposal
    # the budget counts the re-queued trial once: 3 logical trials, all complete
    assert summary.n_trials == 3
    assert summary.states == {"COMPLETE": 3, "FAIL": 1}
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3
