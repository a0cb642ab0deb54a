"""SB3 models and training state as plain data: written and read without pickle.

A stable-baselines3 ``model.zip`` holds a ``data`` entry (JSON) next to torch tensor files
(``policy.pth``, ``policy.optimizer.pth``, ``pytorch_variables.pth``). SB3's own ``save`` stores
every attribute JSON cannot hold (the spaces, ``policy_class``, ``lr_schedule``,
``clip_range``, ...) as a cloudpickled object in a ``":serialized:"`` field, and SB3's ``load``
unpickles them: loading a file runs whatever it contains. coinrl shares these files (bundles
go to other people and to the process holding the exchange keys), so here:

* :func:`write_model` writes SB3's layout WITHOUT the pickled fields: every one of them is
  rebuilt from the config (algorithm, ``net_arch``, activation, hyper-parameters) and the
  env's spaces, which coinrl always has;
* :func:`read_model` builds the algorithm from that config and those spaces, then loads the
  tensors with ``torch.load(..., weights_only=True)`` (tensors and plain containers only)
  and restores a fixed list of JSON counters (:data:`STATE_FIELDS`). A ``data`` entry that
  still holds a ``":serialized:"`` field is refused (:class:`PickledModelError`) and never
  decoded; :func:`strip_pickled` rewrites such a file (from an older coinrl) without them,
  again without decoding them;
* the replay buffer of off-policy algorithms goes to an ``.npz`` of its arrays
  (:func:`save_replay_buffer` / :func:`load_replay_buffer`, ``allow_pickle=False``).

Every unreadable, truncated or inconsistent file raises :class:`DataError` with one line
saying which file and what to do.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coinrl.pipeline.errors import DataError

from .algos import algo_class, make_algorithm, policy_kwargs, policy_name
from .config import TrainConfig

if TYPE_CHECKING:
    from gymnasium import spaces
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

logger = logging.getLogger(__name__)

SERIALIZED = ":serialized:"
"""The key SB3 uses for a cloudpickled field inside ``data``."""
DATA_ENTRY = "data"
POLICY_ENTRY = "policy.pth"
TORCH_VARIABLES_ENTRY = "pytorch_variables.pth"
MAX_ENTRY_BYTES = 4 << 30
"""Largest uncompressed entry read from a model file (a guard against zip bombs)."""

STATE_FIELDS: dict[str, type] = {
    "num_timesteps": int,
    "_total_timesteps": int,
    "_num_timesteps_at_start": int,
    "_episode_num": int,
    "_n_updates": int,
    "_n_calls": int,
    "_current_progress_remaining": float,
    "exploration_rate": float,
}
"""The plain counters restored from ``data``; every other attribute comes from the config."""

REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


class PickledModelError(DataError):
    """A model file whose ``data`` holds cloudpickled fields (never decoded)."""

    def __init__(self, message: str, fields: list[str]) -> None:
        super().__init__(message)
        self.fields = fields


# --------------------------------------------------------------------------- reading zips


def _open_zip(path: str | Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is not a readable model zip ({e}); the file is damaged") from e


def _read_entry(zf: zipfile.ZipFile, name: str, source: str) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError as e:
        raise DataError(f"{source} lacks its {name!r} entry; the model file is damaged") from e
    if info.file_size > MAX_ENTRY_BYTES:
        raise DataError(f"{source}: entry {name!r} is {info.file_size} bytes, over the limit")
    try:
        return zf.read(name)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:  # CRC, truncation
        raise DataError(f"{source}: entry {name!r} is unreadable ({e}); the file is damaged") from e


def pickled_fields(data: Mapping[str, Any]) -> list[str]:
    """Names of the ``data`` fields SB3 stored as cloudpickled objects (looked at, not decoded)."""
    return sorted(k for k, v in data.items() if isinstance(v, dict) and SERIALIZED in v)


def _parse_data(raw: bytes, source: str) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{source}: its 'data' entry is not JSON ({e}); the file is damaged") from e
    if not isinstance(data, dict):
        raise DataError(f"{source}: its 'data' entry is not a JSON object; the file is damaged")
    return data


def read_plain_data(path: str | Path, *, allow_pickled: bool = False) -> dict[str, Any]:
    """The JSON ``data`` of a model file.

    Args:
        path: the model zip.
        allow_pickled: return the data even when it holds cloudpickled fields (they stay
            undecoded base64 strings; only :func:`strip_pickled` uses this).

    Raises:
        PickledModelError: ``data`` holds ``":serialized:"`` fields (and not ``allow_pickled``).
        DataError: not a zip, no ``data`` entry, or not JSON.
    """
    with _open_zip(path) as zf:
        data = _parse_data(_read_entry(zf, DATA_ENTRY, str(path)), str(path))
    found = pickled_fields(data)
    if found and not allow_pickled:
        raise PickledModelError(
            f"{path} holds pickled Python objects in {found}; coinrl never unpickles a model "
            "file (unpickling runs code)",
            found,
        )
    return data


def _torch_entry(zf: zipfile.ZipFile, name: str, source: str, device: str) -> Any:
    import torch

    raw = _read_entry(zf, name, source)
    try:
        return torch.load(io.BytesIO(raw), map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001  (any torch/unpickler failure: one clear line)
        raise DataError(
            f"{source}: {name} is not a plain tensor file ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); the model file is damaged or crafted"
        ) from e


def read_policy_state(path: str | Path, *, device: str = "cpu") -> dict[str, Any]:
    """The policy's ``state_dict`` from a model zip (``policy.pth``, tensors only)."""
    with _open_zip(path) as zf:
        state = _torch_entry(zf, POLICY_ENTRY, str(path), device)
    if not isinstance(state, dict):
        raise DataError(f"{path}: {POLICY_ENTRY} is not a state dict; the model file is damaged")
    return state


