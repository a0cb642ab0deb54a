"""The config reference (``docs/CONFIG.md``), generated from the pydantic models.

Every key of an experiment YAML with its type (and range), default, unit and meaning, read from
:class:`~coinrl.experiments.config.ExperimentConfig` and the models it composes: types and
ranges from the fields, defaults from a default-built config (so nested defaults such as
``train.recurrent_ppo.batch_size`` are the real ones), meanings from each model's
``Attributes:`` docstring section or the attribute's own docstring, units from the naming
convention of the house style (``_quote``, ``_bps``, ``_rate``, ``_bars``, ``_steps``, ...) and a
short table of exceptions. ``tests/experiments/test_config_docs.py`` regenerates the page and
compares it with the file, so the reference cannot drift from the code.

Regenerate after changing a config model::

    python -m coinrl.experiments.config_docs docs/CONFIG.md
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from coinrl.envs.config import EnvConfig, PortfolioEnvConfig
from coinrl.pipeline.source import DataConfig, PortfolioDataConfig

from .config import ExperimentConfig, PortfolioExperimentConfig

HEADER = """# Config reference

Every key of an experiment YAML (`coinrl train CONFIG.yaml`, `coinrl tune`, `coinrl walkforward`),
with its type, default, unit and meaning. A key left out takes its default; unknown keys and
out-of-range values are refused at load time with the key's dotted path. Any key can be set on
the command line as `key.path=value` (e.g. `train.total_timesteps=50000`).

Generated from the pydantic models by `python -m coinrl.experiments.config_docs docs/CONFIG.md`
(`tests/experiments/test_config_docs.py` fails when this page and the code disagree): edit the
models' docstrings, not this page.

