"""The risk layer of paper and live trading: the same rules and objects as the backtester.

The rules are pure and live below ``agents/`` in :mod:`coinrl.envs.risk` (:class:`RiskConfig`,
:func:`risk_management` alias :func:`check_risk`, the :class:`RiskGuard` that keeps their state
across decisions; the rules and their order are described there) and
:mod:`coinrl.envs.risk_portfolio` (the portfolio form). Every name is re-exported here, so
``coinrl.live.risk_management`` and ``from coinrl.live.risk import RiskConfig`` keep working.
A backtest applies the same guard with
``simulate_trading_strategy(..., risk=RiskConfig(...))`` (:mod:`coinrl.agents.backtest`).
"""

from __future__ import annotations

from coinrl.envs.risk import (
    RiskConfig,
    RiskDecision,
    RiskEvent,
    RiskGuard,
    RiskState,
    RuleAction,
    Verdict,
    check_risk,
    hold_exposure,
    risk_management,
)
from coinrl.envs.risk_portfolio import (
    AssetRiskLimits,
    PortfolioRiskConfig,
    PortfolioRiskDecision,
    PortfolioRiskGuard,
    PortfolioRiskState,
    check_portfolio_risk,
    hold_weights,
)

__all__ = [
    "AssetRiskLimits",
    "PortfolioRiskConfig",
    "PortfolioRiskDecision",
    "PortfolioRiskGuard",
    "PortfolioRiskState",
    "RiskConfig",
    "RiskDecision",
    "RiskEvent",
    "RiskGuard",
    "RiskState",
    "RuleAction",
    "Verdict",
    "check_portfolio_risk",
    "check_risk",
    "hold_exposure",
    "hold_weights",
    "risk_management",
]
