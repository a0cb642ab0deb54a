"""The accounting kernel: the one place money moves.

:class:`Books` keeps N independent accounts (one per market or episode) on preallocated float64
arrays of shape ``(N,)``; :class:`Account` is the same kernel for one account on Python floats,
the N=1 fast path behind :class:`~coinrl.envs.trading_env.TradingEnv` (numpy calls on 1-element
arrays would cost more than the arithmetic). Both perform the same IEEE operations in the same
order, so a single env and a batched env given the same actions produce bit-identical books
(tested with ``np.array_equal``). TradingEnv, the vector env, the backtester and the paper broker
all move money only through these two classes.

One bar, ``step_bar``, in this order (decision taken at the previous bar's close):

1. **Funding** (perpetuals): at the bar's open, ``funding_rate * qty * open`` is paid on the
   position held into the funding time (longs pay positive rates, shorts receive them).
2. **Gap liquidation**: if the open is already beyond the liquidation price of that position,
   it is closed at the open (the gap), paying the taker fee; a loss beyond the account's equity
   (its posted margin: the whole account backs the position, cross margin) is not charged
   to it: cash floors at 0 and the uncovered part is recorded in ``shortfall_quote`` (the venue's
   insurance fund).
3. **Rebalance** to the target exposure at the open, per :mod:`coinrl.envs.execution`.
4. **Wick liquidation**: if the bar's adverse extreme (low for longs, high for shorts) reaches
   the liquidation price of the new position, it is closed at that price (at the open if the
   open is already beyond it), with the same fee and cap as 2. Liquidation price ``P`` solves
   ``equity(P) = maintenance_margin_rate * |qty| * P``: ``P = -cash / (qty - mmr * |qty|)``.
5. **Borrow**: ``borrow_rate_per_bar * (short notional at the close + negative cash)``.
6. **Mark** at the close: ``equity = cash + qty * close``.

Invariant (money is conserved), at every mark::

    equity = cash + qty * price
           = initial_cash + realised + unrealised - fees - slippage - funding - borrow + shortfall

and a spot account (``allow_short=False``, ``max_leverage=1``) never has negative cash or
quantity (the buying-power cap of :mod:`coinrl.envs.execution` guarantees it).
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from .config import EnvConfig
from .domain import Position, trade
from .execution import MIN_VOLUME_BASE, ExecutionModel

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]
IntArr = npt.NDArray[np.intp]


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


class Books:
    """N accounts on arrays of shape ``(N,)``; all amounts in quote currency unless ``_base``.

    Attributes:
        cash_quote: cash (negative = borrowed quote).
        position_base: position quantity (negative = short).
        avg_entry_quote: average entry (reference) price, 0 when flat.
        realised_pnl_quote: PnL of closed quantity.
        equity_quote: cash + position marked at the last close.
        mark_price_quote: the last close the books were marked at.
        fees_paid_quote, slippage_paid_quote, funding_paid_quote, borrow_paid_quote: costs so far.
        turnover_quote: traded notional so far.
        shortfall_quote: losses beyond posted margin not charged to the account (insurance fund).
        bars_held: bars the current position has been held (same direction), 0 when flat.
        liquidated: whether the last ``step_bar`` liquidated (or found bankrupt) the account.

    Example:
        >>> b = Books(2, EnvConfig(taker_fee_rate=0.0, slippage_bps=0.0, rebalance_threshold=0.0))
        >>> one = np.ones(2)
        >>> _ = b.step_bar(np.array([1.0, 0.0]), 100 * one, 110 * one, 90 * one, 105 * one, one)
        >>> b.equity_quote.round(6).tolist()
        [10500.0, 10000.0]
    """

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

    # ------------------------------------------------------------------ state
    def reset(self, idx: IntArr | slice | None = None, mark_price_quote: F64 | float = 0.0) -> None:
        """Return accounts ``idx`` (all by default) to initial cash and no position."""
        sel: IntArr | slice = slice(None) if idx is None else idx
        self.cash_quote[sel] = self.initial_cash_quote
        self.equity_quote[sel] = self.initial_cash_quote
        self.mark_price_quote[sel] = mark_price_quote
        for arr in (
            self.position_base, self.avg_entry_quote, self.realised_pnl_quote,
            self.fees_paid_quote, self.slippage_paid_quote, self.funding_paid_quote,
            self.borrow_paid_quote, self.turnover_quote, self.shortfall_quote, self.bars_held,
        ):
            arr[sel] = 0.0
        self.liquidated[sel] = False

    @property
    def unrealised_pnl_quote(self) -> F64:
        """PnL of open positions marked at the last close."""
        return (self.mark_price_quote - self.avg_entry_quote) * self.position_base

    def liquidation_price_quote(self) -> F64:
        """Price at which each account's equity equals its maintenance margin (NaN when flat
        or when no positive price liquidates it, as for a spot account)."""
        qty = self.position_base
        den = qty - self.mmr * np.abs(qty)
        p = np.divide(-self.cash_quote, den, out=np.full(self.n, np.nan), where=den != 0.0)
        p[p <= 0.0] = np.nan
        return p

    def position(self, i: int, symbol: str = "") -> Position:
        """Snapshot of account ``i`` as a :class:`~coinrl.envs.domain.Position`."""
        return Position(
            symbol=symbol,
            initial_cash_quote=self.initial_cash_quote,
            cash_quote=float(self.cash_quote[i]),
            qty_base=float(self.position_base[i]),
            avg_entry_quote=float(self.avg_entry_quote[i]),
            realised_pnl_quote=float(self.realised_pnl_quote[i]),
            fees_paid_quote=float(self.fees_paid_quote[i]),
            slippage_paid_quote=float(self.slippage_paid_quote[i]),
            funding_paid_quote=float(self.funding_paid_quote[i]),
            borrow_paid_quote=float(self.borrow_paid_quote[i]),
        )

    def conservation_error_quote(self) -> F64:
        """``equity - (initial + realised + unrealised - costs + shortfall)``: ~0 (rounding)."""
        expected = (
            self.initial_cash_quote + self.realised_pnl_quote + self.unrealised_pnl_quote
            - self.fees_paid_quote - self.slippage_paid_quote - self.funding_paid_quote
            - self.borrow_paid_quote + self.shortfall_quote
        )
        return self.equity_quote - expected

    # ------------------------------------------------------------------ the bar
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
        dq, notional = exe.size_orders(target_exposure, cash, qty, open_quote, volume_base)
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
        logger.debug("liquidated accounts=%s price=%s shortfall=%s", idx.tolist(), price_quote.tolist(), short.tolist())


class Account:
    """One account on Python floats: :class:`Books` with N=1, bit for bit (see module doc).

    Attributes have the same names and meaning as :class:`Books`' arrays, as floats.
    """

    __slots__ = (
        "avg_entry_quote", "bars_held", "borrow_paid_quote", "borrow_rate", "cash_quote",
        "charge_funding", "config", "equity_quote", "execution", "fees_paid_quote",
        "funding_paid_quote", "initial_cash_quote", "liquidated", "mark_price_quote", "mmr",
        "position_base", "realised_pnl_quote", "shortfall_quote", "slippage_paid_quote",
        "turnover_quote", "_fee_rate", "_impact", "_size_order", "_slip_frac", "_borrow", "_plain",
        "_k", "_cf", "_short", "_thr", "_consts",
    )

    def __init__(self, config: EnvConfig) -> None:
        self.config = config
        self.execution = ExecutionModel.from_config(config)
        self.initial_cash_quote = float(config.initial_cash_quote)
        self.mmr = float(config.maintenance_margin_rate)
        self.borrow_rate = float(config.borrow_rate_per_bar)
        self.charge_funding = bool(config.use_funding and not config.is_spot)
        self._fee_rate = self.execution.taker_fee_rate
        self._slip_frac = self.execution.slippage_frac
        self._impact = self.execution.impact_coef > 0.0
        self._borrow = self.borrow_rate > 0.0
        self._size_order = self.execution.size_order
        exe = self.execution
        self._plain = exe.impact_coef == 0.0 and exe.lot_size_base == 0.0 and exe.min_notional_quote == 0.0
        self._k = exe._k
        self._cf = exe._cf
        self._short = exe.allow_short
        self._thr = exe.rebalance_threshold
        self._consts = (
            self.mmr, self._plain, self._k, self._cf, self._short, self._thr, self._fee_rate,
            self._impact, self._slip_frac, self._borrow, self.charge_funding,
        )
        self.reset()

    def reset(self, mark_price_quote: float = 0.0) -> None:
        """Initial cash, no position, no costs."""
        self.cash_quote = self.initial_cash_quote
        self.equity_quote = self.initial_cash_quote
        self.mark_price_quote = mark_price_quote
        self.position_base = 0.0
        self.avg_entry_quote = 0.0
        self.realised_pnl_quote = 0.0
        self.fees_paid_quote = 0.0
        self.slippage_paid_quote = 0.0
        self.funding_paid_quote = 0.0
        self.borrow_paid_quote = 0.0
        self.turnover_quote = 0.0
        self.shortfall_quote = 0.0
        self.bars_held = 0.0
        self.liquidated = False

    @property
    def unrealised_pnl_quote(self) -> float:
        """PnL of the open position marked at the last close."""
        return (self.mark_price_quote - self.avg_entry_quote) * self.position_base

    def liquidation_price_quote(self) -> float:
        """Liquidation price of the open position (NaN when none is reachable)."""
        qty = self.position_base
        den = qty - self.mmr * abs(qty)
        if den == 0.0:
            return float("nan")
        p = -self.cash_quote / den
        return p if p > 0.0 else float("nan")

    def position(self, symbol: str = "") -> Position:
        """Snapshot as a :class:`~coinrl.envs.domain.Position`."""
        return Position(
            symbol=symbol,
            initial_cash_quote=self.initial_cash_quote,
            cash_quote=self.cash_quote,
            qty_base=self.position_base,
            avg_entry_quote=self.avg_entry_quote,
            realised_pnl_quote=self.realised_pnl_quote,
            fees_paid_quote=self.fees_paid_quote,
            slippage_paid_quote=self.slippage_paid_quote,
            funding_paid_quote=self.funding_paid_quote,
            borrow_paid_quote=self.borrow_paid_quote,
        )

    def conservation_error_quote(self) -> float:
        """Scalar form of :meth:`Books.conservation_error_quote`."""
        expected = (
            self.initial_cash_quote + self.realised_pnl_quote + self.unrealised_pnl_quote
            - self.fees_paid_quote - self.slippage_paid_quote - self.funding_paid_quote
            - self.borrow_paid_quote + self.shortfall_quote
        )
        return self.equity_quote - expected

    def step_bar(
        self,
        target_exposure: float,
        open_quote: float,
        high_quote: float,
        low_quote: float,
        close_quote: float,
        volume_base: float,
        funding_rate: float = 0.0,
    ) -> bool:
        """Scalar form of :meth:`Books.step_bar`; returns whether the account was liquidated.

        The trade arithmetic is :func:`coinrl.envs.domain.trade` written out in place (a call
        costs as much as the arithmetic here); tests prove the two agree bit for bit.
        """
        cash = self.cash_quote
        qty = self.position_base
        qty_old = qty
        liq = False
        # the constants in one load (attribute loads are a good part of a Python step)
        mmr, plain, k, cf, short, thr, fee_rate, impact, slip_frac, borrow, charge_funding = self._consts
        # 1. funding on the position held into the funding time
        if funding_rate != 0.0 and charge_funding:
            pay = funding_rate * qty * open_quote
            cash -= pay
            self.funding_paid_quote += pay
            self.cash_quote = cash
        # 2. gap liquidation at the open. Only a short or borrowed cash can be liquidated: with
        # qty >= 0 and cash > 0 the margin cash + qty * (1 - mmr) * price is positive (prefilter)
        if (qty < 0.0 or cash <= 0.0) and cash + (qty - mmr * abs(qty)) * open_quote <= 0.0:
            self.cash_quote = cash
            self._close(open_quote)
            cash = self.cash_quote
            qty = self.position_base
            target_exposure = 0.0
            liq = True
        # 3. rebalance at the open. Sizing and exchange rules are ExecutionModel.size_order,
        # written out in place for the common case (no impact, no lot size, no minimum notional)
        if plain:
            equity = cash + qty * open_quote
            eq_base = equity / open_quote
            x = target_exposure * eq_base
            qcf = qty * cf
            cap = k * (eq_base + qcf)
            if x > cap:
                x = cap
            elif short:
                low = -k * (eq_base - qcf)
                if x < low:
                    x = low
            dq = x - qty
            if x != 0.0 and abs(dq) * open_quote < thr * equity:
                dq = 0.0
        else:
            dq = self._size_order(target_exposure, cash, qty, open_quote, volume_base)[0]
        if dq != 0.0:
            adq = abs(dq)
            notional = adq * open_quote
            fee = notional * fee_rate
            if impact:
                exe = self.execution
                sf = exe.slippage_frac + min(
                    exe.impact_coef * (adq / max(volume_base, MIN_VOLUME_BASE)), exe.max_impact_frac
                )
            else:
                sf = slip_frac
            slip = notional * sf
            cash = cash - dq * open_quote - fee - slip
            self.cash_quote = cash
            self.fees_paid_quote += fee
            self.slippage_paid_quote += slip
            self.turnover_quote += notional
            # domain.trade(qty, avg, dq, open_quote), in place
            new = qty + dq
            qd = qty * dq
            if qd < 0.0:
                aq = abs(qty)
                r = (open_quote - self.avg_entry_quote) * (adq if adq < aq else aq)
                self.realised_pnl_quote += r if qty > 0.0 else -r
            if new == 0.0:
                self.avg_entry_quote = 0.0
            elif qty * new <= 0.0:
                self.avg_entry_quote = open_quote
            elif qd > 0.0:
                self.avg_entry_quote = (self.avg_entry_quote * abs(qty) + open_quote * adq) / abs(new)
            qty = new
            self.position_base = qty
        # 4. wick liquidation (same prefilter: a long or flat account with cash > 0 is safe)
        if qty < 0.0 or cash <= 0.0:
            adverse = low_quote if qty > 0.0 else high_quote
            den = qty - mmr * abs(qty)
            if cash + den * adverse <= 0.0:
                if den != 0.0:
                    p_liq = -cash / den
                    px = (open_quote if open_quote < p_liq else p_liq) if qty > 0.0 else (
                        open_quote if open_quote > p_liq else p_liq
                    )
                else:
                    px = open_quote
                self._close(px)
                cash = self.cash_quote
                qty = self.position_base
                liq = True
        # 5. borrow on short notional and negative cash
        if borrow:
            b = self.borrow_rate * (max(-qty, 0.0) * close_quote + max(-cash, 0.0))
            cash -= b
            self.borrow_paid_quote += b
            self.cash_quote = cash
        # 6. mark at the close
        self.equity_quote = cash + qty * close_quote
        self.mark_price_quote = close_quote
        if qty_old * qty > 0.0:
            self.bars_held += 1.0
        else:
            self.bars_held = 1.0 if qty != 0.0 else 0.0
        self.liquidated = liq
        return liq

    def _close(self, price_quote: float) -> None:
        q = self.position_base
        new, avg, realised = trade(q, self.avg_entry_quote, -q, price_quote)
        cash = self.cash_quote + q * price_quote
        notional = abs(q) * price_quote
        fee = notional * self.execution.taker_fee_rate
        cash = cash - fee
        short = max(-cash, 0.0)
        self.shortfall_quote += short
        self.cash_quote = cash + short
        self.fees_paid_quote += fee
        self.turnover_quote += notional
        self.realised_pnl_quote += realised
        self.position_base = new
        self.avg_entry_quote = avg
        logger.debug("liquidated price=%s shortfall=%s", price_quote, short)
