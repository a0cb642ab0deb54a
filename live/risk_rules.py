"""The risk rules, re-exported: they live in :mod:`coinrl.envs.risk` (below ``agents/``, so
the backtester applies the very same objects); this module keeps its old import path working.
"""

from __future__ import annotations

from coinrl.envs.risk import (
    EPS,
    MS_PER_DAY,
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

__all__ = [
    "EPS",
    "MS_PER_DAY",
    "RiskConfig",
    "RiskDecision",
    "RiskEvent",
    "RiskGuard",
    "RiskState",
    "RuleAction",
    "Verdict",
    "check_risk",
    "hold_exposure",
    "risk_management",
]
