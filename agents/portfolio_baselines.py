"""Portfolio baselines on the same data, costs and books, and the verdicts against them.

Every baseline is a weight *plan* played through
:func:`~coinrl.agents.portfolio_rollout.simulate_plans` with the agent's env config (so it
pays the same fees, slippage, funding and borrow, under the same budget and margin rules), all
of them stepped together as accounts of one vector env. A plan row of NaN means *hold*: the
decision's target is the account's drifted weights at its close (no rebalance beyond the
drift to the next open, which the env's ``rebalance_threshold`` suppresses).

* ``cash``: no position.
* ``equal_weight_hold``: 1/N of ``level`` in each asset at the first decision, then held.
* ``crp_daily`` / ``crp_weekly``: constant-rebalanced 1/N: back to 1/N at the first decision
  and at each fill that opens a new UTC day (week, from Monday 00:00 UTC); held in between.
* ``hold_<SYMBOL>``: ``level`` in that one asset, held (each asset's buy-and-hold).
* ``random_weights``: ``n_random`` seeded draws (a distribution, never one draw) that trade as
  often as the agent did (its number of decisions that traded) at random decisions, towards
  random weights of the agent's mean gross exposure (long-only unless the agent shorted and
  the env allows it), each step a fraction ``alpha`` of the way, ``alpha`` chosen per draw so
  the planned turnover (``sum |w_new - w_old|``) equals the agent's realised turnover (traded
  notional over equity, summed over steps); a draw that cannot reach it moves all the way
  (``alpha = 1``). Held in between. The books then skip trades under the rebalance
  threshold and weights drift, so the draws are played once, their mean realised turnover
  measured, and (while it misses by more than 5 %, at most 3 times) planned again for the
  corrected target:
  ``target_turnover`` is the agent's, ``realised_turnover`` the draws' mean. Its metrics are
  the mean over draws with their spread; its verdict pools all draws.

``level`` is ``min(1, gross budget, net budget)``: unlevered, fully invested when allowed. An
asset not yet tradable at the first decision (a later listing) is not bought by the hold
baselines (their one purchase finds no fill); the rebalanced ones buy it at their next
rebalance.
The env's rules bind the baselines as they bind the agent: a rebalance smaller than
``rebalance_threshold`` of equity is not traded (so a quiet day's ``crp_daily`` may hold), and
a fully invested 1/N rebalance that the costs push over the gross budget is scaled down by the
books (counted in ``scaled_rebalances``).
Verdicts use the project's paired block bootstrap
(:func:`~coinrl.agents.stats.verdict_from_returns`): total-return margin after costs, ``P(agent
better)``, an interval, and a plain line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from coinrl.envs.actions import ActionMap
from coinrl.envs.config import PortfolioEnvConfig
from coinrl.pipeline.dataset import PortfolioData

from .baselines import _mean_metrics
from .metrics import can_annualise, simple_returns
from .portfolio_rollout import (
    PortfolioConfigLike,
    PortfolioRollout,
    portfolio_decisions,
    simulate_plans,
    weights_config,
)
from .stats import Verdict, verdict_from_returns

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

DAY_MS = 86_400_000
WEEK_OFFSET_DAYS = 3
"""Epoch day 0 (1970-01-01) was a Thursday: ``(day + 3) // 7`` counts weeks from Mondays."""
RANDOM_NAME = "random_weights"
DEFAULT_N_RANDOM = 20
TURNOVER_TOLERANCE = 0.05
"""Relative miss of the random draws' mean realised turnover that triggers a recalibration."""
CALIBRATION_PASSES = 3
"""At most this many re-plans of the random draws (each one vector-env run of the draws)."""


def equal_level(cfg: PortfolioEnvConfig) -> float:
    """The total weight of the 1/N baselines: ``min(1, gross budget, net budget)``."""
    return float(min(1.0, cfg.gross_budget, cfg.net_budget))


def rebalance_decisions(data: PortfolioData, cfg: PortfolioEnvConfig, period_ms: int,
                        offset_ms: int = 0) -> npt.NDArray[np.bool_]:
    """``(T,)`` True at the first decision and at each decision whose fill opens a new period
    (``(ts_ms + offset_ms) // period_ms`` changes from the decision bar to the fill bar)."""
    t_steps = portfolio_decisions(data, cfg)
    w0 = cfg.window - 1
    ts = np.asarray(data.ts_ms, dtype=np.int64)
    period = (ts + offset_ms) // period_ms
    out = period[w0 + 1 : w0 + 1 + t_steps] != period[w0 : w0 + t_steps]
    out[0] = True
    return np.asarray(out)


