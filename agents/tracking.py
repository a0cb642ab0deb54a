"""The one metrics sink: SB3's logger fanned out to Python logging, CSV and Weights & Biases.

Every metric of a training run is recorded once, with a namespaced key (``train/``,
``rollout/``, ``time/`` from SB3, ``eval/`` from coinrl's evaluation), into an SB3
:class:`~stable_baselines3.common.logger.Logger` built by :func:`make_logger`. Its output
formats are the fan-out: :class:`LoggingWriter` (one line to :mod:`logging`), SB3's CSV writer
(``progress.csv`` in the run folder) and :class:`WandbWriter` (the W&B run of a
:class:`Tracker`). Nothing else writes metrics anywhere.

:class:`Tracker` owns the W&B run: config (secrets scrubbed), metrics, the equity-curve image,
the model bundle as an artifact. ``TrackingConfig.mode = "disabled"`` makes it a no-op, and
``offline`` writes everything under its folder (``wandb sync`` uploads it later).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stable_baselines3.common.logger import CSVOutputFormat, KVWriter, Logger

from .config import TrackingConfig
from .metrics import json_safe
from .redact import scrub_secrets, secret_paths

logger = logging.getLogger(__name__)


def _scalar(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class Tracker:
    """A W&B run (or nothing, when tracking is disabled).

    Args:
        config: the ``tracking:`` section.
        run_name: name of the run (the experiment name).
        run_config: the full experiment config; secret entries are dropped before W&B sees it.
        out_dir: run folder; W&B files go to ``config.dir`` or ``out_dir/wandb``.
        run_id: continue this W&B run (a resumed training) instead of starting a new one.

    Example:
        >>> with Tracker(TrackingConfig(mode="disabled"), "demo", {}) as t:  # doctest: +SKIP
        ...     t.log({"eval/sharpe": 1.2}, step=1000)
    """

    def __init__(
        self,
        config: TrackingConfig | None = None,
        run_name: str = "coinrl",
        run_config: Mapping[str, Any] | None = None,
        out_dir: str | Path | None = None,
        run_id: str | None = None,
    ) -> None:
        self.config = config or TrackingConfig(mode="disabled")
        self.run: Any = None
        self.dir: Path | None = None
        if self.config.mode == "disabled":
            return
        import wandb

        base = Path(self.config.dir) if self.config.dir else Path(out_dir or ".") / "wandb"
        base.mkdir(parents=True, exist_ok=True)
        raw = dict(run_config or {})
        if secret_paths(raw):
            logger.warning("tracking: secret config entries %s are not sent to W&B", secret_paths(raw))
        self.run = wandb.init(
            project=self.config.project,
            entity=self.config.entity,
            group=self.config.group,
            tags=list(self.config.tags),
            name=run_name,
            dir=str(base),
            mode=self.config.mode,
            config=json_safe(scrub_secrets(raw)),
            reinit="create_new",
            id=run_id,
            resume="allow" if run_id else None,
            settings=wandb.Settings(
                silent=True,
                console="off",
                save_code=False,
                disable_git=True,
                x_disable_meta=True,
                x_disable_stats=True,
            ),
        )
        self.dir = Path(self.run.dir).parent
        logger.info("tracking mode=%s run=%s dir=%s", self.config.mode, run_name, self.dir)

    @property
    def run_id(self) -> str | None:
        """The W&B run id (None when disabled)."""
        return None if self.run is None else str(self.run.id)

    @property
    def enabled(self) -> bool:
        """True while a W&B run is open."""
        return self.run is not None

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numeric metrics (non-numeric and non-finite values are skipped)."""
        if self.run is None:
            return
        data = {k: f for k, v in metrics.items() if (f := _scalar(v)) is not None}
        if data:
            self.run.log(data, step=step)

    def log_figure(self, key: str, figure: Any, step: int | None = None) -> None:
        """Log a matplotlib figure (rendered with Agg, no pyplot needed) as an image."""
        if self.run is None or not self.config.log_plots:
            return
        import numpy as np
        import wandb
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
        canvas.draw()
        pixels = np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
        self.run.log({key: wandb.Image(pixels)}, step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Set run summary values (final metrics)."""
        if self.run is None:
            return
        for k, v in json_safe(dict(values)).items():
            self.run.summary[k] = v

    def log_artifact(
        self, path: str | Path, name: str, kind: str = "model", metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Attach a file or folder (the model bundle) to the run as an artifact."""
        if self.run is None or not self.config.log_bundle:
            return
        import wandb

        safe_name = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
        art = wandb.Artifact(safe_name, type=kind, metadata=json_safe(scrub_secrets(dict(metadata or {}))))
        p = Path(path)
        if p.is_dir():
            art.add_dir(str(p))
        else:
            art.add_file(str(p))
        self.run.log_artifact(art)

    def finish(self) -> None:
        """Close the run (flushes offline files)."""
        if self.run is not None:
            self.run.finish()
            self.run = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


class WandbWriter(KVWriter):
    """SB3 output format that forwards every dumped metric to a :class:`Tracker`."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def write(
        self,
        key_values: dict[str, Any],
        key_excluded: dict[str, tuple[str, ...]],
        step: int = 0,
    ) -> None:
        """Send the scalar values of one dump to W&B at ``step`` (env steps)."""
        data = {
            k: v
            for k, v in key_values.items()
            if "wandb" not in (key_excluded.get(k) or ()) and _scalar(v) is not None
        }
        self.tracker.log(data, step=step)

    def close(self) -> None:
        """Nothing to close (the Tracker owns the run)."""


class LoggingWriter(KVWriter):
    """SB3 output format that writes one compact line per dump to :mod:`logging` (no print)."""

    def __init__(self, name: str = "coinrl.agents.metrics", level: int = logging.INFO) -> None:
        self.log = logging.getLogger(name)
        self.level = level

    def write(
        self,
        key_values: dict[str, Any],
        key_excluded: dict[str, tuple[str, ...]],
        step: int = 0,
    ) -> None:
        """Log ``step=... key=value ...`` for the scalar values."""
        if not self.log.isEnabledFor(self.level):
            return
        parts = [
            f"{k}={f:.6g}"
            for k, v in sorted(key_values.items())
            if "log" not in (key_excluded.get(k) or ()) and (f := _scalar(v)) is not None
        ]
        self.log.log(self.level, "step=%d %s", step, " ".join(parts))

    def close(self) -> None:
        """Nothing to close."""


def make_logger(out_dir: str | Path | None = None, tracker: Tracker | None = None) -> Logger:
    """The run's single metrics sink (an SB3 Logger) with its fan-out writers.

    Args:
        out_dir: run folder for ``progress.csv`` (None: no CSV).
        tracker: W&B tracker (None or disabled: no W&B writer).
    """
    formats: list[KVWriter] = [LoggingWriter()]
    folder = None
    if out_dir is not None:
        folder = str(out_dir)
        os.makedirs(folder, exist_ok=True)
        formats.append(CSVOutputFormat(os.path.join(folder, "progress.csv")))
    if tracker is not None and tracker.enabled:
        formats.append(WandbWriter(tracker))
    return Logger(folder=folder, output_formats=formats)


__all__ = ["LoggingWriter", "Tracker", "WandbWriter", "make_logger"]
