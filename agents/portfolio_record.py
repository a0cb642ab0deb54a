"""What a portfolio run records: :class:`PortfolioRollout` and the recorder that fills it.

:mod:`coinrl.agents.portfolio_rollout` runs the loops (policy, weights, plans, and with a risk
layer :mod:`coinrl.agents.portfolio_risk_rollout`); every loop marks its accounts here, so a
portfolio run has one record whatever drove it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from coinrl.envs import kernel
from coinrl.envs import portfolio_kernel as pk
from coinrl.envs.portfolio_vector import PortfolioVectorEnv
from coinrl.pipeline.timeframes import bars_per_year

from .metrics import trading_metrics

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

@dataclass(frozen=True, eq=False)
class PortfolioRollout:
    """One portfolio account's run over a split (``T`` decisions, ``T + 1`` marks, ``A`` assets).

    Attributes:
        symbols: the ``A`` asset names.
        timeframe: bar size, for annualisation.
        ts_ms: ``T + 1`` open times of the bars whose closes the marks are taken at (UTC ms).
        equity_quote: ``T + 1`` equity marks (quote currency); ``[0]`` the initial cash.
        position_base: ``(T + 1, A)`` positions at each mark (base units of each asset).
        weights: ``(T + 1, A)`` drifted weights ``qty * close / equity`` at each mark.
        target_weights: ``(T, A)`` target weights of each decision (after the action map).
        actions: ``(T, ...)`` the env actions (the weights themselves for a weights run).
        rewards: ``T`` env rewards.
        close_quote, open_quote: ``(T + 1, A)`` closes the marks were taken at and the opens
            of the same bars (``open_quote[k]``, ``k >= 1``, is where decision ``k - 1`` filled).
        fees_cum_quote, slippage_cum_quote, funding_cum_quote, turnover_cum_quote,
            realised_cum_quote: ``(T + 1, A)`` running totals of the books per asset (quote;
            funding > 0 is paid, < 0 received; turnover is traded notional).
        borrow_cum_quote: ``T + 1`` running borrow cost of the account (quote).
        scaled_rebalances: rebalances the account could not afford in full and scaled down.
        liquidated: whether the account was liquidated.
        liquidation_mark: mark index of the liquidation, None without one.
    """

    symbols: tuple[str, ...]
    timeframe: str
    ts_ms: I64
    equity_quote: F64
    position_base: F64
    weights: F64
    target_weights: F64
    actions: npt.NDArray[Any]
    rewards: F64
    close_quote: F64
    open_quote: F64
    fees_cum_quote: F64
    slippage_cum_quote: F64
    funding_cum_quote: F64
    turnover_cum_quote: F64
    realised_cum_quote: F64
    borrow_cum_quote: F64
    scaled_rebalances: int = 0
    liquidated: bool = False
    liquidation_mark: int | None = None

    @property
    def n_steps(self) -> int:
        """Number of decisions ``T``."""
        return len(self.target_weights)

    @property
    def n_assets(self) -> int:
        """Number of assets ``A``."""
        return len(self.symbols)

    @property
    def periods_per_year(self) -> float:
        """Bars in a 365-day year for this rollout's timeframe."""
        return bars_per_year(self.timeframe)

    @property
    def gross_exposure(self) -> F64:
        """``T + 1`` gross exposures ``sum_a |w_a|`` at the marks."""
        return np.abs(self.weights).sum(axis=1)

    @property
    def fees_quote(self) -> F64:
        """Fees paid per asset over the run (A,), quote."""
        return self.fees_cum_quote[-1] - self.fees_cum_quote[0]

    @property
    def slippage_quote(self) -> F64:
        """Slippage and impact paid per asset over the run (A,), quote."""
        return self.slippage_cum_quote[-1] - self.slippage_cum_quote[0]

    @property
    def funding_quote(self) -> F64:
        """Funding paid per asset over the run (A,), quote (negative: received)."""
        return self.funding_cum_quote[-1] - self.funding_cum_quote[0]

    @property
    def turnover_quote(self) -> F64:
        """Traded notional per asset over the run (A,), quote."""
        return self.turnover_cum_quote[-1] - self.turnover_cum_quote[0]

    @property
    def borrow_quote(self) -> float:
        """Borrow paid by the account over the run, quote."""
        return float(self.borrow_cum_quote[-1] - self.borrow_cum_quote[0])

    def metrics(self) -> dict[str, float]:
        """The portfolio's metrics: :func:`~coinrl.agents.metrics.trading_metrics` of the
        equity curve (annualised with :attr:`periods_per_year`, as the single-asset
        ``Rollout``), with the gross exposure ``sum |w|`` standing for the exposure (so a
        "trade" is a span of being invested at all), plus ``fees_frac``, ``slippage_frac``,
        ``funding_frac`` and ``borrow_frac`` (each cost over the initial equity),
        ``scaled_rebalances``, ``liquidated`` (1.0/0.0) and ``n_assets``.

        ``turnover`` is the traded notional of all assets over the mean equity.
        """
        eq0 = float(self.equity_quote[0])
        fees = float(self.fees_quote.sum())
        slip = float(self.slippage_quote.sum())
        out = trading_metrics(
            self.equity_quote, self.gross_exposure, self.periods_per_year,
            fees_paid_quote=fees, slippage_paid_quote=slip,
            turnover_quote=float(self.turnover_quote.sum()),
        )
        out.update({
            "fees_frac": fees / eq0,
            "slippage_frac": slip / eq0,
            "funding_frac": float(self.funding_quote.sum()) / eq0,
            "borrow_frac": self.borrow_quote / eq0,
            "scaled_rebalances": float(self.scaled_rebalances),
            "liquidated": 1.0 if self.liquidated else 0.0,
            "n_assets": float(self.n_assets),
        })
        return out


