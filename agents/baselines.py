"""Baseline strategies as target-exposure arrays, played through the same env and books.

A baseline is just a sequence of ``T`` target exposures (one per decision, see
:mod:`coinrl.agents.rollout`); :func:`run_baselines` turns them into env actions and steps them
all together through :func:`~coinrl.agents.rollout.simulate_actions`, with the agent's env
config, so agent and baselines pay the same fees, slippage and rules.

* ``buy_and_hold``: the largest long exposure up to 1 (all equity long), held throughout.
* ``flat``: no position (the exposure closest to 0), i.e. cash.
* ``ma_crossover`` (when asked for): long (buy-and-hold's exposure) while the fast simple
  moving average of the close is above the slow one, flat otherwise; both averages use closes
  up to the decision bar only (``ta``'s SMA), and the first ``slow`` bars of a split are flat.
* ``random``: a policy that changes its target exactly as often as the agent did (same number
  of decisions that trade), at uniformly random bars, to uniformly random other exposures
  (one of the discrete positions, or uniform in the bounds for a continuous env). Its metrics
  are the MEAN over ``n_random`` independent draws, with their spread (std and 5/50/95 %
  quantiles of the total return); verdicts judge a strategy against all draws
  (:func:`~coinrl.agents.stats.verdict_from_returns` with the draws stacked), never one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from coinrl.envs.config import EnvConfig
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import ConfigError

from .rollout import Rollout, evaluation_config, n_decisions, simulate_actions, targets_to_actions

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

BASELINES = ("buy_and_hold", "flat", "random")

MA_CROSSOVER_BARS = (50, 200)
"""Default (fast, slow) windows of the moving-average crossover baseline, in bars."""


def _choices(env_config: EnvConfig) -> F64:
    return np.asarray(env_config.discrete_positions, dtype=np.float64)


def long_exposure(env_config: EnvConfig) -> float:
    """Exposure of buy-and-hold: 1 (all equity long), or the nearest the env allows."""
    if env_config.action == "discrete":
        pos = _choices(env_config)
        longs = pos[pos > 0]
        if len(longs) == 0:
            return float(pos.max())
        at_most_one = longs[longs <= 1.0]
        return float(at_most_one.max() if len(at_most_one) else longs.min())
    return float(min(1.0, env_config.exposure_bounds[1]))


def flat_exposure(env_config: EnvConfig) -> float:
    """Exposure of the flat baseline: 0, or the discrete position closest to it."""
    if env_config.action == "discrete":
        pos = _choices(env_config)
        return float(pos[np.abs(pos).argmin()])
    lo, hi = env_config.exposure_bounds
    return float(min(max(0.0, lo), hi))


def buy_and_hold_targets(n_steps: int, env_config: EnvConfig) -> F64:
    """``n_steps`` targets all equal to :func:`long_exposure`."""
    return np.full(n_steps, long_exposure(env_config))


def flat_targets(n_steps: int, env_config: EnvConfig) -> F64:
    """``n_steps`` targets all equal to :func:`flat_exposure`."""
    return np.full(n_steps, flat_exposure(env_config))


def ma_crossover_signal(
    close_quote: npt.ArrayLike, fast_bars: int, slow_bars: int, long: float = 1.0, flat: float = 0.0
) -> F64:
    """Per-bar target exposure of a moving-average crossover (causal).

    ``signal[t]`` is ``long`` when ``SMA(close, fast)[t] > SMA(close, slow)[t]`` and ``flat``
    otherwise (also while the slow average is still warming up); it uses closes ``<= t`` only,
    so a decision at bar t's close may act on it.

    Args:
        close_quote: closes, one per bar.
        fast_bars, slow_bars: window lengths in bars, ``1 <= fast_bars < slow_bars``.
        long, flat: the exposures of the two states.

    Returns:
        ``(len(close_quote),)`` float64 target exposures.

    Raises:
        ConfigError: windows that are not ``1 <= fast < slow``.
    """
    import pandas as pd
    from ta.trend import SMAIndicator

    if not 1 <= fast_bars < slow_bars:
        raise ConfigError(
            f"moving-average crossover needs 1 <= fast_bars < slow_bars, got {fast_bars}, {slow_bars}"
        )
    close = pd.Series(np.asarray(close_quote, dtype=np.float64))
    fast = SMAIndicator(close, window=fast_bars, fillna=False).sma_indicator().to_numpy()
    slow = SMAIndicator(close, window=slow_bars, fillna=False).sma_indicator().to_numpy()
    up = np.greater(fast, slow, where=np.isfinite(slow), out=np.zeros(len(close), dtype=bool))
    return np.where(up, float(long), float(flat))


def ma_crossover_targets(
    data: MarketData, env_config: EnvConfig, fast_bars: int, slow_bars: int
) -> F64:
    """The ``T`` decision targets of :func:`ma_crossover_signal` over a split.

    Decision ``k`` is taken at bar ``window - 1 + k`` (see :mod:`coinrl.agents.rollout`).
    """
    sig = ma_crossover_signal(
        data.close, fast_bars, slow_bars, long_exposure(env_config), flat_exposure(env_config)
    )
    w = env_config.window
    return sig[w - 1 : w - 1 + n_decisions(data, env_config)]


def count_changes(targets: npt.ArrayLike, threshold: float = 0.0, start: float = 0.0) -> int:
    """Decisions whose target differs from the previous one (from ``start``) by more than
    ``threshold`` (exposure units)."""
    x = np.concatenate([[start], np.asarray(targets, dtype=np.float64)])
    return int((np.abs(np.diff(x)) > threshold).sum())


def random_targets(
    n_steps: int,
    env_config: EnvConfig,
    n_changes: int,
    rng: np.random.Generator,
) -> F64:
    """Targets that change exactly ``n_changes`` times, at random bars, to random exposures.

    The sequence starts flat; each change moves to a different discrete position (drawn
    uniformly) or, for a continuous env, to an exposure drawn uniformly in the bounds.

    Args:
        n_steps: decisions ``T``.
        env_config: gives the exposures to draw from.
        n_changes: how many decisions change the target (clipped to ``[0, n_steps]``).
        rng: the random generator (seed it for reproducible baselines).

    Returns:
        ``(n_steps,)`` target exposures.
    """
    k = int(min(max(n_changes, 0), n_steps))
    first = flat_exposure(env_config)
    if k == 0:
        return np.full(n_steps, first)
    bars = np.sort(rng.choice(n_steps, size=k, replace=False))
    pos = _choices(env_config)
    lo, hi = env_config.exposure_bounds
    values = np.empty(k)
    cur = first
    for j in range(k):
        if env_config.action == "discrete":
            others = pos[pos != cur]
            cur = float(others[rng.integers(len(others))])
        else:
            cur = float(rng.uniform(lo, hi))
        values[j] = cur
    # the target of decision i is the value of the last change at or before i
    last_change = np.searchsorted(bars, np.arange(n_steps), side="right") - 1
    return np.where(last_change >= 0, values[np.maximum(last_change, 0)], first)


def _mean_metrics(rollouts: list[Rollout]) -> dict[str, float]:
    """Metrics averaged over draws, plus the spread of their total returns."""
    ms = [r.metrics() for r in rollouts]
    keys = ms[0].keys()
    out = {}
    for key in keys:
        vals = np.asarray([m[key] for m in ms], dtype=np.float64)
        finite = vals[np.isfinite(vals)]
        out[key] = float(finite.mean()) if len(finite) else float(vals[0])
    totals = np.asarray([m["total_return"] for m in ms], dtype=np.float64)
    # growth is annualised from the mean total return, never averaged after annualising
    # (compounding is convex: the mean of annualised returns overstates the typical draw)
    if math.isfinite(out.get("annualised_return", math.nan)):
        n_bars, ppy = rollouts[0].n_steps, rollouts[0].periods_per_year
        growth = 1.0 + float(totals.mean())
        out["annualised_return"] = -1.0 if growth <= 0 else float(growth ** (ppy / n_bars) - 1.0)
        mdd = out["max_drawdown"]
        out["calmar"] = out["annualised_return"] / mdd if mdd > 0 else math.nan
    out["total_return_std"] = float(np.std(totals))
    out["n_draws"] = float(len(ms))
    out["draws_mean_total_return"] = float(totals.mean())
    out["draws_std_total_return"] = float(np.std(totals))
    for q in (5, 50, 95):
        out[f"draws_q{q:02d}_total_return"] = float(np.quantile(totals, q / 100.0))
    out["draws_min_total_return"] = float(totals.min())
    out["draws_max_total_return"] = float(totals.max())
    return out


@dataclass(eq=False)
class BaselineRuns:
    """The baselines of one split.

    Attributes:
        metrics: metrics per baseline name (``random``: the mean over its draws, with
            ``draws_*`` spread keys, ``n_draws`` and ``n_changes``).
        rollouts: one rollout per baseline (``random``: its first draw, for charts).
        random_draws: every draw of the random policy (verdicts are judged against all).
    """

    metrics: dict[str, dict[str, float]]
    rollouts: dict[str, Rollout]
    random_draws: list[Rollout] = field(default_factory=list)


def play_baselines(
    data: MarketData,
    env_config: EnvConfig | dict[str, Any] | None,
    *,
    agent_targets: npt.ArrayLike | None = None,
    n_random: int = 5,
    seed: int = 0,
    ma_crossover: tuple[int, int] | None = None,
) -> BaselineRuns:
    """Play buy-and-hold, flat (the MA crossover) and every draw of the matched random policy.

    Arguments as for :func:`run_baselines`; returns all random draws as well.
    """
    cfg = evaluation_config(env_config)
    t_steps = n_decisions(data, cfg)
    if agent_targets is None:
        n_changes = max(1, t_steps // 50)
    else:
        n_changes = count_changes(agent_targets, threshold=cfg.rebalance_threshold)
    rng = np.random.default_rng(seed)
    rows = [buy_and_hold_targets(t_steps, cfg), flat_targets(t_steps, cfg)]
    if ma_crossover is not None:
        rows.append(ma_crossover_targets(data, cfg, *ma_crossover))
    first_random = len(rows)
    rows += [random_targets(t_steps, cfg, n_changes, rng) for _ in range(max(1, n_random))]
    rollouts = simulate_actions(data, cfg, targets_to_actions(np.stack(rows), cfg))
    draws = list(rollouts[first_random:])
    metrics = {
        "buy_and_hold": rollouts[0].metrics(),
        "flat": rollouts[1].metrics(),
        "random": _mean_metrics(draws),
    }
    metrics["random"]["n_changes"] = float(n_changes)
    named = {"buy_and_hold": rollouts[0], "flat": rollouts[1]}
    if ma_crossover is not None:
        metrics["ma_crossover"] = rollouts[2].metrics()
        named["ma_crossover"] = rollouts[2]
    named["random"] = draws[0]
    logger.debug(
        "baselines symbol=%s steps=%d random_changes=%d draws=%d",
        data.symbol, t_steps, n_changes, len(draws),
    )
    return BaselineRuns(metrics, named, draws)


def run_baselines(
    data: MarketData,
    env_config: EnvConfig | dict[str, Any] | None,
    *,
    agent_targets: npt.ArrayLike | None = None,
    n_random: int = 5,
    seed: int = 0,
    ma_crossover: tuple[int, int] | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, Rollout]]:
    """Play buy-and-hold, flat and the matched random policy over ``data`` through the env.

    Args:
        data: the split.
        env_config: the agent's env config (same costs and rules).
        agent_targets: the agent's ``T`` target exposures; the random baseline makes as many
            trading decisions (changes larger than ``rebalance_threshold``). ``None``: the
            random policy changes its target on 2 % of the bars.
        n_random: independent random draws averaged in the ``random`` metrics.
        seed: seed of the random baseline.
        ma_crossover: ``(fast_bars, slow_bars)`` to add the ``ma_crossover`` baseline (see
            :func:`ma_crossover_signal`); None leaves it out.

    Returns:
        ``(metrics, rollouts)``: metrics per baseline name (``random``: the mean over draws,
        plus ``total_return_std`` and the ``draws_*`` spread across them) and one rollout per
        baseline (the first random draw for ``random``; :func:`play_baselines` gives all).
    """
    runs = play_baselines(
        data, env_config, agent_targets=agent_targets, n_random=n_random, seed=seed,
        ma_crossover=ma_crossover,
    )
    return runs.metrics, runs.rollouts


__all__ = [
    "BASELINES",
    "MA_CROSSOVER_BARS",
    "BaselineRuns",
    "buy_and_hold_targets",
    "count_changes",
    "flat_exposure",
    "flat_targets",
    "long_exposure",
    "ma_crossover_signal",
    "ma_crossover_targets",
    "play_baselines",
    "random_targets",
    "run_baselines",
]
