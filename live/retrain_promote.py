"""Promotion and rollback of a gated challenger: the live bundle folder is swapped, journalled.

The runner watches its bundle folder and hot-reloads a changed one through the validated
:func:`~coinrl.live.reload.update_live_model` (feature spec, spaces, versions, a dry
prediction; on any failure the old model keeps trading). Promotion therefore only has to put
the challenger at the watched path, keeping the champion it replaces:

1. the challenger is copied next to the live folder (``.<name>.promote``) and fsynced;
2. a ``model`` row ``promote_start`` is journalled (challenger, previous champion, archive);
3. the live folder is renamed into ``archive/<bundle id>``, the copy onto the live path;
4. ``promote_end`` is journalled.

A process killed between 3's two renames leaves no folder at the live path for a moment;
:func:`recover_promotion` (run at start-up, before the runner loads its bundle) finishes the
swap from the copy, or puts the archived champion back when the copy is gone, so the live path
always ends up holding one whole bundle. :func:`rollback_champion` promotes the archived
previous champion back the same way (``rollback`` rows).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from coinrl.pipeline.errors import ConfigError, DataError

from .journal import Journal
from .retrain import bundle_id

logger = logging.getLogger(__name__)


def _staged(live: Path) -> Path:
    return live.parent / f".{live.name}.promote"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap(new: Path, live: Path, archive_dir: Path, journal: Journal, event: str, ts_ms: int | None = None,
          **extra: object) -> Path:
    from coinrl.agents.bundle import verify_bundle

    verify_bundle(new)
    if not (live / "manifest.json").is_file():
        raise DataError(f"{live} holds no bundle; run recover_promotion first or pass the live bundle folder")
    staged = _staged(live)
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(new, staged)
    for f in staged.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(live.parent)
    old_id = bundle_id(live)
    archive_dir.mkdir(parents=True, exist_ok=True)
    archived = archive_dir / old_id
    if archived.exists():
        shutil.rmtree(archived)
    now = int(time.time() * 1000) if ts_ms is None else int(ts_ms)
    journal.append("model", ts_ms=now, payload={
        "event": f"{event}_start", "bundle": str(new), "bundle_id": bundle_id(new),
        "previous_id": old_id, "archive": str(archived), "live": str(live), **extra})
    os.replace(live, archived)
    os.replace(staged, live)
    _fsync_dir(live.parent)
    _fsync_dir(archive_dir)
    journal.append("model", ts_ms=now, payload={
        "event": f"{event}_end", "bundle_id": bundle_id(live), "previous_id": old_id,
        "archive": str(archived), "live": str(live)})
    logger.info("%s: %s now trades at %s (previous champion kept at %s)", event, new, live, archived)
    return archived


def promote_challenger(challenger: str | Path, live_bundle: str | Path, journal: Journal,
                       *, archive_dir: str | Path | None = None, ts_ms: int | None = None) -> Path:
    """Put a challenger (that passed the gate) at the live bundle path; keep the champion.

    Args:
        challenger: the challenger bundle folder (``RetrainOutcome.challenger``).
        live_bundle: the folder the runner trades and watches.
        journal: the live run's journal (``promote_start``/``promote_end`` rows).
        archive_dir: where replaced champions are kept (default ``<live>.champions`` beside it).
        ts_ms: the promotion's time on the exchange's clock (UTC epoch ms; the journal rows'
            ``ts_ms``, from which :func:`~coinrl.live.retrain_rollback.check_rollback` counts
            the bars traded since); default the wall clock.

    Returns:
        The archived previous champion's folder (what :func:`rollback_champion` restores).

    Raises:
        DataError: the challenger fails its manifest check, or the live path holds no bundle.
    """
    live = Path(live_bundle)
    archive = Path(archive_dir) if archive_dir is not None else live.parent / f"{live.name}.champions"
    return _swap(Path(challenger), live, archive, journal, "promote", ts_ms)


def rollback_champion(live_bundle: str | Path, journal: Journal, *, reason: str,
                      archive_dir: str | Path | None = None, ts_ms: int | None = None) -> Path:
    """Put back the champion the last promotion replaced (``rollback_start``/``_end`` rows).

    Raises:
        ConfigError: no promotion of this live path is in the journal, or its archive is gone.
    """
    live = Path(live_bundle)
    last = [e.payload for e in journal.events("model")
            if e.payload.get("event") == "promote_end" and e.payload.get("live") == str(live)]
    if not last or not Path(last[-1]["archive"]).is_dir():
        raise ConfigError(f"no promoted champion of {live} to roll back to in journal {journal.path}")
    previous = Path(last[-1]["archive"])
    archive = Path(archive_dir) if archive_dir is not None else previous.parent
    return _swap(previous, live, archive, journal, "rollback", ts_ms, reason=reason)


def recover_promotion(live_bundle: str | Path, journal: Journal) -> str:
    """Finish or undo a promotion/rollback interrupted between its two renames.

    Returns:
        ``"ok"`` (nothing to do), ``"finished"`` (the staged copy moved in) or ``"restored"``
        (the archived champion moved back).
    """
    live = Path(live_bundle)
    staged = _staged(live)
    if (live / "manifest.json").is_file():
        shutil.rmtree(staged, ignore_errors=True)
        return "ok"
    starts = [e.payload for e in journal.events("model")
              if str(e.payload.get("event", "")).endswith("_start") and e.payload.get("live") == str(live)]
    if staged.is_dir():
        os.replace(staged, live)
        state = "finished"
    elif starts and Path(starts[-1]["archive"]).is_dir():
        os.replace(starts[-1]["archive"], live)
        state = "restored"
    else:
        raise DataError(f"{live} holds no bundle and no interrupted promotion explains it; restore it by hand")
    _fsync_dir(live.parent)
    journal.append("model", ts_ms=int(time.time() * 1000),
                   payload={"event": "promote_recovered", "live": str(live), "state": state,
                            "bundle_id": bundle_id(live)})
    logger.warning("recovered an interrupted promotion of %s: %s", live, state)
    return state


__all__ = ["promote_challenger", "recover_promotion", "rollback_champion"]
