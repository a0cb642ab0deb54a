"""One results folder per distinct result: ``coinrl backtest`` and ``coinrl walkforward`` never
replace another result's folder silently.

A backtest report folder is named after what makes it distinct (:func:`backtest_folder_name`:
bundle name, data file, split, cost overrides); a walk-forward folder is ``<name>-walkforward``.
Either records its *identity* in its summary file's ``meta`` (a backtest: bundle, data
fingerprint, split, cost overrides; a walk-forward: :func:`walkforward_identity`).
:func:`check_replace` runs before any work: the same result again replaces its own folder,
another result's folder (or a folder that is not a result of that kind) is refused unless
``--overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from coinrl.pipeline.errors import ConfigError


def json_digest(data: Any, n_hex: int = 16) -> str:
    """sha256 of ``data`` as canonical JSON (sorted keys), the first ``n_hex`` hex digits."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:n_hex]


def bundle_id(bundle: Path) -> str:
    """Short identity of a bundle: sha256 of its manifest (a folder) or of the zip, 12 hex."""
    from coinrl.agents.bundle import MANIFEST

    path = Path(bundle)
    target = path / MANIFEST if path.is_dir() else path
    try:
        return hashlib.sha256(target.read_bytes()).hexdigest()[:12]
    except OSError:
        return "unknown"


def backtest_folder_name(name: str, split: str, data: Path | None, costs: dict[str, Any]) -> str:
    """``<name>-backtest-[<data file stem>-]<split>[-costs-<hash>]``: one folder per (bundle,
    data, split, cost overrides); the identity recorded inside is checked before replacing."""
    parts = [f"{name}-backtest"]
    if data is not None:
        parts.append(re.sub(r"[^A-Za-z0-9._-]+", "_", Path(data).stem))
    parts.append(split)
    if costs:
        parts.append(f"costs-{json_digest(costs, 8)}")
    return "-".join(parts)


def walkforward_identity(
    config: Mapping[str, Any], folds: int, seeds: Sequence[int], data_fingerprint: str | None,
    n_trials: int | None,
) -> dict[str, Any]:
    """What makes two walk-forwards the same: the whole experiment config (its fingerprint:
    features, env, costs, algorithm, budget, splits with folds and embargo), the number of
    folds, the seeds, the candles (sha256) and the trials counted for the deflated Sharpe."""
    return {
        "config_fingerprint": json_digest(dict(config)),
        "folds": int(folds),
        "seeds": [int(s) for s in seeds],
        "data_fingerprint": data_fingerprint,
        "n_trials": n_trials,
    }


def check_replace(
    folder: Path, identity: Mapping[str, Any], overwrite: bool, *, summary_file: str, kind: str
) -> None:
    """Refuse to replace a results folder that holds another result (unless ``overwrite``).

    Args:
        folder: the results folder about to be written.
        identity: the new result's identity (recorded in ``meta`` of its summary file).
        overwrite: replace whatever the folder holds.
        summary_file: the JSON file whose ``meta`` holds the identity (``metrics.json``,
            ``walkforward.json``).
        kind: ``backtest`` or ``walk-forward``, for the message.

    Raises:
        ConfigError: the folder holds another result, or is not a results folder of this kind.
    """
    if overwrite or not folder.exists():
        return
    try:
        old = json.loads((folder / summary_file).read_text(encoding="utf-8")).get("meta", {})
    except (OSError, ValueError, AttributeError):
        old = None
    if isinstance(old, dict) and all(old.get(k) == v for k, v in identity.items()):
        return  # the same result again: its folder is replaced by the new one
    what = (
        ", ".join(f"{k} {old.get(k)!s:.16} -> {v!s:.16}" for k, v in identity.items() if old.get(k) != v)
        if isinstance(old, dict) else f"it is not a {kind} results folder"
    )
    raise ConfigError(
        f"{folder} already holds another {kind} ({what}); pass --out to write elsewhere, or "
        "--overwrite to replace it"
    )


__all__ = ["backtest_folder_name", "bundle_id", "check_replace", "json_digest", "walkforward_identity"]
