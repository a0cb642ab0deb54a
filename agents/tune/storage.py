"""Where a study lives and how workers share it: storages, samplers, pruners, budget locks.

``:memory:`` (one process), a SQLite file (embedded, resumable: rerun and it continues the same
study) or a PostgreSQL URL shared by workers on many machines. RDB storages run Optuna's
heartbeat: the trial of a killed worker is failed after ``grace_period_s`` and re-queued
(``RetryHeartbeatStaleTrialCallback``). Claiming a trial slot happens under a lock (a
PostgreSQL advisory lock, a file lock next to a SQLite file), so concurrent workers never
overshoot the budget.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from coinrl.pipeline.errors import ConfigError

from ..metrics import json_safe
from ..tune_space import TuneConfig
from .config import CONFIG_ATTR, KEY_ATTR, MEMORY, TunableConfig, public_config, study_key, tune_of

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def optuna_quiet() -> Iterator[None]:
    """Optuna's own INFO lines off inside the block (its warnings stay).

    The tuner reports studies and trials through its own logger and the CLI's progress line;
    Optuna's "Using an existing study", "A new study created" and per-trial lines repeated
    them, once per worker.
    """
    import optuna

    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(old, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(old)


def study_exists(storage: optuna.storages.BaseStorage, study_name: str) -> bool:
    """Whether ``storage`` already holds a study called ``study_name``."""
    try:
        storage.get_study_id_from_name(study_name)
    except KeyError:
        return False
    return True


def redact_url(url: str) -> str:
    """The storage URL with its password masked (for logs and summaries)."""
    if url == MEMORY:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (an unparsable URL is shown without its userinfo)
        head, _, tail = url.partition("@")
        return f"{head.split('//')[0]}//***@{tail}" if tail else url


def make_storage(url: str | None, tune: TuneConfig) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: in-memory, or an RDB storage with the heartbeat.

    Args:
        url: ``:memory:``/None, ``sqlite:///path.db`` (the folder is created) or any SQLAlchemy
            URL Optuna supports (``postgresql://user:pass@host:port/db``).
        tune: heartbeat interval, grace period and retries of re-queued trials.

    Raises:
        ConfigError: an unreadable URL or an unreachable database (the message says which).
    """
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if url is None or url == MEMORY:
        return optuna.storages.InMemoryStorage()
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != MEMORY:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=tune.heartbeat_interval_s,
                grace_period=tune.grace_period_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=tune.max_retry
                ),
            )
    except (ImportError, ModuleNotFoundError) as e:
        raise ConfigError(
            f"storage {redact_url(url)} needs a database driver that is not installed ({e}); "
            "for PostgreSQL: pip install 'psycopg[binary]' (SQLAlchemy's default postgresql:// "
            "driver), or psycopg2-binary with a postgresql+psycopg2:// URL"
        ) from e
    except Exception as e:  # sqlalchemy's errors: bad URL, refused connection, bad password
        raise ConfigError(
            f"cannot open the Optuna storage {redact_url(url)}: {type(e).__name__}: {e}"
        ) from e


def _sampler_seed(base: int, salt: str | None) -> int:
    if salt is None:
        return base
    digest = hashlib.sha256(f"{base}:{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def make_sampler(tune: TuneConfig, seed: int) -> optuna.samplers.BaseSampler:
    """TPE (or random) sampler seeded with ``seed``."""
    import optuna

    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune.startup_trials)


def make_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    """The median or successive-halving pruner (or none) of ``tune``."""
    import optuna

    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=tune.pruner_startup_trials, n_warmup_steps=tune.pruner_warmup_evals
        )
    if tune.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def open_study(
    config: TunableConfig,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    *,
    seed_salt: str | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study, or load it when it exists (resume), checking it tunes the same problem.

    The sampler is seeded with ``tune.seed`` (or the experiment seed) for a new study run by
    one worker, so the same seed proposes the same trials; when the study already has trials,
    or ``seed_salt`` names one of several workers, the seed is derived from both, so a resumed
    or parallel worker does not replay the first proposals.

    Raises:
        ConfigError: the stored study was created from another config or search space.
    """
    import optuna

    tune = tune_of(config)
    base_seed = tune.seed if tune.seed is not None else config.seed
    existed = study_exists(storage, study_name)
    with optuna_quiet():  # Optuna says "Using an existing study" even to a worker of a new one
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction="maximize",
            pruner=pruner or make_pruner(tune),
            load_if_exists=True,
        )
    key = study_key(config)
    stored = study.user_attrs.get(KEY_ATTR)
    if stored is None:
        study.set_user_attr(KEY_ATTR, key)
        study.set_user_attr(CONFIG_ATTR, json_safe(public_config(config)))
    elif stored != key:
        raise ConfigError(
            f"study {study_name!r} in this storage was run with a different data/env/train "
            "config, seed or search space; use another study name (--study-name) or the "
            "config it was created with"
        )
    n_existing = len(study.get_trials(deepcopy=False))
    salt = seed_salt if n_existing == 0 else f"{seed_salt}:{n_existing}"
    logger.debug(
        "%s study=%s trials=%d salt=%s",
        "opened the existing" if existed else "created a new",
        study_name,
        n_existing,
        salt,
    )
    study.sampler = make_sampler(tune, _sampler_seed(base_seed, salt))
    return study


def load_study(url: str, study_name: str, tune: TuneConfig) -> optuna.Study:
    """Load an existing study (for summaries and :func:`~coinrl.agents.tune.train_best`).

    Raises:
        ConfigError: no such study in the storage.
    """
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=make_storage(url, tune))
    except KeyError as e:
        raise ConfigError(f"no study {study_name!r} in {redact_url(url)}") from e


# --------------------------------------------------------------------------- budget locks


class BudgetLock:
    """The budget lock of one process (no-op base); ``release`` is idempotent, since either
    the claimed trial or the worker loop releases it."""

    def __init__(self) -> None:
        self.held = False

    def acquire(self) -> None:
        self.held = True

    def release(self) -> None:
        self.held = False


class _FileLock(BudgetLock):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.fh: TextIO | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a")  # noqa: SIM115  (held across calls)
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None
        self.held = False


class _AdvisoryLock(BudgetLock):
    """A PostgreSQL session advisory lock (released by the server if the worker dies)."""

    def __init__(self, url: str, key: int) -> None:
        super().__init__()
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        self.engine = create_engine(url, poolclass=NullPool)
        self.key = key
        self.conn: Any = None

    def acquire(self) -> None:
        from sqlalchemy import text

        self.conn = self.engine.connect()
        self.conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        self.held = True

    def release(self) -> None:
        from sqlalchemy import text

        if self.conn is not None:
            try:
                self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            finally:
                self.conn.close()
                self.conn = None
        self.held = False


def budget_lock(url: str | None, study_name: str) -> BudgetLock:
    """The lock under which a worker counts the study's trials and claims the next one."""
    if url is None or url == MEMORY:
        return BudgetLock()
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != MEMORY:
            return _FileLock(Path(path + f".{_safe(study_name)}.lock"))
        return BudgetLock()
    if url.startswith("postgres"):
        key = int.from_bytes(
            hashlib.sha256(f"coinrl-tune:{study_name}".encode()).digest()[:8], "big", signed=True
        )
        return _AdvisoryLock(url, key)
    return BudgetLock()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
