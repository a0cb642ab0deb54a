"""A whole-split backtest through the risk layer: :func:`backtest_with_risk`.

The policy sees a :class:`~coinrl.envs.trading_env.TradingEnv`'s observations; its targets
pass through a :class:`~coinrl.live.risk_rules.RiskGuard` (the same rules as paper and live
trading) and the allowed targets are stepped through the env's own books.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from coinrl.envs.config import EnvConfig, env_config_from
from coinrl.envs.trading_env import TradingEnv
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.timeframes import timeframe_to_ms

from .risk_rules import RiskConfig, RiskGuard, Verdict, hold_exposure


@dataclass(frozen=True, eq=False)
class RiskBacktest:
    """A whole-split run of a policy through the risk layer and the env's books.

    Attributes:
        ts_ms: open times of the decision bars (``T``).
        proposed_exposure, target_exposure: the policy's targets and what the risk layer let
            through (``T``).
        verdicts: the risk verdict of each decision (``T``).
        equity_quote, position_base, cash_quote: the books after each step (``T``).
        fees_paid_quote: total fees.
        killed_at: index of the decision where the kill-switch fired (None: never).
    """

    ts_ms: npt.NDArray[np.int64]
    proposed_exposure: npt.NDArray[np.float64]
    target_exposure: npt.NDArray[np.float64]
    verdicts: tuple[Verdict, ...]
    equity_quote: npt.NDArray[np.float64]
    position_base: npt.NDArray[np.float64]
    cash_quote: npt.NDArray[np.float64]
    fees_paid_quote: float
    killed_at: int | None


def backtest_with_risk(
    policy: Callable[[Any], Any],
    data: MarketData,
    env_config: EnvConfig | Mapping[str, Any] | None,
    risk_config: RiskConfig,
    *,
    to_target: Callable[[Any], float],
    start_index: int | None = None,
) -> RiskBacktest:
    """Backtest ``policy`` with the risk layer between its decisions and the env's books.

    The policy sees the observations of a :class:`~coinrl.envs.trading_env.TradingEnv` over
    ``data`` (same features, account features and timing as training); its target passes
    through a :class:`RiskGuard` and the allowed target is stepped through the env's books
    (a continuous-action twin of ``env_config``, so trimmed targets need not be discrete
    positions). A kill stops trading: the account holds its position to the end (as the
    runner with ``flatten_on_kill=False``).

    Args:
        policy: batch-of-one observation -> batch-of-one action.
        data: the market (normalised features).
        env_config: the env config the policy was trained with.
        risk_config: the limits.
        to_target: env action -> target exposure (e.g. ``actions_to_targets``).
        start_index: first decision bar (default ``window - 1``).

    Returns:
        The :class:`RiskBacktest`.
    """
    cfg = env_config_from(env_config).model_copy(
        update={"action": "continuous", "positions": None, "episode_length_bars": None}
    )
    env = TradingEnv(data, cfg)
    opts = {} if start_index is None else {"start_index": int(start_index)}
    obs, info = env.reset(seed=0, options=opts)
    bar_ms = timeframe_to_ms(data.timeframe)
    guard = RiskGuard(risk_config, bar_ms)
    acct = env.account
    ts, proposed, targets, verdicts, eqs, poss, cashs = [], [], [], [], [], [], []
    killed_at: int | None = None
    k = 0
    while True:
        t_ms = int(info["ts_ms"])
        now = t_ms + bar_ms
        state = guard.state(
            now_ms=now, last_bar_close_ms=now, equity_quote=acct.equity_quote,
            price_quote=acct.mark_price_quote, position_base=acct.position_base,
            avg_entry_quote=acct.avg_entry_quote,
        )
        want = float(to_target(policy(obs[None])))
        decision = guard.review(want, state)
        if decision.kill and killed_at is None:
            killed_at = k
        turnover = acct.turnover_quote
        if decision.hold:  # no order: the target is the position's own exposure at the fill open
            target = hold_exposure(acct.cash_quote, acct.position_base, float(data.open[env.t + 1]))
        else:
            target = decision.target_exposure
        obs, _, term, trunc, info = env.step(np.array([target], dtype=np.float64))
        if acct.turnover_quote != turnover:
            guard.record_order(now)
        ts.append(t_ms)
        proposed.append(want)
        targets.append(decision.target_exposure)
        verdicts.append(decision.verdict)
        eqs.append(acct.equity_quote)
        poss.append(acct.position_base)
        cashs.append(acct.cash_quote)
        k += 1
        if term or trunc:
            break
    return RiskBacktest(
        ts_ms=np.asarray(ts, dtype=np.int64), proposed_exposure=np.asarray(proposed),
        target_exposure=np.asarray(targets), verdicts=tuple(verdicts),
        equity_quote=np.asarray(eqs), position_base=np.asarray(poss), cash_quote=np.asarray(cashs),
        fees_paid_quote=acct.fees_paid_quote, killed_at=killed_at,
    )



__all__ = ["RiskBacktest", "backtest_with_risk"]
