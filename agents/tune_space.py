"""The tuning search space and ``TuneConfig``: what Optuna may change, validated at load time.

A search space maps dotted config paths (``train.ppo.learning_rate``, ``env.window``,
``env.reward``, ``data.features``) to one parameter each:

* ``{type: float, low, high, log: false, step: null}`` (``optuna.Trial.suggest_float``),
* ``{type: int, low, high, step: 1, log: false}`` (``suggest_int``),
* ``{type: categorical, choices: [...]}`` (``suggest_categorical``); choices may be any YAML
  value (a feature set, a ``net_arch`` list, ...), or a mapping ``{label: value}`` that names
  them. Non-scalar choices without labels are shown to Optuna (and the dashboard) by their
  compact JSON.

:func:`space_problems` checks a space against the config model it tunes (the experiment config):
every path must name an existing field under ``data``/``env``/``train``; a float parameter must
address a float field, an int parameter an int field; ``low``, ``high`` and every choice must be
valid values of the field (its range constraints included). The experiment config runs it at load
so a bad space fails with the field path, before any trial is spent.

Example (YAML)::

    tune:
      n_trials: 40
      space:
        train.ppo.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
        train.ppo.n_steps: {type: int, low: 32, high: 256, step: 32}
        env.window: {type: int, low: 8, high: 48, step: 8}
        env.reward: {type: categorical, choices: [log_return, drawdown_penalised]}
"""

from __future__ import annotations

import copy
import json
import math
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, model_validator

from coinrl.pipeline.config import FrozenModel

Scalar = Union[None, bool, int, float, str]  # noqa: UP007  (used with isinstance below)
_SCALARS = (type(None), bool, int, float, str)

TUNABLE_ROOTS: tuple[str, ...] = ("data", "env", "train")
"""Top-level sections a search space may change."""

FROZEN_PATHS: dict[str, str] = {
    "data.source": "the market data must stay the same across trials",
    "data.format": "the market data must stay the same across trials",
    "data.clean": "cleaning changes which rows exist, so trials would see different splits",
    "data.split": "the validation and test rows must stay fixed across trials (and the test "
    "split unseen)",
    "train.seed": "every trial uses the experiment seed; tune the model, not the luck",
}
"""Paths (and everything under them) that may not be tuned, with the reason."""


class FloatParam(FrozenModel):
    """A float drawn from ``[low, high]`` (log-uniform when ``log``, on a grid when ``step``)."""

    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False
    step: Annotated[float, Field(gt=0.0)] | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low and high must be finite, got low={self.low} high={self.high}")
        if self.low > self.high:
            raise ValueError(f"low={self.low} is greater than high={self.high}; swap them")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined; drop one of them")
        if self.log and self.low <= 0:
            raise ValueError(f"log=true needs low > 0, got low={self.low}")
        return self


class IntParam(FrozenModel):
    """An int drawn from ``low, low + step, ..., <= high`` (log-uniform when ``log``)."""

    type: Literal["int"] = "int"
    low: int
    high: int
    step: Annotated[int, Field(ge=1)] = 1
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low={self.low} is greater than high={self.high}; swap them")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log=true needs low >= 1 and step = 1")
        return self


