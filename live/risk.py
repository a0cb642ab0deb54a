"""The risk layer: rules outside the policy, the same in backtest, paper and live trading.

Every name of the layer is importable from here; its modules, one job each:

* :mod:`coinrl.live.risk_rules`: :class:`RiskConfig`, the pure rules :func:`risk_management`
  (alias :func:`check_risk`) and the :class:`RiskGuard` that keeps their state across
  decisions (the rules and their order are described there);
* :mod:`coinrl.live.risk_backtest`: :func:`backtest_with_risk`, a whole-split backtest with
  the same guard between the policy and the env's books.
"""

from __future__ import annotations

from .risk_backtest import RiskBacktest, backtest_with_risk
from .risk_rules import (
    RiskConfig,
    RiskDecision,
    RiskEvent,
    RiskGuard,
    RiskState,
    Verdict,
    check_risk,
    hold_exposure,
    risk_management,
)

__all__ = [
    "RiskBacktest",
    "RiskConfig",
    "RiskDecision",
    "RiskEvent",
    "RiskGuard",
    "RiskState",
    "Verdict",
    "backtest_with_risk",
    "check_risk",
    "hold_exposure",
    "risk_management",
]
