"""One run folder, one lineage: ``coinrl train`` never mixes two runs in a folder.

A run folder (``out_dir/<name>/``) gets a ``run.json`` when its run starts: a run id, the UTC
creation time and the run's *identity*, the parts of the experiment config that a resumed run
must share with the run it continues (data, features, splits, env, algorithm and its
hyper-parameters, seeds, and the sha256 of the candles). The training budget, evaluation and
checkpoint cadence, display settings and tracking may change on ``--resume``
(:data:`~coinrl.agents.train.RESUMABLE_CHANGES`).

:func:`claim_run_dir` is called after the config and data are validated and before anything is
written:

* a new or empty folder: created, ``run.json`` written;
* a folder holding a run, without ``--resume`` or ``--overwrite``: refused (a new run would
  replace the bundle and keep the old checkpoints, so a later ``--resume`` would continue the
  OLD run);
* ``--overwrite``: the folder is emptied first (only a folder that looks like a run folder);
* ``--resume``: refused when ``run.json`` records another identity (the message names the keys
  that differ); a folder from before ``run.json`` existed is adopted with a warning (the
  checkpoint's own config check still applies).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coinrl.agents.train import RESUMABLE_CHANGES
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.portfolio import PreparedPortfolio
from coinrl.pipeline.splits import PreparedData

from .config import ExperimentConfig

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
# What coinrl train writes into a run folder (``--overwrite`` deletes nothing else).
RUN_ENTRIES = frozenset({
    RUN_FILE, "checkpoints", "best", "progress.csv", "wandb", "bundle", "evaluation.json",
    "equity_validation.png", "wandb_run_id.txt", "train.log", "report",
})


def run_identity(config: ExperimentConfig, prepared: PreparedData | PreparedPortfolio) -> dict[str, Any]:
    """What a resumed run must share with the run it continues (plain JSON data).

    Args:
        config: the experiment.
        prepared: its loaded data (for the candles' sha256).

    Returns:
        The config without ``tracking``/``tune`` and without the train fields a resume may
        change, with ``train.seed`` resolved, plus ``data_fingerprint``.
    """
    cfg = config.model_copy(update={"train": config.resolved_train}).to_dict()
    cfg.pop("tracking", None)
    cfg.pop("tune", None)
    cfg["train"] = {k: v for k, v in cfg["train"].items() if k not in RESUMABLE_CHANGES}
    cfg["data_fingerprint"] = prepared.data_fingerprint
    return dict(json.loads(json.dumps(cfg)))


def run_fingerprint(identity: Mapping[str, Any]) -> str:
    """sha256 of a run identity (the ``fingerprint`` recorded in ``run.json``)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Dotted paths where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [path or "<root>"]


def read_run_record(run_dir: Path) -> dict[str, Any] | None:
    """The ``run.json`` of a run folder, or None when there is none."""
    p = Path(run_dir) / RUN_FILE
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{p} is unreadable ({e}); delete the run folder or pass --overwrite") from e
    return data if isinstance(data, dict) else None


def _write_record(run_dir: Path, identity: Mapping[str, Any]) -> dict[str, Any]:
    record = {
        "run_id": uuid.uuid4().hex,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "fingerprint": run_fingerprint(identity),
        "identity": dict(identity),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return record


def _clear(run_dir: Path) -> None:
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_ENTRIES and not p.name.startswith("."))
    if foreign:
        raise ConfigError(
            f"--overwrite refuses to empty {run_dir}: it holds {foreign[:5]}, which coinrl train "
            "did not write; move them away or choose another --out or name=..."
        )
    for p in run_dir.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    logger.info("overwrite: emptied run folder %s", run_dir)


def claim_run_dir(
    run_dir: Path, identity: Mapping[str, Any], *, resume: bool = False, overwrite: bool = False
) -> dict[str, Any]:
    """Make ``run_dir`` this run's folder, or refuse (see the module docstring).

    Args:
        run_dir: ``out_dir/<name>``.
        identity: :func:`run_identity` of the run about to start.
        resume: continue the run in ``run_dir`` (same identity required).
        overwrite: delete the run in ``run_dir`` and start a new one.

    Returns:
        The folder's ``run.json`` record (``run_id``, ``created_utc``, ``fingerprint``,
        ``identity``).

    Raises:
        ConfigError: both flags; an existing run without either flag; ``--resume`` of another
            run; ``--overwrite`` of a folder holding files coinrl did not write.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite deletes it: pass one of them")
    occupied = run_dir.is_dir() and any(run_dir.iterdir())
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run folder; choose another --out or name=...")
    if not occupied:
        if resume:
            logger.warning("resume: %s holds no run; starting a new one", run_dir)
        return _write_record(run_dir, identity)
    record = read_run_record(run_dir)
    if overwrite:
        _clear(run_dir)
        return _write_record(run_dir, identity)
    if not resume:
        what = (
            f"run {record.get('run_id')} started {record.get('created_utc')}"
            if record else "an earlier run"
        )
        raise ConfigError(
            f"{run_dir} already holds {what}; pass --resume to continue it, --overwrite to delete "
            "it and start again, or choose another --out or name=..."
        )
    if record is None:
        logger.warning(
            "resume: %s has no %s (written by an older coinrl); adopting it, the checkpoint's "
            "own config check still applies", run_dir, RUN_FILE,
        )
        return _write_record(run_dir, identity)
    if record.get("fingerprint") != run_fingerprint(identity):
        diff = _diff(record.get("identity") or {}, json.loads(json.dumps(identity)))
        shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
        raise ConfigError(
            f"--resume: {run_dir} holds run {record.get('run_id')}, a different run (differs in "
            f"{shown}); resume with its config (its bundle's config.yaml), or start a new run with "
            "--overwrite or another --out or name=..."
        )
    logger.info("resume: run %s in %s", record.get("run_id"), run_dir)
    return record


__all__ = [
    "RUN_ENTRIES", "RUN_FILE", "claim_run_dir", "read_run_record", "run_fingerprint", "run_identity",
]
