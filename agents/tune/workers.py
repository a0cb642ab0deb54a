"""Workers: the loop that claims and runs trials, and the worker processes of one machine.

``n_jobs`` worker PROCESSES (torch and the GIL make threads useless) each run trials until the
study holds ``tune.n_trials`` trials; a re-queued trial counts once against the budget.

The parent hands each worker its job as plain data in a private temporary folder (``0700``,
removed when the workers end): ``job.json`` (the config as JSON, the storage URL, the budget)
and ``candles.parquet``. Nothing is unpickled: the worker re-validates the config with the
config model named in the job (``module:qualname`` of the parent's own config class, which must
be a pydantic model satisfying :class:`~coinrl.agents.tune.TunableConfig`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import socket
import subprocess  # noqa: S404  (our own worker processes, fixed arguments)
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import BaseModel

from coinrl.pipeline.errors import ConfigError

from ..metrics import json_safe
from .config import TunableConfig, check_config, tune_of
from .objective import TrialObjective
from .storage import BudgetLock, budget_lock, make_storage, open_study, optuna_quiet
from .summary import logical_trial_count

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

JOB_FILE = "job.json"
CANDLES_FILE = "candles.parquet"
_JOB_FORMAT = "coinrl-tune-job/1"


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    *,
    lock: BudgetLock | None = None,
    poll_s: float = 5.0,
    should_stop: Callable[[], bool] | None = None,
    on_trial: Callable[[], None] | None = None,
) -> int:
    """Run trials of ``study`` until it holds ``n_trials`` trials and none is waiting or running.

    Each round, under ``lock``: fail stale trials (a dead worker's), count the trials against
    the budget (:func:`logical_trial_count`), then claim one (a re-queued trial first); the lock
    is released as soon as the trial exists. When the budget is spent but other workers' trials
    are still running, it waits (``poll_s``) so a trial whose worker dies is still re-run.

    ``on_trial`` is called after each trial this worker ran (the CLI's progress line).

    Returns:
        The number of trials this worker ran.
    """
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import is_heartbeat_enabled
    from optuna.trial import TrialState

    lock = lock or BudgetLock()
    heartbeat = is_heartbeat_enabled(study._storage)
    ran = 0
    while should_stop is None or not should_stop():
        lock.acquire()
        try:
            if heartbeat:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            count = logical_trial_count(trials)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            running = any(t.state == TrialState.RUNNING for t in trials)
        except BaseException:
            lock.release()
            raise
        if count < n_trials or waiting:

            def claimed(trial: optuna.Trial) -> float:
                lock.release()  # the trial exists now: other workers may claim the next one
                return objective(trial)

            try:
                with optuna_quiet():  # the objective logs each trial; Optuna would repeat it
                    study.optimize(claimed, n_trials=1, catch=(Exception,), gc_after_trial=True)
            finally:
                if lock.held:
                    lock.release()
            ran += 1
            if on_trial is not None:
                on_trial()
            continue
        lock.release()
        if running and heartbeat:
            time.sleep(poll_s)
            continue
        break
    return ran


def worker_name() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class WorkerJob:
    """What every worker process of one ``optimize_parameters`` call runs.

    Attributes:
        config: the experiment config (with its ``tune`` section).
        candles: cleaned candles of the whole history.
        storage_url: the shared Optuna storage.
        study_name: the study.
        n_trials: the study's budget.
        out_dir: the study folder (None: no files, no W&B).
        log_level: the parent's logging level (the workers log at the same level).
    """

    config: TunableConfig
    candles: pd.DataFrame
    storage_url: str
    study_name: str
    n_trials: int
    out_dir: Path | None
    log_level: int


def write_job(job: WorkerJob, folder: Path) -> Path:
    """Write ``job`` into ``folder`` as ``job.json`` + ``candles.parquet``; the JSON's path."""
    model = type(job.config)
    frame = job.candles.copy(deep=False)
    frame.attrs = dict(json_safe(dict(job.candles.attrs)))
    frame.to_parquet(folder / CANDLES_FILE)
    payload: dict[str, Any] = {
        "format": _JOB_FORMAT,
        "config_model": f"{model.__module__}:{model.__qualname__}",
        "config": job.config.model_dump(mode="json"),
        "storage_url": job.storage_url,
        "study_name": job.study_name,
        "n_trials": job.n_trials,
        "out_dir": None if job.out_dir is None else str(job.out_dir),
        "log_level": job.log_level,
    }
    path = folder / JOB_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)
    return path


def _config_model(ref: str) -> type[BaseModel]:
    module, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise ConfigError(f"the tuning job names {ref!r} as its config model, not a pydantic model")
    return obj


def read_job(path: Path) -> WorkerJob:
    """The :class:`WorkerJob` that :func:`write_job` wrote (the config re-validated).

    Raises:
        ConfigError: not a job file of this version.
    """
    payload = json.loads(path.read_text(encoding="utf-8"))
    if payload.get("format") != _JOB_FORMAT:
        raise ConfigError(f"{path} is not a {_JOB_FORMAT} job file")
    model = _config_model(str(payload["config_model"]))
    config = check_config(model.model_validate(payload["config"]))
    candles = pd.read_parquet(path.parent / CANDLES_FILE)
    out_dir = payload["out_dir"]
    return WorkerJob(
        config=config,
        candles=candles,
        storage_url=str(payload["storage_url"]),
        study_name=str(payload["study_name"]),
        n_trials=int(payload["n_trials"]),
        out_dir=None if out_dir is None else Path(out_dir),
        log_level=int(payload["log_level"]),
    )


def _worker_main(job: WorkerJob, index: int) -> None:
    """Run one worker of ``job`` in this process (the body of a worker process)."""
    from coinrl.pipeline.logutil import setup_logging

    setup_logging(
        -1 if job.log_level >= logging.WARNING else 0 if job.log_level >= logging.INFO else 1
    )
    tune = tune_of(job.config)
    storage = make_storage(job.storage_url, tune)
    name = worker_name()
    study = open_study(job.config, storage, job.study_name, seed_salt=f"{name}:{index}")
    objective = TrialObjective(job.config, job.candles, job.out_dir, job.study_name, name)
    lock = budget_lock(job.storage_url, job.study_name)
    ran = run_worker(
        study, objective, job.n_trials, lock=lock, poll_s=min(5.0, tune.heartbeat_interval_s)
    )
    logger.info("worker done study=%s worker=%s trials_run=%d", job.study_name, name, ran)


def worker_process_main(job_file: str, index: int) -> None:
    """Entry point of a worker process started by :func:`run_processes`.

    Args:
        job_file: the ``job.json`` the parent wrote into its private temporary folder.
        index: the worker's index on this machine.
    """
    _worker_main(read_job(Path(job_file)), index)


def run_processes(
    job: WorkerJob,
    n_jobs: int,
    *,
    poll: Callable[[], None] | None = None,
    poll_s: float = 2.0,
) -> list[int]:
    """Start ``n_jobs`` fresh interpreters running one worker each; their exit codes.

    Fresh interpreters (not ``multiprocessing``) keep the caller's ``__main__`` out of the
    children: a script without a ``__main__`` guard still works, and no state is forked.
    ``poll`` is called every ``poll_s`` seconds while they run (the CLI's progress line).
    """
    with tempfile.TemporaryDirectory(prefix="coinrl-tune-") as tmp:  # created 0700
        job_file = write_job(job, Path(tmp))
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for i in range(n_jobs):
                code = (
                    "from coinrl.agents.tune import worker_process_main; "
                    f"worker_process_main({str(job_file)!r}, {i})"
                )
                procs.append(subprocess.Popen([sys.executable, "-c", code]))  # noqa: S603
            logger.info(
                "started %d tuning worker processes pids=%s", n_jobs, [p.pid for p in procs]
            )
            while poll is not None and any(p.poll() is None for p in procs):
                poll()
                time.sleep(poll_s)
            return [p.wait() for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=30)
