"""Run-folder state of training: checkpoints, the monitor's state and the RNG states, as data.

A checkpoint folder ``<run>/checkpoints/step_<n>/`` holds the model (:mod:`coinrl.agents.model_io`,
no pickled field), optionally the replay buffer (``.npz``), the monitor's state and the resume
key (``state.json``) and the RNG states (``rng.json``). :func:`load_checkpoint` rebuilds the
model from the config and refuses a checkpoint written by a different config or data. Used by
:func:`~coinrl.agents.train.train_model` for one asset and for portfolios alike.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coinrl.pipeline.errors import ConfigError, DataError

from .config import TrainConfig
from .metrics import json_safe
from .model_io import PickledModelError, load_replay_buffer, read_model

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
STATE_FILE = "state.json"
RNG_FILE = "rng.json"
MODEL_FILE = "model.zip"
REPLAY_FILE = "replay_buffer.npz"

def atomic_dir(dest: Path, build: Any) -> None:
    """``build(tmp_dir)`` then rename the folder into place (replacing ``dest``)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        build(tmp)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise



@dataclass
class MonitorState:
    """What the training monitor carries across a checkpoint (JSON-safe)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    next_eval_step: int = 0
    next_checkpoint_step: int = 0
    stopped_early: bool = False
    last_eval_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """As plain data."""
        return dict(json_safe(asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MonitorState:
        """Back from :meth:`to_dict`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step_")))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    """The global RNG states (python, numpy's legacy one SB3 draws from, torch) as JSON data."""
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002  (SB3 uses the legacy RNG)
    return {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss},
        "numpy": {"kind": kind, "keys": np.asarray(keys).tolist(), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state().numpy().tolist(),
    }


def set_rng_state(state: Mapping[str, Any], source: Path) -> None:
    """Restore :func:`rng_state`'s data.

    Raises:
        DataError: the data is not such a state.
    """
    import torch

    try:
        py, npy = state["python"], state["numpy"]
        py_state = (int(py["version"]), tuple(int(x) for x in py["state"]), py["gauss_next"])
        np_state = (str(npy["kind"]), np.asarray(npy["keys"], dtype=np.uint32), int(npy["pos"]),
                    int(npy["has_gauss"]), float(npy["cached_gaussian"]))
        torch_state = torch.tensor(np.asarray(state["torch"], dtype=np.uint8))
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002  (SB3 draws from the legacy global RNG)
        torch.set_rng_state(torch_state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"{source} is not an RNG state ({e!r}); the checkpoint is damaged") from e


def key_defaults(train: TrainConfig, env: Any) -> dict[str, dict[str, Any]]:
    """The resume key's ``train`` and ``env`` sections at their field defaults (for
    :func:`load_checkpoint`'s ``defaults``)."""
    return {"train": type(train)().model_dump(mode="json"), "env": type(env)().model_dump(mode="json")}


def _with_new_defaults(saved: Any, want: Mapping[str, Any], defaults: Mapping[str, Mapping[str, Any]] | None) -> Any:
    """``saved`` with each config field it lacks (of those in ``want``) set to its default.

    A field added by a newer coinrl is absent from an older checkpoint's key; the older run
    behaved as the field's default (new fields default to "off"), so a resumption that keeps
    the default matches and one that sets another value is refused as a different config.
    """
    if not isinstance(saved, dict) or not defaults:
        return saved
    out = dict(saved)
    for section, fields in defaults.items():
        have, keys = out.get(section), want.get(section)
        if isinstance(have, dict) and isinstance(keys, dict):
            absent = {k: v for k, v in json.loads(json.dumps(dict(fields))).items() if k in keys and k not in have}
            out[section] = {**absent, **have}
    return out


def load_checkpoint(
    ckpt: Path, train: TrainConfig, venv: VecEnv, resume_key: Mapping[str, Any],
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[BaseAlgorithm, MonitorState]:
    """Rebuild the model of a checkpoint from ``train`` on ``venv``; nothing is unpickled.

    ``defaults`` (section -> field -> default, e.g. ``{"train": ..., "env": ...}``) fills the
    fields an older checkpoint's resume key lacks before the keys are compared.

    Raises:
        DataError: unreadable state files, a model with pickled fields, a damaged RNG state.
        ConfigError: the checkpoint's resume key differs from ``resume_key`` (another config
            or other data).
    """
    try:
        payload = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
        rng = json.loads((ckpt / RNG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(
            f"checkpoint {ckpt} has an unreadable {STATE_FILE} or {RNG_FILE} ({e}); delete that "
            "checkpoint folder to resume from the one before, or start a new run"
        ) from e
    want = json.loads(json.dumps(resume_key))
    saved_key = _with_new_defaults(payload.get("resume_key"), want, defaults)
    if saved_key != want:
        diff = sorted(
            k for k in set(want) | set(saved_key or {})
            if (saved_key or {}).get(k) != want.get(k)
        )
        raise ConfigError(
            f"checkpoint {ckpt} was written by a run with different {diff}; resume with the "
            "same config and data, or start a new run (another out_dir, or without --resume)"
        )
    try:
        model = read_model(ckpt / MODEL_FILE, train, env=venv, device=train.device)
    except PickledModelError as e:
        raise DataError(
            f"checkpoint {ckpt} was written by an older coinrl: its model holds pickled objects "
            f"({', '.join(e.fields)}), and coinrl never unpickles a run folder; start a new run "
            "(another out_dir, or without --resume)"
        ) from e
    if (ckpt / REPLAY_FILE).is_file():
        load_replay_buffer(model, ckpt / REPLAY_FILE)
    elif not train.is_on_policy:
        logger.warning(
            "resume: checkpoint %s has no replay buffer (train.save_replay_buffer=false); "
            "the resumed run starts from an empty one", ckpt,
        )
    step = int(model.num_timesteps)
    # fresh episodes, seeded from the run seed and the step: a resumed run is reproducible
    model.set_random_seed(int(train.seed or 0) + step)
    set_rng_state(rng, ckpt / RNG_FILE)
    state = MonitorState.from_dict(payload.get("monitor", {}))
    logger.info("resuming from checkpoint path=%s step=%d", ckpt, step)
    return model, state



__all__ = [
    "BEST_DIR",
    "CHECKPOINTS_DIR",
    "MODEL_FILE",
    "REPLAY_FILE",
    "RNG_FILE",
    "STATE_FILE",
    "MonitorState",
    "atomic_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "key_defaults",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
]
