"""Execution-cost overrides at backtest time, and the cost sweep: where does the edge vanish?

A bundle's env config fixes what the policy sees (features, window, spaces, account state);
at backtest time only the COST of executing its decisions may change (:data:`COST_KEYS`):
fees, slippage and impact, borrow and funding, lot rules, the fill delay. Anything else would
feed the policy observations it was not trained on, so :func:`apply_cost_overrides` refuses it
with a :class:`~coinrl.pipeline.errors.ConfigError` that says what can be changed.

:func:`cost_sweep` re-runs the same policy and the baselines with fees and slippage scaled
(0.5x, 1x, 2x, 4x by default) and reports, per multiplier, the strategy's return and its margin
over each baseline; :func:`edge_vanishes_at` reads the multiplier where a margin turns <= 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from coinrl.envs.config import EnvConfig
from coinrl.pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

COST_KEYS = (
    "taker_fee_rate",
    "maker_fee_rate",
    "slippage_bps",
    "impact_coef",
    "max_impact_frac",
    "min_notional_quote",
    "lot_size_base",
    "borrow_rate_per_bar",
    "use_funding",
    "maintenance_margin_rate",
    "delay_bars",
)
"""``env.*`` keys a backtest may override: execution costs and rules, never what the policy
observes (features, window, positions, action/observation spaces, initial cash, reward)."""

SWEEP_KEYS = ("taker_fee_rate", "maker_fee_rate", "slippage_bps", "impact_coef")
"""The keys :func:`cost_sweep` scales (fees and slippage, impact included)."""

DEFAULT_MULTIPLIERS = (0.5, 1.0, 2.0, 4.0)
"""Cost multipliers of ``coinrl backtest --cost-sweep``."""


def parse_cost_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["env.taker_fee_rate=0.0005", ...]`` as ``{"taker_fee_rate": 0.0005}``.

    Values are read as YAML scalars (``0.0005``, ``true``, ``2``).

    Raises:
        ConfigError: a malformed override, or a key that is not an execution cost.
    """
    out: dict[str, Any] = {}
    for raw in overrides:
        key, sep, value = raw.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"cost override {raw!r} is not key=value; e.g. env.taker_fee_rate=0.0005")
        name = key.removeprefix("env.")
        if name not in COST_KEYS:
            raise ConfigError(
                f"{key} cannot be changed at backtest time: only execution costs can "
                f"(env.{', env.'.join(COST_KEYS)}); features, window and spaces are what the "
                "policy was trained on; retrain to change them"
            )
        try:
            out[name] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"cost override {raw!r}: cannot read the value ({e})") from e
    return out


def apply_cost_overrides(env_config: EnvConfig, overrides: Mapping[str, Any] | Sequence[str]) -> EnvConfig:
    """``env_config`` with execution costs replaced (validated as the config would be; a
    :class:`~coinrl.envs.config.PortfolioEnvConfig` stays one).

    Args:
        env_config: the bundle's env config.
        overrides: ``{"taker_fee_rate": 0.0005}`` or ``["env.taker_fee_rate=0.0005"]``.

    Raises:
        ConfigError: a key that is not in :data:`COST_KEYS`, or an invalid value.
    """
    updates = (
        dict(overrides) if isinstance(overrides, Mapping) else parse_cost_overrides(overrides)
    )
    bad = [k for k in updates if k not in COST_KEYS]
    if bad:
        raise ConfigError(
            f"{', '.join(bad)} cannot be changed at backtest time: only execution costs can "
            f"({', '.join(COST_KEYS)})"
        )
    try:
        return type(env_config).model_validate({**env_config.model_dump(), **updates})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"cost override env.{where}: {first['msg']}") from e


def scaled_costs(env_config: EnvConfig, multiplier: float) -> EnvConfig:
    """``env_config`` with fees, slippage and impact (:data:`SWEEP_KEYS`) times ``multiplier``
    (a portfolio's per-asset ``asset_costs`` as well)."""
    if not multiplier >= 0:
        raise ConfigError(f"cost multiplier must be >= 0, got {multiplier}")
    updates = {k: float(getattr(env_config, k)) * multiplier for k in SWEEP_KEYS}
    out = apply_cost_overrides(env_config, updates)
    per_asset = getattr(out, "asset_costs", None)  # a portfolio's per-asset overrides scale too
    if per_asset:
        scaled = {sym: {k: (v * multiplier if k in SWEEP_KEYS and v is not None else v)
                        for k, v in c.model_dump().items()} for sym, c in per_asset.items()}
        out = type(out).model_validate({**out.model_dump(), "asset_costs": scaled})
    return out