class CategoricalParam(FrozenModel):
    """One of ``choices``: a list of values, or a mapping ``{label: value}``."""

    type: Literal["categorical"] = "categorical"
    choices: tuple[Any, ...] | dict[str, Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CategoricalParam:
        labels = self.labels()
        if len(set(labels)) != len(labels):
            raise ValueError(f"choices must be distinct, got labels {list(labels)}")
        return self

    def labels(self) -> tuple[Scalar, ...]:
        """What Optuna samples (and the dashboard shows): the scalar choices themselves,
        the mapping's labels, or the compact JSON of non-scalar choices."""
        if isinstance(self.choices, dict):
            return tuple(self.choices)
        return tuple(_label(c) for c in self.choices)

    def values(self) -> tuple[Any, ...]:
        """The config values, in the order of :meth:`labels`."""
        if isinstance(self.choices, dict):
            return tuple(self.choices.values())
        return tuple(self.choices)

    def value_of(self, label: Scalar) -> Any:
        """The config value of a sampled label (a deep copy)."""
        for lab, val in zip(self.labels(), self.values(), strict=True):
            if lab == label and type(lab) is type(label):
                return copy.deepcopy(val)
        raise KeyError(f"{label!r} is not one of the labels {list(self.labels())}")


def _label(value: Any) -> Scalar:
    if isinstance(value, _SCALARS):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
"""One search-space entry, told apart by its ``type`` tag."""

Pruner = Literal["median", "successive_halving", "none"]
FoldMode = Literal["anchored", "rolling"]
Sampler = Literal["tpe", "random"]


class TuneConfig(FrozenModel):
    """The ``tune:`` section of an experiment: the search space and how the study runs.

    Attributes:
        space: dotted config path -> parameter (see the module docstring).
        n_trials: the study's budget, shared by every worker on every machine: a study stops
            proposing once it holds this many trials (a trial re-queued after its worker died
            counts once; a rerun with a larger ``n_trials`` continues the study).
        folds: walk-forward folds over the rows BEFORE the test split (train + validation); the
            objective is the mean validation score over them. 1 = the experiment's own
            train/validation split. Folds never reach into the test rows.
        fold_mode: ``anchored`` (every fold trains from the first row) or ``rolling``.
        sampler: ``tpe`` (Optuna's TPESampler) or ``random``.
        seed: sampler seed; None = the experiment seed. One worker with the same seed and
            space proposes the same trials; parallel workers get distinct derived seeds.
        startup_trials: random trials before TPE starts modelling.
        pruner: ``median`` (MedianPruner), ``successive_halving`` or ``none``.
        pruner_startup_trials: finished trials before the median pruner prunes anything.
        pruner_warmup_evals: intermediate reports of a trial before it may be pruned.
        storage: Optuna storage URL (``sqlite:///path.db``, ``postgresql://...``,
            ``:memory:``); None = the caller's default (the CLI: a SQLite file in the output
            folder).
        study_name: None = the experiment name.
        n_jobs: worker processes on this machine.
        heartbeat_interval_s: how often a running trial records that its worker is alive.
        grace_period_s: a running trial without a heartbeat for this long is failed and
            re-queued (its worker died); must exceed ``heartbeat_interval_s``.
        max_retry: how many times a trial whose worker died is re-queued.
        retrain_on_train_and_validation: train the best configuration again on train +
            validation (no early stopping) before its single test evaluation; otherwise it is
            trained on train, validated on validation, as ``coinrl train`` does.
        evaluate_test: evaluate the best configuration once on the test split (with the
            deflated Sharpe ratio over the number of trials).
    """

    space: dict[str, Param] = Field(min_length=1)
    n_trials: Annotated[int, Field(gt=0)] = 20
    folds: Annotated[int, Field(ge=1, le=20)] = 1
    fold_mode: FoldMode = "anchored"
    sampler: Sampler = "tpe"
    seed: int | None = None
    startup_trials: Annotated[int, Field(ge=0)] = 5
    pruner: Pruner = "median"
    pruner_startup_trials: Annotated[int, Field(ge=0)] = 2
    pruner_warmup_evals: Annotated[int, Field(ge=0)] = 1
    storage: str | None = None
    study_name: str | None = Field(default=None, min_length=1, max_length=200)
    n_jobs: Annotated[int, Field(ge=1, le=256)] = 1
    heartbeat_interval_s: Annotated[int, Field(ge=1)] = 30
    grace_period_s: Annotated[int, Field(ge=2)] = 120
    max_retry: Annotated[int, Field(ge=0)] = 2
    retrain_on_train_and_validation: bool = False
    evaluate_test: bool = True

    @model_validator(mode="after")
    def _check(self) -> TuneConfig:
        if self.grace_period_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"grace_period_s={self.grace_period_s} must exceed heartbeat_interval_s="
                f"{self.heartbeat_interval_s}, or live trials would be failed as stale"
            )
        return self


# --------------------------------------------------------------------------- validation