# --------------------------------------------------------------------------- building


def build_model(
    config: TrainConfig,
    *,
    env: VecEnv | None = None,
    observation_space: spaces.Space[Any] | None = None,
    action_space: spaces.Space[Any] | None = None,
    n_envs: int | None = None,
    device: str = "cpu",
) -> BaseAlgorithm:
    """A fresh algorithm for ``config``: on ``env`` (training, resume) or on bare spaces.

    Without an env the model can predict (bundles) but not learn until ``set_env``.
    """
    if env is not None:
        return make_algorithm(config.model_copy(update={"device": device}), env, int(config.seed or 0))
    if observation_space is None or action_space is None:
        raise ValueError("build_model needs an env or both spaces")
    from gymnasium import spaces as gspaces

    cls: Any = algo_class(config.algo)  # every concrete algorithm takes _init_setup_model
    model: BaseAlgorithm = cls(
        policy_name(config, isinstance(observation_space, gspaces.Dict)),
        None,
        seed=config.seed,
        device=device,
        policy_kwargs=policy_kwargs(config),
        verbose=0,
        _init_setup_model=False,
        **config.algo_kwargs(),
    )
    model.observation_space = observation_space
    model.action_space = action_space
    model.n_envs = int(n_envs or config.n_envs)
    if getattr(model, "target_entropy", None) == "auto":  # SAC reads it off the env it lacks
        shape = tuple(action_space.shape or ())
        model.target_entropy = float(-np.prod(shape).astype(np.float32))  # type: ignore[attr-defined]
    model._setup_model()
    return model


def _restore_state(model: BaseAlgorithm, data: Mapping[str, Any], source: str) -> None:
    for name, kind in STATE_FIELDS.items():
        if name not in data or not hasattr(model, name):
            continue
        value = data[name]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is int and not isinstance(value, int):
            ok = False
        if not ok:
            raise DataError(f"{source}: data field {name}={value!r} is not a {kind.__name__}")
        setattr(model, name, kind(value))


def read_model(
    path: str | Path,
    config: TrainConfig,
    *,
    env: VecEnv | None = None,
    observation_space: spaces.Space[Any] | None = None,
    action_space: spaces.Space[Any] | None = None,
    device: str = "cpu",
) -> BaseAlgorithm:
    """Rebuild a model from ``config`` and the spaces, then load a model file's tensors.

    Nothing in the file is unpickled: tensors go through ``torch.load(weights_only=True)``,
    the counters of :data:`STATE_FIELDS` through JSON.

    Args:
        path: the model zip (from :func:`write_model`).
        config: the training config the model was built with (algorithm, network, kwargs).
        env: the VecEnv to continue training on (resume), or None to predict only.
        observation_space, action_space: the env's spaces when there is no env.
        device: torch device.

    Raises:
        PickledModelError: the file holds cloudpickled fields (an older SB3/coinrl save).
        DataError: a damaged file, or tensors that do not fit the network ``config`` builds.
    """
    source = str(path)
    data = read_plain_data(path)
    with _open_zip(path) as zf:
        names = set(zf.namelist())
        params = {POLICY_ENTRY.removesuffix(".pth"): _torch_entry(zf, POLICY_ENTRY, source, device)}
        for name in sorted(names):
            if name.endswith(".pth") and name not in (POLICY_ENTRY, TORCH_VARIABLES_ENTRY):
                params[name.removesuffix(".pth")] = _torch_entry(zf, name, source, device)
        variables = (
            _torch_entry(zf, TORCH_VARIABLES_ENTRY, source, device)
            if TORCH_VARIABLES_ENTRY in names else {}
        )
    model = build_model(
        config, env=env, observation_space=observation_space, action_space=action_space,
        device=device,
    )
    expected, torch_vars = model._get_torch_save_params()
    unknown = sorted(set(params) - set(expected))
    if unknown:
        raise DataError(f"{source}: unexpected tensor files {unknown} for {config.algo}")
    try:
        model.set_parameters(params, exact_match=True, device=device)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"{source}: its weights do not fit the {config.algo} network of its config "
            f"(net_arch={list(config.net_arch)}, spaces from the env config): {first}"
        ) from e
    if not isinstance(variables, dict):
        raise DataError(f"{source}: {TORCH_VARIABLES_ENTRY} is not a dict; the file is damaged")
    from stable_baselines3.common.save_util import recursive_setattr

    for name, value in variables.items():
        if name not in torch_vars:
            raise DataError(f"{source}: unexpected torch variable {name!r} for {config.algo}")
        if value is not None:
            recursive_setattr(model, f"{name}.data", value.data)
    _restore_state(model, data, source)
    if model.use_sde:
        model.policy.reset_noise()  # type: ignore[operator]
    return model


