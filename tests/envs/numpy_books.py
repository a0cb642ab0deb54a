"""The numpy books of the first envs release, kept as an independent oracle for the kernel.

``NumpyBooks.step_bar`` is ``coinrl.envs.books.Books.step_bar`` as it was before the env moved to
the compiled kernel (:mod:`coinrl.envs.kernel`): whole-array numpy operations built on
:func:`trade_vec` and :func:`size_orders` (the numpy vector forms, and the scalar :func:`size_order`,
kept here as oracles: production has one implementation, the kernel's), an implementation written independently of the kernel's scalar code. The kernel must give the
same floats, to the last bit (``test_kernel.py``). Do not "fix" it to match the kernel.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from coinrl.envs.config import EnvConfig
from coinrl.envs.execution import MIN_VOLUME_BASE, SHAVE, ExecutionModel

F64 = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]
IntArr = npt.NDArray[np.intp]

FIELDS = (
    "cash_quote", "position_base", "avg_entry_quote", "realised_pnl_quote", "equity_quote",
    "mark_price_quote", "fees_paid_quote", "slippage_paid_quote", "funding_paid_quote",
    "borrow_paid_quote", "turnover_quote", "shortfall_quote", "bars_held",
)


def trade_vec(qty_base: F64, avg_entry_quote: F64, dq_base: F64, price_quote: F64) -> tuple[F64, F64, F64]:
    """Vector form of :func:`coinrl.envs.domain.trade` (same operations, same order).

    Returns:
        ``(new_qty_base, new_avg_entry_quote, realised_pnl_quote)``, arrays of shape ``(N,)``.
    """
    aq = np.abs(qty_base)
    adq = np.abs(dq_base)
    new = qty_base + dq_base
    qd = qty_base * dq_base
    # realised on reduced quantity: (p - avg) * min(|dq|, |qty|), negated for shorts
    realised = (price_quote - avg_entry_quote) * np.minimum(adq, aq)
    realised *= np.sign(qty_base)
    realised *= qd < 0.0
    # average entry: re-weighted on increase, price on open/flip, 0 when flat, else unchanged
    avg = avg_entry_quote.copy()
    np.divide(avg_entry_quote * aq + price_quote * adq, np.abs(new), out=avg, where=qd > 0.0)
    np.copyto(avg, price_quote, where=qty_base * new <= 0.0)
    np.copyto(avg, 0.0, where=new == 0.0)
    return new, avg, realised


def size_order(
    self: ExecutionModel, target_exposure: float, cash_quote: float, qty_base: float, price_quote: float,
    volume_base: float,
) -> tuple[float, float]:
    """The scalar sizing rule as ``ExecutionModel.size_order`` wrote it before the brokers moved to
    the kernel's :func:`coinrl.envs.kernel._size_order_eq` (moved here: an oracle, not production).

    Returns:
        ``(dq_base, target_qty_base)``: signed order quantity after the exchange rules (0.0 when
        not sent) and the capped target quantity it aims for.
    """
    equity = cash_quote + qty_base * price_quote
    eq_base = equity / price_quote
    x = target_exposure * eq_base
    if self.impact_coef > 0.0:
        cf = self.base_cost_frac + min(
            self.impact_coef * (abs(x - qty_base) / max(volume_base, MIN_VOLUME_BASE)),
            self.max_impact_frac,
        )
        k = self.max_leverage / (1.0 + self.max_leverage * cf) * SHAVE
    else:
        cf = self._cf
        k = self._k
    cap = k * (eq_base + qty_base * cf)
    if x > cap:
        x = cap
    elif self.allow_short:
        low = -k * (eq_base - qty_base * cf)
        if x < low:
            x = low
    if x == 0.0:
        return -qty_base, x
    dq = x - qty_base
    if self.lot_size_base > 0.0:
        dq = math.trunc(dq / self.lot_size_base) * self.lot_size_base
        # lot multiples summed in floats need not cancel: an order toward a target on the
        # position's side (or flat) that would flip the position by rounding closes it exactly
        if qty_base * (qty_base + dq) < 0.0 and x * qty_base >= 0.0:
            dq = -qty_base
    notional = abs(dq) * price_quote
    if notional < self.min_notional_quote or notional < self.rebalance_threshold * equity:
        return 0.0, x
    return dq, x


def size_orders(
    self: ExecutionModel, target_exposure: F64, cash_quote: F64, qty_base: F64, price_quote: F64,
    volume_base: F64, equity_quote: F64 | None = None,
) -> tuple[F64, F64]:
    """Vector form of :func:`size_order` of ``self``
    over arrays of shape ``(N,)`` (moved here from the execution model: the oracle's own sizing).

    Args:
        equity_quote: ``cash + qty * price`` if the caller has it (saves recomputing it).

    Returns:
        ``(dq_base, notional_quote)``: the orders (0 where not sent) and ``|dq| * price``.
    """
    equity = cash_quote + qty_base * price_quote if equity_quote is None else equity_quote
    eq_base = equity / price_quote
    x = target_exposure * eq_base
    if self.impact_coef > 0.0:
        cf: F64 | float = self.base_cost_frac + np.minimum(
            self.impact_coef * (np.abs(x - qty_base) / np.maximum(volume_base, MIN_VOLUME_BASE)),
            self.max_impact_frac,
        )
        k: F64 | float = self.max_leverage / (1.0 + self.max_leverage * cf) * SHAVE
    else:
        cf = self._cf
        k = self._k
    qcf = qty_base * cf
    np.minimum(x, k * (eq_base + qcf), out=x)
    if self.allow_short:
        np.maximum(x, -k * (eq_base - qcf), out=x)
    dq = x - qty_base  # a target of exactly 0 gives dq = -qty exactly: a full close
    if self.lot_size_base > 0.0:
        dq = np.trunc(dq / self.lot_size_base) * self.lot_size_base
        flip = (qty_base * (qty_base + dq) < 0.0) & (x * qty_base >= 0.0)  # see size_order
        np.copyto(dq, -qty_base, where=flip | (x == 0.0))
    notional = np.abs(dq)
    notional *= price_quote
    skip = notional < self.rebalance_threshold * equity
    if self.min_notional_quote > 0.0:
        skip |= notional < self.min_notional_quote
    skip &= x != 0.0  # a close to flat is always sent
    np.putmask(dq, skip, 0.0)
    np.putmask(notional, skip, 0.0)
    return dq, notional


class NumpyBooks:
    """N accounts on plain numpy arrays (the pre-kernel ``Books``)."""

    def __init__(self, n: int, config: EnvConfig) -> None:
        self.n = int(n)
        self.config = config
        self.execution = ExecutionModel.from_config(config)
        self.initial_cash_quote = float(config.initial_cash_quote)
        self.mmr = float(config.maintenance_margin_rate)
        self.borrow_rate = float(config.borrow_rate_per_bar)
        self.charge_funding = bool(config.use_funding and not config.is_spot)
        shape = (self.n,)
        self.cash_quote: F64 = np.full(shape, self.initial_cash_quote)
        self.position_base: F64 = np.zeros(shape)
        self.avg_entry_quote: F64 = np.zeros(shape)
        self.realised_pnl_quote: F64 = np.zeros(shape)
        self.equity_quote: F64 = np.full(shape, self.initial_cash_quote)
        self.mark_price_quote: F64 = np.zeros(shape)
        self.fees_paid_quote: F64 = np.zeros(shape)
        self.slippage_paid_quote: F64 = np.zeros(shape)
        self.funding_paid_quote: F64 = np.zeros(shape)
        self.borrow_paid_quote: F64 = np.zeros(shape)
        self.turnover_quote: F64 = np.zeros(shape)
        self.shortfall_quote: F64 = np.zeros(shape)
        self.bars_held: F64 = np.zeros(shape)
        self.liquidated: BoolArr = np.zeros(shape, dtype=bool)

    def step_bar(
        self,
        target_exposure: F64,
        open_quote: F64,
        high_quote: F64,
        low_quote: F64,
        close_quote: F64,
        volume_base: F64,
        funding_rate: F64 | None = None,
    ) -> BoolArr:
        """Fill the decisions at this bar's open and mark every account at its close.

        Args:
            target_exposure: wanted position notional / equity per account, within
                ``config.exposure_bounds`` (the env clips actions to them).
            open_quote, high_quote, low_quote, close_quote: this bar's prices per account.
            volume_base: this bar's volume per account (impact term).
            funding_rate: this bar's funding rate per account (fraction of notional), or None.

        Returns:
            ``liquidated``: bool array, True where the account was liquidated this bar (or is
            bankrupt); its position is then flat and its cash >= 0.
        """
        cash = self.cash_quote
        qty = self.position_base
        mmr = self.mmr
        liq = self.liquidated
        qty_old = qty.copy()
        # 1. funding on the position held into the funding time, at the open
        if funding_rate is not None and self.charge_funding:
            pay = funding_rate * qty * open_quote
            cash -= pay
            self.funding_paid_quote += pay
        # 2. gap through the liquidation price: close at the open
        np.less_equal(cash + (qty - mmr * np.abs(qty)) * open_quote, 0.0, out=liq)
        if liq.any():
            idx = np.flatnonzero(liq)
            self._close(idx, open_quote[idx])
            target_exposure = np.where(liq, 0.0, target_exposure)
        # 3. rebalance at the open
        exe = self.execution
        dq, notional = size_orders(exe, target_exposure, cash, qty, open_quote, volume_base)
        fee = notional * exe.taker_fee_rate
        if exe.impact_coef > 0.0:
            slip = notional * (exe.slippage_frac + np.minimum(
                exe.impact_coef * (np.abs(dq) / np.maximum(volume_base, MIN_VOLUME_BASE)),
                exe.max_impact_frac,
            ))
        else:
            slip = notional * exe.slippage_frac
        cash -= dq * open_quote
        cash -= fee
        cash -= slip
        self.fees_paid_quote += fee
        self.slippage_paid_quote += slip
        self.turnover_quote += notional
        new, avg, realised = trade_vec(qty, self.avg_entry_quote, dq, open_quote)
        qty[...] = new
        self.avg_entry_quote[...] = avg
        self.realised_pnl_quote += realised
        # 4. the adverse wick reaches the new position's liquidation price
        den = qty - mmr * np.abs(qty)
        wick = cash + den * np.where(qty > 0.0, low_quote, high_quote) <= 0.0
        if wick.any():
            idx = np.flatnonzero(wick)
            q = qty[idx]
            o = open_quote[idx]
            d = den[idx]
            p_liq = np.divide(-cash[idx], d, out=o.copy(), where=d != 0.0)
            px = np.where(q > 0.0, np.minimum(o, p_liq), np.maximum(o, p_liq))
            self._close(idx, px)
            liq |= wick
        # 5. borrow on short notional and negative cash
        if self.borrow_rate > 0.0:
            b = self.borrow_rate * (np.maximum(-qty, 0.0) * close_quote + np.maximum(-cash, 0.0))
            cash -= b
            self.borrow_paid_quote += b
        # 6. mark at the close; bars held: +1 while the direction holds, 1 on entry, 0 flat
        np.add(cash, qty * close_quote, out=self.equity_quote)
        self.mark_price_quote[...] = close_quote
        bars = self.bars_held
        bars *= qty_old * qty > 0.0
        bars += qty != 0.0
        return liq

    def _close(self, idx: IntArr, price_quote: F64) -> None:
        """Liquidate accounts ``idx`` at ``price_quote``: close, pay taker fee, floor cash at 0."""
        q = self.position_base[idx]
        new, avg, realised = trade_vec(q, self.avg_entry_quote[idx], -q, price_quote)
        cash = self.cash_quote[idx] + q * price_quote
        notional = np.abs(q) * price_quote
        fee = notional * self.execution.taker_fee_rate
        cash = cash - fee
        short = np.maximum(-cash, 0.0)
        self.shortfall_quote[idx] += short
        self.cash_quote[idx] = cash + short
        self.fees_paid_quote[idx] += fee
        self.turnover_quote[idx] += notional
        self.realised_pnl_quote[idx] += realised
        self.position_base[idx] = new
        self.avg_entry_quote[idx] = avg