@dataclass(frozen=True)
class CostSweepRow:
    """One cost level of a sweep.

    Attributes:
        multiplier: fees and slippage times this.
        taker_fee_rate, slippage_bps: the costs at this level.
        total_return, sharpe, fees_paid_quote: the strategy's.
        baseline_total_return: each deterministic baseline's total return at the same costs.
        margin: strategy minus each baseline (total return).
    """

    multiplier: float
    taker_fee_rate: float
    slippage_bps: float
    total_return: float
    sharpe: float
    fees_paid_quote: float
    baseline_total_return: dict[str, float] = field(default_factory=dict)
    margin: dict[str, float] = field(default_factory=dict)


def edge_vanishes_at(rows: Sequence[CostSweepRow], baseline: str) -> float | None:
    """The cost multiplier where the margin over ``baseline`` reaches 0 (linear between the
    swept levels); ``0.0`` when there is no edge even at the lowest level, None when the edge
    survives the highest."""
    pts = sorted((r.multiplier, r.margin[baseline]) for r in rows if baseline in r.margin)
    if not pts:
        return None
    if pts[0][1] <= 0:
        return 0.0
    for (m0, e0), (m1, e1) in zip(pts, pts[1:], strict=False):
        if e1 <= 0 < e0:
            return m0 + (m1 - m0) * e0 / (e0 - e1)
    return None


def sweep_summary(rows: Sequence[CostSweepRow]) -> list[str]:
    """One sentence per baseline: where the strategy's edge over it vanishes."""
    if not rows:
        return []
    top = max(r.multiplier for r in rows)
    low = min(r.multiplier for r in rows)
    out = []
    for name in rows[0].margin:
        at = edge_vanishes_at(rows, name)
        if at is None:
            out.append(f"edge over {name} survives every cost level up to {top:g}x")
        elif at == 0.0:
            out.append(f"no edge over {name} even at {low:g}x costs")
        else:
            out.append(f"edge over {name} vanishes at about {at:.2g}x costs")
    return out


def cost_sweep(
    run: Callable[[EnvConfig], Any],
    env_config: EnvConfig,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
) -> list[CostSweepRow]:
    """Re-run a backtest with fees and slippage scaled.

    Args:
        run: ``env_config -> BacktestResult`` (or a portfolio's ``PortfolioBacktestResult``;
            the same strategy and data every time; the policy is re-run because its
            observation includes the account it built).
        env_config: the costs at 1x.
        multipliers: cost levels.

    Returns:
        One :class:`CostSweepRow` per multiplier, in order.
    """
    rows = []
    for k in multipliers:
        cfg = scaled_costs(env_config, float(k))
        res = run(cfg)
        base = {  # the deterministic baselines (a randomised one's mean is no margin to cross)
            name: float(m["total_return"])
            for name, m in res.baseline_metrics().items() if not m.get("n_draws")
        }
        tr = float(res.metrics["total_return"])
        rows.append(CostSweepRow(
            multiplier=float(k),
            taker_fee_rate=cfg.taker_fee_rate,
            slippage_bps=cfg.slippage_bps,
            total_return=tr,
            sharpe=float(res.metrics["sharpe"]),
            fees_paid_quote=float(res.metrics["fees_paid_quote"]),
            baseline_total_return=base,
            margin={name: tr - v for name, v in base.items()},
        ))
        logger.info("cost sweep multiplier=%g total_return=%.4f", k, tr)
    return rows


def sweep_to_dict(rows: Sequence[CostSweepRow]) -> dict[str, Any]:
    """JSON-ready ``{"rows": [...], "summary": [...]}`` (what ``metrics.json`` keeps)."""
    from dataclasses import asdict

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return {
        "rows": [{k: clean(v) for k, v in asdict(r).items()} for r in rows],
        "summary": sweep_summary(rows),
    }


__all__ = [
    "COST_KEYS",
    "DEFAULT_MULTIPLIERS",
    "SWEEP_KEYS",
    "CostSweepRow",
    "apply_cost_overrides",
    "cost_sweep",
    "edge_vanishes_at",
    "parse_cost_overrides",
    "scaled_costs",
    "sweep_summary",
    "sweep_to_dict",
]