def _model_class(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _leaf_adapter(annotation: Any, metadata: list[Any]) -> TypeAdapter[Any]:
    if metadata:
        return TypeAdapter(Annotated[(annotation, *metadata)])
    return TypeAdapter(annotation)


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    return f"{loc + ': ' if loc else ''}{e['msg']}"


def _accepts_float(annotation: Any) -> bool:
    """Whether a non-integral float is a valid value type of ``annotation``."""
    if annotation is float:
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _accepts_float(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return any(_accepts_float(a) for a in get_args(annotation))
    return False


def resolve_field(model: type[BaseModel], path: str) -> tuple[Any, list[Any]]:
    """The annotation and constraint metadata of the field at dotted ``path`` in ``model``.

    Raises:
        KeyError: the path names no field (the message says which part and what exists).
    """
    parts = path.split(".")
    cls: type[BaseModel] = model
    for i, part in enumerate(parts):
        fields = cls.model_fields
        if part not in fields:
            where = ".".join(parts[:i]) or "the config"
            raise KeyError(
                f"{part!r} is not a field of {where} ({cls.__name__}); known fields: "
                f"{', '.join(sorted(fields))}"
            )
        info = fields[part]
        if i == len(parts) - 1:
            return info.annotation, list(info.metadata)
        sub = _model_class(info.annotation)
        if sub is None:
            raise KeyError(
                f"{'.'.join(parts[: i + 1])} is a value, not a section; "
                f"{'.'.join(parts[i + 1 :])!r} cannot be under it"
            )
        cls = sub
    raise KeyError(f"empty path {path!r}")  # pragma: no cover  (split never yields [])


def space_problems(
    space: Mapping[str, FloatParam | IntParam | CategoricalParam],
    model: type[BaseModel],
    prefix: str = "tune.space",
    *,
    roots: tuple[str, ...] | None = TUNABLE_ROOTS,
    frozen: Mapping[str, str] = FROZEN_PATHS,
) -> list[str]:
    """Check a search space against the config model it tunes.

    Args:
        space: dotted path -> parameter.
        model: the config class whose fields the paths address (the experiment config).
        prefix: how the space is addressed in error messages.
        roots: the top-level sections a path may start with (None: any field of ``model``).
        frozen: paths that may not be tuned (with everything under them) -> why not.

    Returns:
        One ``"<prefix>.<path>: problem"`` line per problem (empty when the space is valid).

    Example:
        >>> from coinrl.envs.config import EnvConfig
        >>> space_problems({"window": IntParam(low=0, high=8)}, EnvConfig, "space", roots=None)
        ['space.window: low=0 is not a valid value: Input should be greater than or equal to 1']
    """
    problems: list[str] = []
    for path, param in space.items():
        where = f"{prefix}.{path}"
        root = path.split(".", 1)[0]
        if roots is not None and root not in roots:
            problems.append(f"{where}: only {', '.join(r + '.*' for r in roots)} can be tuned")
            continue
        fixed = next((p for p in frozen if path == p or path.startswith(p + ".")), None)
        if fixed is not None:
            problems.append(f"{where}: {fixed} cannot be tuned: {frozen[fixed]}")
            continue
        try:
            annotation, metadata = resolve_field(model, path)
        except KeyError as e:
            problems.append(f"{where}: unknown parameter path: {e.args[0]}")
            continue
        adapter = _leaf_adapter(annotation, metadata)
        if isinstance(param, CategoricalParam):
            for label, value in zip(param.labels(), param.values(), strict=True):
                try:
                    adapter.validate_python(value)
                except ValidationError as e:
                    problems.append(
                        f"{where}: choice {label!r} is not a valid value: {_first_error(e)}"
                    )
            continue
        if isinstance(param, FloatParam) and not _accepts_float(annotation):
            problems.append(
                f"{where}: wrong type: a float parameter for a field of type "
                f"{getattr(annotation, '__name__', annotation)}; use type: int or categorical"
            )
            continue
        for end in ("low", "high"):
            value = getattr(param, end)
            try:
                adapter.validate_python(value, strict=True)
            except ValidationError as e:
                problems.append(f"{where}: {end}={value!r} is not a valid value: {_first_error(e)}")
    return problems


# --------------------------------------------------------------------------- sampling


def suggest_params(
    trial: Any, space: Mapping[str, FloatParam | IntParam | CategoricalParam]
) -> dict[str, Any]:
    """Draw every parameter of ``space`` from an Optuna trial.

    Args:
        trial: an ``optuna.Trial`` (the Optuna parameter name is the dotted path).
        space: the search space.

    Returns:
        Dotted path -> config value (categorical labels translated back to their values).
    """
    out: dict[str, Any] = {}
    for path, p in space.items():
        if isinstance(p, FloatParam):
            out[path] = trial.suggest_float(path, p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, IntParam):
            out[path] = trial.suggest_int(path, p.low, p.high, step=p.step, log=p.log)
        else:
            label = trial.suggest_categorical(path, list(p.labels()))
            out[path] = p.value_of(label)
    return out


def apply_params(config: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a nested config dict with each dotted path set to its value.

    Raises:
        KeyError: a path whose parent is missing or not a mapping.
    """
    out: dict[str, Any] = copy.deepcopy(dict(config))
    for path, value in params.items():
        parts = path.split(".")
        node: Any = out
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise KeyError(f"{path}: {part!r} is not a section of the config")
        node[parts[-1]] = copy.deepcopy(value)
    return out


def space_fingerprint(space: Mapping[str, FloatParam | IntParam | CategoricalParam]) -> str:
    """Canonical JSON of a space (paths sorted), for comparing a config with a stored study."""
    data = {k: v.model_dump(mode="json") for k, v in sorted(space.items())}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


__all__ = [
    "FROZEN_PATHS",
    "TUNABLE_ROOTS",
    "CategoricalParam",
    "FloatParam",
    "FoldMode",
    "IntParam",
    "Param",
    "TuneConfig",
    "apply_params",
    "resolve_field",
    "space_fingerprint",
    "space_problems",
    "suggest_params",
]
