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
from coinrl.envs.portfolio_vector import PortfolioVectorEnv
from coinrl.envs.risk import RiskConfig
from coinrl.envs.risk_portfolio import PortfolioRiskConfig
from coinrl.pipeline.dataset import PortfolioData
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.timeframes import timeframe_to_ms

from .backtest_risk import PortfolioBacktestRiskLayer, PortfolioRiskRecord
from .portfolio_record import PortfolioRollout, Recorder
from .portfolio_rollout import (
    PortfolioConfigLike,
    batched_policy,
    evaluation_portfolio_config,
    portfolio_decisions,
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
    t_steps = portfolio_decisions(data, cfg)
    amap = ActionMap.from_config(cfg, data.symbols)
    signal: F64 | None = None
    if weights is not None:
        x = np.asarray(weights)
        if x.ndim == 3:
            raise DataError("rollout_portfolio_with_risk plays one signal (T, A)")
        signal = weights_signal(x, data, twin)[0]
        amap = ActionMap.from_config(twin, data.symbols)
    act = batched_policy(policy, True) if policy is not None else None
    venv = PortfolioVectorEnv(1, data, twin, copy=True)
    obs, info = venv.reset(seed=0)
    rec = Recorder(venv, info, t_steps)
    a_n = venv.n_assets
    shape = (a_n,)
    dtype = np.int64 if (signal is None and cfg.action == "discrete") else np.float32
    acts: npt.NDArray[Any] = np.zeros((t_steps, *shape), dtype=dtype) if signal is None else signal
    targets = np.zeros((t_steps, a_n))
    layer = PortfolioBacktestRiskLayer(limits, timeframe_to_ms(data.timeframe), data.symbols)
    s = venv._state  # the books' state matrix (read only)
    qty_rows = [pk.row(i, pk.A_QTY) for i in range(a_n)]
    avg_rows = [pk.row(i, pk.A_AVG) for i in range(a_n)]
    bars = venv.arrays.bars
    ts = venv.arrays.ts_ms
    w0 = cfg.window - 1
    done = False
    for k in range(t_steps):
        t = w0 + k
        if done:  # liquidated: the recorder keeps the account flat; nothing more to review
            targets[k] = 0.0
        else:
            if act is not None:
                a = np.asarray(act(obs)).reshape(shape)
                acts[k] = a
                raw = _raw_weights(amap, a)
                proposed = amap.weights_batch(a[None])[0]
            else:
                raw = proposed = signal[k]  # type: ignore[index]
            targets[k] = layer.review(
                int(ts[t]), proposed, cash_quote=float(s[kernel.CASH, 0]),
                positions_base=s[qty_rows, 0], avg_entry_quote=s[avg_rows, 0],
                close_quote=bars[t, :, pk.B_CLOSE], equity_quote=float(s[kernel.EQUITY, 0]),
                turnover_quote=float(s[kernel.TURNOVER, 0]), fill_open_quote=bars[t + 1, :, pk.B_OPEN],
            )
        # an unchanged decision steps the strategy's own (unprojected) weights: the twin's map
        # projects them exactly as the strategy's env would (re-projecting projected weights
        # could move the last bit); a trimmed or held one steps the layer's weights
        unchanged = not done and np.array_equal(targets[k], proposed)
        obs, rew, term, _, info = venv.step(raw[None] if unchanged else targets[k : k + 1])
        rec.step(rew, term, info)
        if not done:
            layer.after_step(int(ts[t + 1]), float(s[kernel.TURNOVER, 0]))
            done = bool(term[0])
    venv.close()
    ro = rec.rollouts(acts[None], targets[None])[0]
    record = layer.record()
    logger.info("portfolio risk backtest symbols=%s decisions=%d %s killed_at=%s",
                ",".join(data.symbols), len(record.verdicts),
                " ".join(f"{k}={v}" for k, v in record.counts().items() if k not in ("decisions", "assets")),
                record.killed_at)
    return ro, record


def _raw_weights(amap: ActionMap, action: npt.NDArray[Any]) -> F64:
    """The weights an action stands for before the map's budget projection: the grid
    positions of a discrete action, the numbers of a continuous one (float64)."""
    if amap.kind == "discrete":
        return np.asarray(amap.positions, dtype=np.float64)[np.asarray(action, dtype=np.int64)]
    return np.array(action, dtype=np.float64)


__all__ = ["portfolio_risk_config", "rollout_portfolio_with_risk"]
