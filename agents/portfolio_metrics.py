"""Metrics of a portfolio run per asset, and the attribution of its return to the assets.

Pure numpy over a :class:`~coinrl.agents.portfolio_rollout.PortfolioRollout` (the books the env
kept); no second simulator.

Attribution (quote currency, exact up to float rounding): in step ``k`` asset ``a``'s P&L is

``pnl_a(k) = q_a(k-1) (o_a(k) - c_a(k-1)) + q_a(k) (c_a(k) - o_a(k)) - fee_a(k) - slip_a(k) - funding_a(k)``

the old position rides the gap from the last close to the fill at the open, the new one the
bar from the open to the close, less what trading and holding the asset cost in that step (the
books charge ``dq * open + fee + slippage`` for a fill and funding at the open). Summed over the
assets it is the equity change except for account-level items: borrow, and a liquidation, whose
fills are at the wick rather than the open (with any shortfall). Those go to an ``account`` row,
so the rows add up to the total P&L exactly. An asset's *contribution* is its P&L over the
initial equity: the contributions and the account row sum to the total return.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from .portfolio_rollout import PortfolioRollout

F64 = npt.NDArray[np.float64]


def step_pnl(ro: PortfolioRollout) -> F64:
    """``(T, A)`` P&L of each asset in each step (quote, after its fees, slippage and funding).

    See the module doc; in a liquidation step the wick fills make the row inexact (the
    difference lands in :func:`account_pnl`).
    """
    q, o, c = ro.position_base, ro.open_quote, ro.close_quote
    price = q[:-1] * (o[1:] - c[:-1]) + q[1:] * (c[1:] - o[1:])
    costs = (np.diff(ro.fees_cum_quote, axis=0) + np.diff(ro.slippage_cum_quote, axis=0)
             + np.diff(ro.funding_cum_quote, axis=0))
    return np.asarray(price - costs)


def account_pnl(ro: PortfolioRollout) -> F64:
    """``T`` account-level P&L per step (quote): equity change minus the assets' P&L (borrow,
    liquidation fills at the wick and shortfall; 0 up to rounding otherwise)."""
    return np.asarray(np.diff(ro.equity_quote) - step_pnl(ro).sum(axis=1))


def asset_attribution(ro: PortfolioRollout) -> dict[str, dict[str, float]]:
    """Per-asset metrics and attribution of a run, plus an ``account`` row.

    Returns:
        ``{symbol: {...}, "account": {...}}``. Per asset: ``pnl_quote`` (after its costs),
        ``contribution`` (``pnl_quote`` / initial equity: the rows sum to the total return),
        ``gross_pnl_quote`` (before its costs), ``fees_quote``, ``slippage_quote``,
        ``funding_quote`` (> 0 paid), ``turnover_quote`` (traded notional), ``turnover``
        (traded notional / mean equity, as the portfolio's), ``fees_frac`` (fees / initial
        equity), ``mean_weight`` (signed, over the bars held), ``mean_abs_weight``,
        ``time_in_market`` (share of bars with a position), ``share_of_pnl`` (its P&L over the
        sum of the assets' absolute P&Ls) and ``asset_return`` (the asset's own close-to-close
        return over the run). The ``account`` row: ``pnl_quote``, ``contribution``,
        ``borrow_quote`` and ``other_quote`` (liquidation and rounding).
    """
    eq0 = float(ro.equity_quote[0])
    mean_eq = float(np.mean(ro.equity_quote))
    pnl = step_pnl(ro).sum(axis=0)
    costs = ro.fees_quote + ro.slippage_quote + ro.funding_quote
    held = ro.weights[1:]
    abs_total = float(np.abs(pnl).sum())
    out: dict[str, dict[str, float]] = {}
    for a, sym in enumerate(ro.symbols):
        out[sym] = {
            "pnl_quote": float(pnl[a]),
            "contribution": float(pnl[a]) / eq0,
            "gross_pnl_quote": float(pnl[a] + costs[a]),
            "fees_quote": float(ro.fees_quote[a]),
            "slippage_quote": float(ro.slippage_quote[a]),
            "funding_quote": float(ro.funding_quote[a]),
            "turnover_quote": float(ro.turnover_quote[a]),
            "turnover": float(ro.turnover_quote[a]) / mean_eq,
            "fees_frac": float(ro.fees_quote[a]) / eq0,
            "mean_weight": float(held[:, a].mean()) if len(held) else 0.0,
            "mean_abs_weight": float(np.abs(held[:, a]).mean()) if len(held) else 0.0,
            "time_in_market": float((ro.position_base[1:, a] != 0).mean()) if len(held) else 0.0,
            "share_of_pnl": float(pnl[a]) / abs_total if abs_total > 0 else math.nan,
            "asset_return": float(ro.close_quote[-1, a] / ro.close_quote[0, a] - 1.0),
        }
    acct = float(ro.equity_quote[-1] - ro.equity_quote[0] - pnl.sum())
    out["account"] = {
        "pnl_quote": acct,
        "contribution": acct / eq0,
        "borrow_quote": ro.borrow_quote,
        "other_quote": acct + ro.borrow_quote,
    }
    return out


def effective_assets(weights: npt.ArrayLike) -> F64:
    """Effective number of assets held per mark: ``(sum |w|)^2 / sum w^2`` (1 = one asset,
    A = equal weights; 0 with no position)."""
    w = np.asarray(weights, dtype=np.float64)
    sq = (w * w).sum(axis=-1)
    g = np.abs(w).sum(axis=-1)
    return np.asarray(np.divide(g * g, sq, out=np.zeros_like(sq), where=sq > 0))


def portfolio_metrics(ro: PortfolioRollout) -> dict[str, float]:
    """The run's metrics (:meth:`PortfolioRollout.metrics`) plus the portfolio's shape:
    ``mean_gross_exposure``, ``mean_net_exposure`` (over the bars), ``max_gross_exposure``,
    ``mean_effective_assets`` (over bars with a position, see :func:`effective_assets`) and
    ``attribution_residual_frac`` (the account row's share of the initial equity: borrow,
    liquidation and rounding)."""
    m = ro.metrics()
    held = ro.weights[1:]
    gross = np.abs(held).sum(axis=1)
    eff = effective_assets(held)
    invested = gross > 0
    attr = asset_attribution(ro)
    m.update({
        "mean_gross_exposure": float(gross.mean()) if len(gross) else 0.0,
        "mean_net_exposure": float(held.sum(axis=1).mean()) if len(held) else 0.0,
        "max_gross_exposure": float(gross.max()) if len(gross) else 0.0,
        "mean_effective_assets": float(eff[invested].mean()) if invested.any() else 0.0,
        "attribution_residual_frac": attr["account"]["contribution"],
    })
    return m


def attribution_rows(attr: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """The attribution as table rows (one per asset, then ``account``), for reports and CSV."""
    return [{"asset": name, **vals} for name, vals in attr.items()]


__all__ = [
    "account_pnl",
    "asset_attribution",
    "attribution_rows",
    "effective_assets",
    "portfolio_metrics",
    "step_pnl",
]
