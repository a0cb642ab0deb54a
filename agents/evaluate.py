"""Evaluate a policy on a split, beside buy-and-hold, flat and a turnover-matched random policy.

:func:`evaluate_model` rolls the deterministic policy over the whole split through the env
(:func:`~coinrl.agents.rollout.rollout_policy`), plays the baselines through the same env and
costs (:func:`~coinrl.agents.baselines.run_baselines`) and returns an
:class:`EvaluationReport`: trading metrics for the agent and each baseline, and policy metrics
(action distribution, episode reward). ``report.flat("eval")`` gives namespaced scalar keys
(``eval/agent/sharpe``, ``eval/buy_and_hold/total_return``, ...) for the metrics sink.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coinrl.envs.config import EnvConfig
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import ConfigError

from .agent import TrainedAgent
from .baselines import run_baselines
from .metrics import json_safe
from .rollout import Rollout, evaluation_config, rollout_policy

logger = logging.getLogger(__name__)


def policy_metrics(rollout: Rollout, env_config: EnvConfig) -> dict[str, float]:
    """What the policy did: action distribution and episode reward.

    Returns:
        ``mean_episode_reward`` (the whole split is one episode: the sum of env rewards),
        ``mean_step_reward``, for a discrete env ``action_frac/<exposure>`` (share of decisions
        choosing each position), for a continuous one ``target_mean``/``target_std``; and for
        both ``frac_long``/``frac_short``/``frac_flat`` of the target exposures and
        ``changes_frac`` (share of decisions that change the target).
    """
    t = rollout.target_exposure
    n = max(len(t), 1)
    out: dict[str, float] = {
        "mean_episode_reward": float(rollout.rewards.sum()),
        "mean_step_reward": float(rollout.rewards.mean()) if len(t) else 0.0,
        "frac_long": float((t > 0).sum() / n),
        "frac_short": float((t < 0).sum() / n),
        "frac_flat": float((t == 0).sum() / n),
        "changes_frac": float((np.diff(t) != 0).sum() / n) if len(t) > 1 else 0.0,
    }
    if env_config.action == "discrete":
        acts = np.asarray(rollout.actions).astype(np.int64).reshape(-1)
        counts = np.bincount(acts, minlength=len(env_config.discrete_positions))
        for p, c in zip(env_config.discrete_positions, counts.tolist(), strict=True):
            out[f"action_frac/{p:g}"] = c / n
    else:
        out["target_mean"] = float(t.mean()) if len(t) else 0.0
        out["target_std"] = float(t.std()) if len(t) else 0.0
    return out


CALLS = ("long", "short", "flat")
"""The three calls a decision makes (sign of its target exposure)."""


def directional_quality(rollout: Rollout, env_config: EnvConfig) -> dict[str, float]:
    """How often the policy's long/short/flat calls matched the market's direction.

    Decision ``k`` (taken at the close of its bar) is held over the bar its order fills in,
    ``delay_bars`` later: from that bar's open (the fill) to its close. The truth of that
    holding period is ``long`` when the move ``close / open - 1`` beats the one-way cost of
    trading it (taker fee + slippage), ``short`` when it falls by more than that, ``flat``
    otherwise (a move too small to pay for a trade). The call is the sign of the decision's
    target exposure (``|target| <= rebalance_threshold`` is flat). Decisions whose holding bar
    lies past the split are not scored.

    Returns:
        ``direction/accuracy`` (share of calls that matched), ``direction/n`` (decisions
        scored), and per class ``c`` in ``long``/``short``/``flat``:
        ``direction/precision_<c>`` (of the calls ``c``, the share that were right; nan
        without such calls), ``direction/recall_<c>`` (of the periods whose truth was ``c``,
        the share called; nan without any), ``direction/called_<c>`` (share of calls) and
        ``direction/actual_<c>`` (the class balance: share of periods whose truth was ``c``).
        ``direction/baseline_accuracy`` is what always calling the most frequent class would
        score.
    """
    t = np.asarray(rollout.target_exposure, dtype=np.float64)
    d = int(env_config.delay_bars)
    n = max(0, min(len(t), len(rollout.close_quote) - d))
    if rollout.open_quote is None or n == 0:
        return {"direction/n": 0.0}
    marks = np.arange(n) + d
    o = np.asarray(rollout.open_quote, dtype=np.float64)[marks]
    c = np.asarray(rollout.close_quote, dtype=np.float64)[marks]
    move = np.divide(c, o, out=np.ones(n), where=o > 0) - 1.0
    cost = env_config.taker_fee_rate + env_config.slippage_bps / 10_000.0
    truth = np.where(move > cost, 0, np.where(move < -cost, 1, 2))
    thr = env_config.rebalance_threshold
    call = np.where(t[:n] > thr, 0, np.where(t[:n] < -thr, 1, 2))
    out: dict[str, float] = {
        "direction/n": float(n),
        "direction/accuracy": float((call == truth).mean()),
    }
    actual = np.bincount(truth, minlength=3) / n
    out["direction/baseline_accuracy"] = float(actual.max())
    for i, name in enumerate(CALLS):
        called = call == i
        real = truth == i
        hit = float((called & real).sum())
        out[f"direction/precision_{name}"] = hit / called.sum() if called.any() else float("nan")
        out[f"direction/recall_{name}"] = hit / real.sum() if real.any() else float("nan")
        out[f"direction/called_{name}"] = float(called.mean())
        out[f"direction/actual_{name}"] = float(actual[i])
    return out


def directional_lines(policy: dict[str, Any]) -> list[str]:
    """Plain lines of :func:`directional_quality` for a console or a report (empty without)."""
    if not policy.get("direction/n"):
        return []

    def pct(key: str) -> str:
        v = policy.get(key)
        return "n/a" if v is None or not np.isfinite(v) else f"{v:.0%}"

    head = (
        f"directional calls: accuracy {pct('direction/accuracy')} over "
        f"{int(policy['direction/n']):,} decisions (always the most frequent class: "
        f"{pct('direction/baseline_accuracy')})"
    )
    rows = [
        f"  {c:<5}  called {pct(f'direction/called_{c}'):>4}  actual {pct(f'direction/actual_{c}'):>4}  "
        f"precision {pct(f'direction/precision_{c}'):>4}  recall {pct(f'direction/recall_{c}'):>4}"
        for c in CALLS
    ]
    return [head, *rows]


@dataclass(eq=False)
class EvaluationReport:
    """Agent and baselines over one split.

    Attributes:
        split: name of the split (``validation``, ``test``, ...).
        agent: trading metrics of the agent (see :func:`~coinrl.agents.metrics.trading_metrics`).
        policy: policy metrics (see :func:`policy_metrics`) and the directional quality of
            its calls (:func:`directional_quality`, ``direction/*`` keys).
        baselines: trading metrics per baseline (``buy_and_hold``, ``flat``, ``random``).
        rollout: the agent's run (equity curve, exposures, actions).
        baseline_rollouts: one run per baseline.
        meta: symbol, timeframe, date range, number of decisions.
    """

    split: str
    agent: dict[str, float]
    policy: dict[str, float]
    baselines: dict[str, dict[str, float]]
    rollout: Rollout
    baseline_rollouts: dict[str, Rollout]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe nested dict (non-finite values become None)."""
        return dict(
            json_safe(
                {
                    "split": self.split,
                    "agent": self.agent,
                    "policy": self.policy,
                    "baselines": self.baselines,
                    "meta": self.meta,
                }
            )
        )

    def flat(self, prefix: str = "eval") -> dict[str, float]:
        """Namespaced scalars: ``<prefix>/agent/<m>``, ``<prefix>/policy/<m>``,
        ``<prefix>/<baseline>/<m>``."""
        out: dict[str, float] = {}
        for k, v in self.agent.items():
            out[f"{prefix}/agent/{k}"] = v
        for k, v in self.policy.items():
            out[f"{prefix}/policy/{k}"] = v
        for name, ms in self.baselines.items():
            for k, v in ms.items():
                out[f"{prefix}/{name}/{k}"] = v
        return out

    def margin(self, metric: str = "total_return") -> dict[str, float]:
        """Agent minus each baseline on ``metric``."""
        return {name: self.agent[metric] - ms[metric] for name, ms in self.baselines.items()}


def evaluate_model(
    model: TrainedAgent | Any,
    validation_data: MarketData,
    env_config: EnvConfig | dict[str, Any] | None = None,
    *,
    split: str | None = None,
    n_random: int = 5,
    seed: int = 0,
    baselines: bool = True,
) -> EvaluationReport:
    """Roll the deterministic policy over a whole split and compare it with the baselines.

    Args:
        model: a :class:`~coinrl.agents.agent.TrainedAgent` (its env config is used), an SB3
            model or an ``obs -> action`` callable (then pass ``env_config``).
        validation_data: the split to trade (normalised with the TRAINING normaliser).
        env_config: env config for an SB3 model; overrides the agent's when given.
        split: name for the report (default ``validation_data.meta["split"]``).
        n_random: random-policy draws averaged in the ``random`` baseline.
        seed: seed of the random baseline.
        baselines: also run the baselines (False: agent only, for quick evaluations).

    Returns:
        The :class:`EvaluationReport`.

    Raises:
        ConfigError: an SB3 model without ``env_config``; a portfolio agent (use
            :func:`~coinrl.agents.train_portfolio.evaluate_portfolio`).
    """
    if isinstance(model, TrainedAgent) and model.portfolio is not None:
        raise ConfigError(
            f"evaluate_model trades one market; this agent trades the portfolio "
            f"{list(model.portfolio.symbols)}: use coinrl.agents.train_portfolio.evaluate_portfolio "
            "on its data (portfolio_data_for)"
        )
    if isinstance(model, TrainedAgent):
        policy = model.model
        cfg_in: EnvConfig | dict[str, Any] | None = env_config or model.env_config
    else:
        policy = model
        cfg_in = env_config
        if cfg_in is None:
            raise ConfigError(
                "evaluate_model got a bare policy without env_config; pass the EnvConfig used "
                "in training (or a TrainedAgent, which carries it)"
            )
    cfg = evaluation_config(cfg_in)
    rollout = rollout_policy(policy, validation_data, cfg, deterministic=True)
    agent_metrics = rollout.metrics()
    pol = {**policy_metrics(rollout, cfg), **directional_quality(rollout, cfg)}
    if baselines:
        base_metrics, base_rollouts = run_baselines(
            validation_data, cfg, agent_targets=rollout.target_exposure, n_random=n_random, seed=seed
        )
    else:
        base_metrics, base_rollouts = {}, {}
    name = split or str(validation_data.meta.get("split", "validation"))
    meta = {
        "symbol": validation_data.symbol,
        "timeframe": validation_data.timeframe,
        "start_ts_ms": int(rollout.ts_ms[0]),
        "end_ts_ms": int(rollout.ts_ms[-1]),
        "n_decisions": rollout.n_steps,
        "periods_per_year": rollout.periods_per_year,
    }
    logger.info(
        "evaluated split=%s symbol=%s decisions=%d total_return=%.4f sharpe=%.3f bh_return=%s",
        name, validation_data.symbol, rollout.n_steps, agent_metrics["total_return"],
        agent_metrics["sharpe"],
        f"{base_metrics['buy_and_hold']['total_return']:.4f}" if base_metrics else "-",
    )
    return EvaluationReport(name, agent_metrics, pol, base_metrics, rollout, base_rollouts, meta)


__all__ = [
    "CALLS",
    "EvaluationReport",
    "directional_lines",
    "directional_quality",
    "evaluate_model",
    "policy_metrics",
]
