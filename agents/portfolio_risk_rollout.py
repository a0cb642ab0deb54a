"""A portfolio run with the paper/live risk layer between each decision and the books.

:func:`~coinrl.agents.portfolio_backtest.simulate_portfolio_strategy` with
``risk=PortfolioRiskConfig(...)`` runs here. Each decision's proposed target weights (the
strategy's action through its own env's :class:`~coinrl.envs.actions.ActionMap`, or a row of a
weights signal) pass a :class:`~coinrl.agents.backtest_risk.PortfolioBacktestRiskLayer` (the
:class:`~coinrl.envs.risk_portfolio.PortfolioRiskGuard` paper and live trading use, with the
single-asset layer's conventions: "now" is the decision bar's close, a blocked or killed decision
keeps every position by :func:`~coinrl.envs.risk_portfolio.hold_weights` at the fill bar's opens,
a rebalance that traded counts once in the order-rate window at the fill bar's open time), and
what it lets through is stepped through the portfolio env's books as weights: the env config's
continuous twin (:func:`~coinrl.agents.portfolio_rollout.weights_config`: same costs, budget,
window and observation), as the weights path does, so a trimmed weight need not be on a discrete
env's grid. The policy still sees its own env's observations (the observation does not depend
on the action mode). With every rule off (``PortfolioRiskConfig.permissive()``) the run equals
the plain :func:`~coinrl.agents.portfolio_rollout.rollout_portfolio` bit for bit (tested).

After a liquidation the account is recorded flat to the end (as every portfolio rollout) and the
layer reviews no further decisions; after the kill-switch the account holds its positions to the
end of the split (a session with ``flatten_on_kill=False``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from coinrl.envs import kernel
from coinrl.envs import portfolio_kernel as pk
from coinrl.envs.actions import ActionMap
from coinrl.envs.config import PortfolioEnvConfig
from coinrl.envs.portfolio_vector import PortfolioVectorEnv
from coinrl.envs.risk import RiskConfig
from coinrl.envs.risk_portfolio import PortfolioRiskConfig
from coinrl.pipeline.dataset import PortfolioData
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.timeframes import timeframe_to_ms

from .backtest_risk import PortfolioBacktestRiskLayer, PortfolioRiskRecord
from .portfolio_record import PortfolioRollout
from .portfolio_rollout import (
    PortfolioConfigLike,
    evaluation_portfolio_config,
    play_portfolio,
    portfolio_decisions,
    rollout_portfolio_policy,
    weights_config,
    weights_signal,
)

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]


def portfolio_risk_config(risk: Any, symbols: tuple[str, ...] | None = None) -> PortfolioRiskConfig:
    """``risk`` as a :class:`~coinrl.envs.risk_portfolio.PortfolioRiskConfig`: one as is, a
    plain single-asset :class:`~coinrl.envs.risk.RiskConfig` promoted (its fields mean the same
    per account and per asset).

    Raises:
        ConfigError: anything else (a mapping or path must be loaded first, e.g. by
            ``load_config(PortfolioRiskConfig, path)``); ``asset_limits`` naming a symbol not in
            ``symbols`` (when given).
    """
    if isinstance(risk, RiskConfig):
        cfg = risk if isinstance(risk, PortfolioRiskConfig) else PortfolioRiskConfig.model_validate(risk.model_dump())
        unknown = sorted(set(cfg.asset_limits) - set(symbols)) if symbols is not None else []
        if unknown:
            raise ConfigError(f"risk asset_limits name {', '.join(unknown)}, which the portfolio does not "
                              f"trade (its symbols: {', '.join(symbols or ())}); fix the symbol names")
        return cfg
    raise ConfigError(f"risk must be a PortfolioRiskConfig (or RiskConfig), got {type(risk).__name__}; "
                      "load a YAML file with load_config(PortfolioRiskConfig, path)")


def rollout_portfolio_with_risk(
    data: PortfolioData,
    env_config: PortfolioConfigLike,
    risk: PortfolioRiskConfig | RiskConfig,
    *,
    policy: Any = None,
    weights: npt.ArrayLike | None = None,
) -> tuple[PortfolioRollout, PortfolioRiskRecord]:
    """Play a policy or a ``(T, A)`` weights signal over the whole split with the risk layer.

    Args:
        data: the split (normalised PortfolioData with the policy's features).
        env_config: the strategy's portfolio env config (its action mode maps a policy's
            actions to proposed weights).
        risk: the limits (a plain ``RiskConfig`` is promoted, see :func:`portfolio_risk_config`).
        policy: an SB3 model or a batched ``obs (1, D) -> actions (1, A)`` callable
            (deterministic).
        weights: instead, target weights per decision ``(T, A)`` or per bar (see
            :func:`~coinrl.agents.portfolio_rollout.weights_signal`).

    Returns:
        The :class:`PortfolioRollout` (``actions``: the strategy's own actions, or the signal;
        ``target_weights``: the weights the books got) and the :class:`PortfolioRiskRecord`.

    Raises:
        ConfigError: neither or both of ``policy`` and ``weights``; weights beyond the budget.
        DataError: a split too short, a signal of the wrong shape or NaN.
    """
    if (policy is None) == (weights is None):
        raise ConfigError("rollout_portfolio_with_risk needs exactly one of policy= and weights=")
    limits = portfolio_risk_config(risk, tuple(data.symbols))
    cfg = evaluation_portfolio_config(env_config)
    twin = weights_config(cfg)
    portfolio_decisions(data, cfg)  # a split too short is refused before anything runs
    amap = ActionMap.from_config(cfg, data.symbols)
    signal: F64 | None = None
    if weights is not None:
        x = np.asarray(weights)
        if x.ndim == 3:
            raise DataError("rollout_portfolio_with_risk plays one signal (T, A)")
        signal = weights_signal(x, data, twin)[0]
    layer = PortfolioBacktestRiskLayer(limits, timeframe_to_ms(data.timeframe), data.symbols)
    hook = PortfolioRiskStepHook(layer, cfg.window, amap if signal is None else None)
    if signal is not None:
        fixed = signal
        ro = play_portfolio(lambda obs, k: fixed[k], data, cfg, step_hook=hook, actions=fixed)[0]
    else:
        ro = rollout_portfolio_policy(policy, data, cfg, deterministic=True, step_hook=hook)[0]
    record = layer.record()
    logger.info("portfolio risk backtest symbols=%s decisions=%d %s killed_at=%s",
                ",".join(data.symbols), len(record.verdicts),
                " ".join(f"{k}={v}" for k, v in record.counts().items() if k not in ("decisions", "assets")),
                record.killed_at)
    return ro, record


class PortfolioRiskStepHook:
    """The :class:`~coinrl.agents.portfolio_rollout.PortfolioStepHook` that puts a
    :class:`~coinrl.agents.backtest_risk.PortfolioBacktestRiskLayer` between a one-account
    portfolio rollout's decisions and its books (decision ``k`` reviewed at the close of bar
    ``window - 1 + k``, its rebalance counted at the next bar's open time).

    An unchanged decision steps the strategy's own (unprojected) weights: the twin's map
    projects them exactly as the strategy's env would (re-projecting projected weights could
    move the last bit); a trimmed or held one steps the layer's weights.

    Args:
        layer: the risk layer.
        window: the env's observation window.
        action_map: the strategy's map from actions to weights; None when the actions are
            target weights already (a weights signal).
    """

    def __init__(self, layer: PortfolioBacktestRiskLayer, window: int, action_map: ActionMap | None) -> None:
        self.layer = layer
        self.amap = action_map
        self._first = int(window) - 1

    def step_config(self, env_config: PortfolioEnvConfig) -> PortfolioEnvConfig:
        """The continuous twin (:func:`~coinrl.agents.portfolio_rollout.weights_config`)."""
        return weights_config(env_config)

    def review(self, k: int, venv: PortfolioVectorEnv, action: npt.NDArray[Any]) -> tuple[F64, F64]:
        """What to step and the target weights of decision ``k`` (the layer's review of the
        books' first account)."""
        if self.amap is None:
            raw = proposed = action
        else:
            raw = _raw_weights(self.amap, action)
            proposed = self.amap.weights_batch(action[None])[0]
        t = self._first + k
        s = venv._state  # the books' state matrix (read only)
        a_n = venv.n_assets
        bars = venv.arrays.bars
        target = np.asarray(self.layer.review(
            int(venv.arrays.ts_ms[t]), proposed, cash_quote=float(s[kernel.CASH, 0]),
            positions_base=s[[pk.row(i, pk.A_QTY) for i in range(a_n)], 0],
            avg_entry_quote=s[[pk.row(i, pk.A_AVG) for i in range(a_n)], 0],
            close_quote=bars[t, :, pk.B_CLOSE], equity_quote=float(s[kernel.EQUITY, 0]),
            turnover_quote=float(s[kernel.TURNOVER, 0]), fill_open_quote=bars[t + 1, :, pk.B_OPEN],
        ), dtype=np.float64)
        return (raw if np.array_equal(target, proposed) else target), target

    def after_step(self, k: int, venv: PortfolioVectorEnv) -> None:
        """Count the rebalance if the account traded (at the fill bar's open time)."""
        self.layer.after_step(int(venv.arrays.ts_ms[self._first + k + 1]), float(venv._state[kernel.TURNOVER, 0]))


def _raw_weights(amap: ActionMap, action: npt.NDArray[Any]) -> F64:
    """The weights an action stands for before the map's budget projection: the grid
    positions of a discrete action, the numbers of a continuous one (float64)."""
    if amap.kind == "discrete":
        return np.asarray(amap.positions, dtype=np.float64)[np.asarray(action, dtype=np.int64)]
    return np.array(action, dtype=np.float64)


__all__ = ["PortfolioRiskStepHook", "portfolio_risk_config", "rollout_portfolio_with_risk"]