def _plan(t_steps: int, n_assets: int, first: F64, rebalance: npt.NDArray[np.bool_] | None = None) -> F64:
    """Target ``first`` at decision 0 (and wherever ``rebalance``), hold (NaN) elsewhere."""
    p = np.full((t_steps, n_assets), np.nan)
    p[0] = first
    if rebalance is not None:
        p[rebalance] = first
    return p


def deterministic_plans(data: PortfolioData, cfg: PortfolioEnvConfig) -> dict[str, F64]:
    """The deterministic baselines' plans ``(T, A)`` by name (see module doc)."""
    t_steps = portfolio_decisions(data, cfg)
    a = data.n_assets
    level = equal_level(cfg)
    ew = np.full(a, level / a)
    plans = {
        "cash": np.zeros((t_steps, a)),
        "equal_weight_hold": _plan(t_steps, a, ew),
        "crp_daily": _plan(t_steps, a, ew, rebalance_decisions(data, cfg, DAY_MS)),
        "crp_weekly": _plan(t_steps, a, ew, rebalance_decisions(
            data, cfg, 7 * DAY_MS, WEEK_OFFSET_DAYS * DAY_MS)),
    }
    if a > 1:
        for i, sym in enumerate(data.symbols):
            plans[f"hold_{sym}"] = _plan(t_steps, a, np.eye(a)[i] * level)
    return plans


def agent_turnover(ro: PortfolioRollout) -> tuple[int, float]:
    """The agent's trading decisions (steps with a fill) and realised turnover (the sum over
    steps of traded notional / equity before the step)."""
    traded = np.diff(ro.turnover_cum_quote, axis=0).sum(axis=1)
    eq = np.maximum(ro.equity_quote[:-1], 1e-12)
    return int((traded > 0).sum()), float((traded / eq).sum())


def _planned_turnover(u: F64, alpha: float) -> float:
    w = np.zeros(u.shape[1])
    total = 0.0
    for row in u:
        step = alpha * (row - w)
        total += float(np.abs(step).sum())
        w = w + step
    return total