Units: fractions are plain numbers (`0.001` = 0.1 %), `bps` are basis points (1 bp = 0.0001),
steps are env steps summed over all envs, timestamps are UTC.
"""

PORTFOLIO_NOTE = """A `data:` section with a `sources:` or `symbols:` key makes the experiment a portfolio:
one cross-margined account over the listed assets on one clock. Every key above still applies
(`data.features` runs per asset, `data.norm` per asset or pooled), `env.action` defaults to
`continuous` (target weights), and these keys are added. `train.algo` is `ppo`, `a2c` or `sac`
(DQN cannot choose one position per asset)."""

# name (or dotted-path suffix) -> unit, where the name alone does not say it
UNITS: dict[str, str] = {
    "window": "bars",
    "positions": "exposure (notional / equity)",
    "max_leverage": "x equity",
    "gamma": "per bar",
    "n_envs": "envs",
    "n_steps": "steps per env",
    "batch_size": "samples",
    "buffer_size": "transitions",
    "learning_starts": "env steps",
    "target_update_interval": "env steps",
    "train_freq": "vector-env steps",
    "net_arch": "units per layer",
    "learning_rate": "per optimiser step",
    "split.train": "fraction of bars",
    "split.validation": "fraction of bars",
    "split.test": "fraction of bars",
    "initial_cash_quote": "quote currency",
    "impact_coef": "fraction per unit of participation",
    "borrow_rate_per_bar": "fraction per bar",
    "norm.clip": "standard deviations",
    "exploration_fraction": "fraction of total_timesteps",
    "lstm_hidden_size": "units",
    "horizons": "bars",
    "windows": "bars",
    "fast": "bars",
    "slow": "bars",
    "signal": "bars",
}
SUFFIX_UNITS: tuple[tuple[str, str], ...] = (
    ("_bps", "bps"),
    ("_quote", "quote currency"),
    ("_base", "base currency"),
    ("_bars", "bars"),
    ("timesteps", "env steps"),
    ("_steps", "env steps"),
    ("_interval_s", "seconds"),
    ("_period_s", "seconds"),
    ("_ms", "ms since epoch (UTC)"),
    ("_rate", "fraction"),
    ("_frac", "fraction"),
    ("_eps", "probability"),
)


def _unit(path: str, field: FieldInfo) -> str:
    for key, unit in UNITS.items():
        if path == key or path.endswith("." + key):
            return unit
    name = path.rsplit(".", 1)[-1]
    for suffix, unit in SUFFIX_UNITS:
        if name.endswith(suffix):
            return unit
    bounds = {type(m).__name__: m for m in field.metadata}
    if "Le" in bounds and ("Ge" in bounds or "Gt" in bounds) and getattr(bounds["Le"], "le", None) == 1:
        return "fraction"
    return ""


def _attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """Field meanings from the class docstring's ``Attributes:`` section and attribute docstrings."""
    docs: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, BaseModel)) or klass is BaseModel:
            continue
        doc = inspect.getdoc(klass) or ""
        m = re.search(r"^Attributes:\n((?:[ \t]+.*\n?|\n)+)", doc, re.MULTILINE)
        if m:
            body = textwrap.dedent(m.group(1))
            for entry in re.split(r"\n(?=\S)", body.strip()):
                names, _, text = entry.partition(":")
                for name in names.split(","):
                    docs[name.strip()] = " ".join(text.split())
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body_nodes = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body_nodes, body_nodes[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _constraints(metadata: list[Any]) -> str:
    ops = {"Gt": (">", "gt"), "Ge": (">=", "ge"), "Lt": ("<", "lt"), "Le": ("<=", "le"),
           "MinLen": ("len >=", "min_length"), "MaxLen": ("len <=", "max_length")}
    parts = []
    for m in metadata:
        kind = type(m).__name__
        if kind in ops:
            op, attr = ops[kind]
            value = getattr(m, attr)
            parts.append(f"{op} {value:g}" if isinstance(value, float) else f"{op} {value}")
        elif getattr(m, "pattern", None):
            parts.append(f"matches `{m.pattern}`")
    return ", ".join(parts)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        inner, *meta = args
        extra = [x for m in meta for x in (m.metadata if isinstance(m, FieldInfo) else [m])]
        c = _constraints(extra)
        name = _type_name(inner)
        return f"{name} ({c})" if c else name
    if origin is typing.Literal:
        return " | ".join(repr(a).replace("'", '"') for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin in (tuple, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping {_type_name(args[0])} -> {_type_name(args[1])}"
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp)


def _models_in(tp: Any) -> list[type[BaseModel]]:
    """Pydantic models a field's type holds (itself, in a union, a list or a mapping value)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    found: list[type[BaseModel]] = []
    for a in typing.get_args(tp):
        for m in _models_in(a):
            if m not in found:
                found.append(m)
    return found


def _fmt_default(value: Any) -> str:
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, tuple | list) and value and isinstance(value[0], BaseModel):
        kinds = [str(getattr(v, "kind", type(v).__name__)) for v in value]
        return f"{len(value)} entries: " + ", ".join(kinds)
    if isinstance(value, tuple):
        value = list(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _cell(text: str) -> str:
    """Markdown table cell: reST roles and double backticks become Markdown code, pipes escaped."""
    text = re.sub(r":\w+:`~?([\w.]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text or "")
    return text.replace("``", "`").replace("|", "\\|").replace("\n", " ")


def _section(
    lines: list[str], title: str, path: str, model: type[BaseModel], instance: BaseModel | None, note: str = "",
    only: frozenset[str] | None = None,
) -> None:
    docs = _attribute_docs(model)
    summary = (inspect.getdoc(model) or "").split("\n\n")[0].replace("\n", " ")
    lines += ["", f"## {title}", "", f"`{model.__name__}`: {summary}" + (f" {note}" if note else ""), ""]
    lines += ["| key | type | default | unit | meaning |", "|---|---|---|---|---|"]
    subs: list[tuple[str, str, type[BaseModel], BaseModel | None, str]] = []
    for name, field in model.model_fields.items():
        if only is not None and name not in only:
            continue
        key = f"{path}.{name}" if path else name
        value = getattr(instance, name) if instance is not None else (
            PydanticUndefined if field.is_required() else field.get_default(call_default_factory=True)
        )
        tp = _type_name(field.annotation)
        c = _constraints(list(field.metadata))
        if c:
            tp = f"{tp} ({c})"
        nested = _models_in(field.annotation)
        shown = "(section)" if isinstance(value, BaseModel) else _fmt_default(value)
        lines.append(
            f"| `{key}` | {_cell(tp)} | {_cell(shown)} | {_cell(_unit(key, field))} | {_cell(docs.get(name, ''))} |"
        )
        if len(nested) == 1 and (isinstance(value, BaseModel) or value is None):
            sub = nested[0]
            subs.append((key, key, sub, value if isinstance(value, BaseModel) else None,
                         "Optional: absent unless given." if value is None else ""))
        else:
            for sub in nested:
                kind = _discriminator_value(sub)
                item = f"{key}[]" if typing.get_origin(field.annotation) in (tuple, list) else f"{key}.<name>"
                subs.append((f"{item} ({kind})" if kind else item, item, sub, None, ""))
    for sub_title, sub_path, sub_model, sub_instance, sub_note in subs:
        _section(lines, sub_title, sub_path, sub_model, sub_instance, sub_note)


def _discriminator_value(model: type[BaseModel]) -> str:
    for name in ("kind", "type"):
        field = model.model_fields.get(name)
        if field is not None and typing.get_origin(field.annotation) is typing.Literal:
            return f"{name}: {typing.get_args(field.annotation)[0]}"
    return ""


def config_reference() -> str:
    """The Markdown text of ``docs/CONFIG.md``: every experiment key, type, default, unit, meaning."""
    lines = [HEADER.rstrip()]
    _section(lines, "Experiment (top level)", "", ExperimentConfig, ExperimentConfig())
    lines += ["", "# Portfolio experiments", "", PORTFOLIO_NOTE]
    pf = PortfolioExperimentConfig()
    for key, model, base in (("data", PortfolioDataConfig, DataConfig), ("env", PortfolioEnvConfig, EnvConfig)):
        extra = frozenset(model.model_fields) - frozenset(base.model_fields)
        _section(lines, f"{key} (portfolio)", key, model, getattr(pf, key),
                 f"Keys beside those of `{key}` above.", only=extra)
    return "\n".join(lines) + "\n"


def write_config_reference(path: str | Path) -> Path:
    """Write :func:`config_reference` to ``path`` (``docs/CONFIG.md``)."""
    p = Path(path)
    p.write_text(config_reference(), encoding="utf-8")
    return p


if __name__ == "__main__":  # pragma: no cover - exercised by the docs test through the function
    write_config_reference(sys.argv[1] if len(sys.argv) > 1 else "docs/CONFIG.md")


__all__ = ["config_reference", "write_config_reference"]
