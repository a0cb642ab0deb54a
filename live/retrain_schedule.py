"""Retraining on a schedule: an APScheduler job around :func:`~coinrl.live.retrain.retrain_once`.

:func:`retrain_job` binds a retrain's inputs into a no-argument callable (update the candles,
retrain, report the outcome; errors are journalled, never raised into the scheduler);
:func:`make_retrain_scheduler` runs it every ``retrain.every`` on a
:class:`~apscheduler.schedulers.background.BackgroundScheduler` (one daemon thread: a live
runner can host it beside its decisions, the training itself runs in a niced child process),
one run at a time (a retrain still running when the next is due makes that one be skipped).
``coinrl retrain --every`` hosts the same job in its own process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from pathlib import Path
from typing import Any

import pandas as pd

from coinrl.pipeline.errors import CoinrlError

from .journal import Journal
from .retrain import retrain_once
from .retrain_config import RetrainConfig, RetrainOutcome

logger = logging.getLogger(__name__)

JOB_ID = "coinrl-retrain"


def lower_thread_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority by ``nice`` (Linux: a thread id is a process id
    to ``setpriority``), so the retrain's own work in this process (data, gate backtests) yields
    to the decision thread; a no-op in the main thread (a job called directly) and elsewhere."""
    import os
    import threading

    if threading.current_thread() is threading.main_thread():
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError):  # pragma: no cover - no per-thread priorities here
        logger.debug("retrain: thread priority left as it is")


def retrain_job(
    bundle: str | Path,
    candles: pd.DataFrame | str | Path | Any,
    config: RetrainConfig | Mapping[str, Any] | None,
    out_dir: str | Path,
    journal: Journal,
    *,
    update: Callable[[], Any] | None = None,
    on_outcome: Callable[[RetrainOutcome], None] | None = None,
) -> Callable[[], RetrainOutcome | None]:
    """One scheduled retrain as a callable: ``update()`` (e.g. ``update_data`` of the candle
    file), then :func:`retrain_once`, then ``on_outcome(outcome)``.

    A :class:`~coinrl.pipeline.errors.CoinrlError` (too few candles, an exchange that did not
    answer the update...) is journalled as a ``retrain_failed`` model event and logged; the
    callable then returns None, and the schedule goes on.
    """
    cfg = config if isinstance(config, RetrainConfig) else RetrainConfig.model_validate(dict(config or {}))

    def run() -> RetrainOutcome | None:
        lower_thread_priority(cfg.nice)
        try:
            if update is not None:
                update()
            outcome = retrain_once(bundle, candles, cfg, out_dir, journal)
        except CoinrlError as e:
            logger.error("scheduled retrain failed: %s", e)
            journal.append("model", ts_ms=int(time.time() * 1000),
                           payload={"event": "retrain_failed", "reason": f"{type(e).__name__}: {e}"})
            return None
        if on_outcome is not None:
            on_outcome(outcome)
        return outcome

    return run


def make_retrain_scheduler(
    job: Callable[[], Any],
    config: RetrainConfig,
    *,
    run_now: bool = False,
    scheduler: Any = None,
) -> Any:
    """A started-on-demand APScheduler :class:`BackgroundScheduler` running ``job`` every
    ``config.every`` (``max_instances=1``, ``coalesce=True``: never two retrains at once).

    Args:
        job: the callable (:func:`retrain_job`).
        config: its :class:`RetrainConfig` (``every``).
        run_now: first run immediately rather than one interval from now.
        scheduler: add the job to this scheduler instead of a new one.

    Returns:
        The scheduler (call ``.start()``; ``.shutdown()`` stops it).
    """
    from datetime import datetime

    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    sched = scheduler if scheduler is not None else BackgroundScheduler(timezone=UTC, daemon=True)
    # APScheduler 3 reads next_run_time=None as "paused": pass it only to run now
    first: dict[str, Any] = {"next_run_time": datetime.now(UTC)} if run_now else {}
    sched.add_job(
        job, IntervalTrigger(seconds=config.every_s, timezone=UTC), id=JOB_ID, name="retrain",
        max_instances=1, coalesce=True, replace_existing=True, misfire_grace_time=None, **first,
    )
    logger.info("retrain scheduled every %s (%.0f s)%s", config.every, config.every_s,
                ", first run now" if run_now else "")
    return sched


__all__ = ["JOB_ID", "lower_thread_priority", "make_retrain_scheduler", "retrain_job"]