ASSET_TOTALS = {"fees": pk.A_FEES, "slippage": pk.A_SLIPPAGE, "funding": pk.A_FUNDING,
                 "turnover": pk.A_TURNOVER, "realised": pk.A_REALISED}
"""Per-asset running totals of the books read off the state's asset rows."""


class Recorder:
    """The marks of N whole-split accounts; an account's marks freeze once its episode ends.

    Each step copies the info arrays and the state's asset rows into preallocated ``(T + 1,
    ...)`` buffers (one copy each; the per-asset running totals are read off them at the end).
    """

    def __init__(self, venv: PortfolioVectorEnv, info: Mapping[str, Any], n_steps: int) -> None:
        n, a = venv.num_envs, venv.n_assets
        w = venv.config.window
        bars = venv.arrays.bars
        self.venv = venv
        self.k = 0
        self.ts = np.ascontiguousarray(venv.arrays.ts_ms[w - 1 : w + n_steps])
        self.close = np.ascontiguousarray(bars[w - 1 : w + n_steps, :, pk.B_CLOSE])
        self.open = np.ascontiguousarray(bars[w - 1 : w + n_steps, :, pk.B_OPEN])
        self.eq = np.zeros((n_steps + 1, n))
        self.qty = np.zeros((n_steps + 1, n, a))
        self.w = np.zeros((n_steps + 1, n, a))
        self.rew = np.zeros((n_steps, n))
        self.assets = np.zeros((n_steps + 1, a * pk.N_ASSET_ROWS, n))  # the state's asset rows
        self.acct = np.zeros((n_steps + 1, 2, n))  # borrow, scaled rebalances
        self.done = np.zeros(n, dtype=bool)
        self.liq_mark = np.full(n, -1, dtype=np.int64)
        self._mark(0, info)

    def _mark(self, k: int, info: Mapping[str, Any]) -> None:
        s = self.venv._state  # the books' state matrix (read only)
        self.eq[k] = info["equity_quote"]
        self.qty[k] = info["position_base"]
        self.w[k] = info["weights"]
        self.assets[k] = s[pk.N_ACCT_ROWS:]
        self.acct[k, 0] = s[kernel.BORROW]
        self.acct[k, 1] = s[pk.SCALED]
        d = self.done
        if k and d.any():  # ended accounts: flat, equity and totals frozen
            self.eq[k, d] = self.eq[k - 1, d]
            self.qty[k, d] = 0.0
            self.w[k, d] = 0.0
            self.assets[k][:, d] = self.assets[k - 1][:, d]
            self.acct[k][:, d] = self.acct[k - 1][:, d]

    def step(self, rewards: F64, terminated: npt.NDArray[np.bool_], info: Mapping[str, Any]) -> None:
        k = self.k + 1
        self.k = k
        self.rew[k - 1] = np.where(self.done, 0.0, rewards)
        self._mark(k, info)
        newly = terminated & ~self.done
        self.liq_mark[newly] = k
        self.done |= newly

    def rollouts(self, actions: npt.NDArray[Any], targets: F64) -> list[PortfolioRollout]:
        venv = self.venv
        cum = {f: np.ascontiguousarray(self.assets[:, field :: pk.N_ASSET_ROWS, :].transpose(2, 0, 1))
               for f, field in ASSET_TOTALS.items()}
        return [
            PortfolioRollout(
                symbols=tuple(venv.symbols), timeframe=venv.arrays.pd.timeframe, ts_ms=self.ts,
                equity_quote=np.ascontiguousarray(self.eq[:, i]),
                position_base=np.ascontiguousarray(self.qty[:, i]),
                weights=np.ascontiguousarray(self.w[:, i]),
                target_weights=targets[i], actions=actions[i],
                rewards=np.ascontiguousarray(self.rew[:, i]),
                close_quote=self.close, open_quote=self.open,
                fees_cum_quote=cum["fees"][i], slippage_cum_quote=cum["slippage"][i],
                funding_cum_quote=cum["funding"][i], turnover_cum_quote=cum["turnover"][i],
                realised_cum_quote=cum["realised"][i],
                borrow_cum_quote=np.ascontiguousarray(self.acct[:, 0, i]),
                scaled_rebalances=int(self.acct[-1, 1, i]), liquidated=bool(self.liq_mark[i] >= 0),
                liquidation_mark=int(self.liq_mark[i]) if self.liq_mark[i] >= 0 else None,
            )
            for i in range(venv.num_envs)
        ]


__all__ = ["ASSET_TOTALS", "PortfolioRollout", "Recorder"]