# --------------------------------------------------------------------------- writing


def _rewrite_without_pickles(raw_zip: bytes, dest: str | Path) -> list[str]:
    """Copy a model zip to ``dest`` with the pickled ``data`` fields dropped (never decoded)."""
    src = io.BytesIO(raw_zip)
    with _open_zip(src) as zin:  # type: ignore[arg-type]
        data = _parse_data(_read_entry(zin, DATA_ENTRY, str(dest)), str(dest))
        dropped = pickled_fields(data)
        plain = {k: v for k, v in data.items() if k not in dropped}
        entries = [(n, _read_entry(zin, n, str(dest))) for n in zin.namelist() if n != DATA_ENTRY]
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        zout.writestr(DATA_ENTRY, json.dumps(plain, indent=2, sort_keys=True))
        for name, raw in entries:
            zout.writestr(name, raw)
    return dropped


def write_model(model: BaseAlgorithm, path: str | Path) -> None:
    """Save ``model`` in SB3's zip layout with no pickled field (see the module docstring).

    The weights, optimiser state and torch variables are SB3's own tensor files; ``data``
    keeps the JSON-able attributes (counters, hyper-parameters for reading by eye).
    """
    buf = io.BytesIO()
    model.save(buf)
    _rewrite_without_pickles(buf.getvalue(), path)


def strip_pickled(src: str | Path, dest: str | Path) -> list[str]:
    """Rewrite a model zip written by SB3's ``save`` without its pickled fields.

    The pickled fields are dropped unread: what they held (spaces, schedules, policy class)
    is rebuilt from the config when the result is read with :func:`read_model`.

    Returns:
        The names of the fields dropped.
    """
    raw = Path(src).read_bytes()
    return _rewrite_without_pickles(raw, dest)


# --------------------------------------------------------------------------- replay buffer


def _buffer_arrays(buffer: Any) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in REPLAY_ARRAYS:
        value = getattr(buffer, name, None)
        if isinstance(value, dict):
            for key, arr in value.items():
                out[f"{name}.{key}"] = arr
        elif isinstance(value, np.ndarray):
            out[name] = value
    return out


def save_replay_buffer(model: BaseAlgorithm, path: str | Path) -> None:
    """Write an off-policy model's replay buffer as an ``.npz`` of its arrays (no pickle)."""
    buffer = model.replay_buffer  # type: ignore[attr-defined]
    arrays = _buffer_arrays(buffer)
    arrays["pos"] = np.asarray(buffer.pos, dtype=np.int64)
    arrays["full"] = np.asarray(bool(buffer.full))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def load_replay_buffer(model: BaseAlgorithm, path: str | Path) -> None:
    """Fill ``model.replay_buffer`` (built from the config) from :func:`save_replay_buffer`.

    Raises:
        DataError: a damaged file, or arrays whose shape or dtype differ from the buffer's.
    """
    buffer = model.replay_buffer  # type: ignore[attr-defined]
    want = _buffer_arrays(buffer)
    try:
        with np.load(path, allow_pickle=False) as npz:
            got = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is not a readable replay buffer ({e}); start without it") from e
    missing = sorted((set(want) | {"pos", "full"}) - set(got))
    if missing:
        raise DataError(f"{path} lacks the replay-buffer arrays {missing}; the file is damaged")
    for name, arr in want.items():
        if got[name].shape != arr.shape or got[name].dtype != arr.dtype:
            raise DataError(
                f"{path}: replay array {name} is {got[name].dtype}{got[name].shape}, the buffer "
                f"of this config holds {arr.dtype}{arr.shape}; resume with the same config"
            )
        arr[...] = got[name]
    buffer.pos = int(got["pos"])
    buffer.full = bool(got["full"])


__all__ = [
    "STATE_FIELDS",
    "PickledModelError",
    "build_model",
    "load_replay_buffer",
    "pickled_fields",
    "read_model",
    "read_plain_data",
    "read_policy_state",
    "save_replay_buffer",
    "strip_pickled",
    "write_model",
]