def _alpha_for(u: F64, target: float | None) -> float:
    """The fraction of the way to move at each change so the planned turnover is ``target``."""
    if target is None or _planned_turnover(u, 1.0) <= target:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if _planned_turnover(u, mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def random_weight_plans(
    data: PortfolioData,
    cfg: PortfolioEnvConfig,
    *,
    agent: PortfolioRollout | None = None,
    n_random: int = DEFAULT_N_RANDOM,
    seed: int = 0,
    turnover_scale: float = 1.0,
) -> tuple[F64, dict[str, float]]:
    """``(n_random, T, A)`` plans of the turnover-matched random baseline and what they match.

    Args:
        data, cfg: the split and the whole-split weights config.
        agent: the agent's run (None: 2 % of the decisions trade, all the way, at level 1/N).
        n_random: draws (>= 1).
        seed: the one seed of the draws.
        turnover_scale: plan ``turnover_scale`` times the agent's turnover (the calibration
            of :func:`play_portfolio_baselines`; the same seed draws the same times and
            directions, only the step sizes change).

    Returns:
        ``(plans, info)``; ``info``: ``n_changes``, ``target_turnover`` (nan without an agent),
        ``gross`` (the draws' gross exposure) and ``mean_alpha``.
    """
    t_steps = portfolio_decisions(data, cfg)
    a = data.n_assets
    rng = np.random.default_rng(seed)
    amap = ActionMap.from_config(cfg, data.symbols)
    if agent is None:
        n_changes, target = max(1, t_steps // 50), None
        gross, short_share = equal_level(cfg), 0.0
    else:
        n_changes, target = agent_turnover(agent)
        target *= turnover_scale
        n_changes = max(1, min(n_changes, t_steps))
        held = agent.weights[1:]
        gross = float(np.abs(held).sum(axis=1).mean()) if len(held) else equal_level(cfg)
        short_w = np.clip(-held, 0.0, None).sum()
        short_share = float(short_w / max(np.abs(held).sum(), 1e-300)) if cfg.allow_short else 0.0
    plans = np.full((max(1, n_random), t_steps, a), np.nan)
    alphas = []
    for d in range(len(plans)):
        at = np.sort(rng.choice(t_steps, size=n_changes, replace=False))
        mag = rng.dirichlet(np.ones(a), size=n_changes) * gross
        sign = np.where(rng.random((n_changes, a)) < short_share, -1.0, 1.0)
        u = amap.weights_batch(mag * sign)  # into the budget, as the env maps any action
        alpha = _alpha_for(u, target)
        alphas.append(alpha)
        w = np.zeros(a)
        rows = np.empty((n_changes, a))
        for j in range(n_changes):
            w = w + alpha * (u[j] - w)
            rows[j] = w
        plans[d, : at[0]] = 0.0
        plans[d, at] = rows
    info = {"n_changes": float(n_changes), "target_turnover": np.nan if target is None else target,
            "gross": gross, "mean_alpha": float(np.mean(alphas))}
    return plans, info


@dataclass(eq=False)
class PortfolioBaselineRuns:
    """The portfolio baselines of one split.

    Attributes:
        metrics: metrics per baseline (``random_weights``: the mean over draws with the
            ``draws_*`` spread, ``n_draws``, ``n_changes``, ``target_turnover``).
        rollouts: one run per baseline (``random_weights``: its first draw, for charts).
        random_draws: every draw of the random baseline (verdicts pool them all).
    """

    metrics: dict[str, dict[str, float]]
    rollouts: dict[str, PortfolioRollout]
    random_draws: list[PortfolioRollout] = field(default_factory=list)


def play_portfolio_baselines(
    data: PortfolioData,
    env_config: PortfolioConfigLike,
    *,
    agent: PortfolioRollout | None = None,
    n_random: int = DEFAULT_N_RANDOM,
    seed: int = 0,
) -> PortfolioBaselineRuns:
    """Play every baseline (and every random draw) together through the env's books.

    Args:
        data: the split the agent ran over.
        env_config: the agent's portfolio env config (same costs, budget and rules).
        agent: the agent's run, for the random baseline's matching (None: see
            :func:`random_weight_plans`).
        n_random: draws of the random baseline.
        seed: their seed.
    """
    cfg = weights_config(env_config)
    plans = deterministic_plans(data, cfg)
    rand, info = random_weight_plans(data, cfg, agent=agent, n_random=n_random, seed=seed)
    names = list(plans)
    stacked = np.concatenate([np.stack([plans[n] for n in names]), rand])
    runs = simulate_plans(data, cfg, stacked)
    rollouts = dict(zip(names, runs[: len(names)], strict=True))
    draws = runs[len(names):]
    realised = float(np.mean([agent_turnover(d)[1] for d in draws]))
    target, scale = info["target_turnover"], 1.0
    for _ in range(CALIBRATION_PASSES):
        # the books skip trades under rebalance_threshold and the weights drift between
        # changes, so the realised turnover misses the plan: plan again for the difference
        if agent is None or realised <= 0 or abs(target / realised - 1.0) <= TURNOVER_TOLERANCE:
            break
        scale *= target / realised
        rand, info = random_weight_plans(data, cfg, agent=agent, n_random=n_random, seed=seed,
                                         turnover_scale=scale)
        info["target_turnover"] = target
        draws = simulate_plans(data, cfg, rand)
        realised = float(np.mean([agent_turnover(d)[1] for d in draws]))
    info["turnover_scale"] = scale
    info["realised_turnover"] = realised
    metrics = {n: ro.metrics() for n, ro in rollouts.items()}
    metrics[RANDOM_NAME] = {**_mean_metrics(draws), **info}  # type: ignore[arg-type]
    rollouts[RANDOM_NAME] = draws[0]
    logger.debug("portfolio baselines symbols=%s steps=%d random_draws=%d changes=%d alpha=%.3f",
                 ",".join(data.symbols), runs[0].n_steps, len(draws), int(info["n_changes"]),
                 info["mean_alpha"])
    return PortfolioBaselineRuns(metrics, rollouts, draws)


def portfolio_verdicts(
    agent: PortfolioRollout,
    runs: PortfolioBaselineRuns,
    *,
    data: str = "out of sample",
    confidence: float = 0.95,
    seed: int = 0,
) -> list[Verdict]:
    """The agent against every baseline: paired block bootstrap of the total-return margin
    after costs over the same bars (the random baseline pooled over all its draws).

    Args:
        agent: the agent's run.
        runs: the baselines of the same split and config.
        data: what the data was (:func:`~coinrl.agents.stats.data_label`).
        confidence: level of the intervals.
        seed: the bootstrap's seed.
    """
    r = simple_returns(agent.equity_quote)
    short = not can_annualise(agent.n_steps, agent.periods_per_year)
    out = []
    for name, ro in runs.rollouts.items():
        other: Any = (np.stack([simple_returns(d.equity_quote) for d in runs.random_draws])
                      if name == RANDOM_NAME else simple_returns(ro.equity_quote))
        out.append(verdict_from_returns(r, other, name, confidence=confidence, seed=seed,
                                        data=data, small_sample=short))
    return out


__all__ = [
    "DEFAULT_N_RANDOM",
    "RANDOM_NAME",
    "PortfolioBaselineRuns",
    "agent_turnover",
    "deterministic_plans",
    "equal_level",
    "play_portfolio_baselines",
    "portfolio_verdicts",
    "random_weight_plans",
    "rebalance_decisions",
]
