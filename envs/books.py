"""The books: the one place money moves.

:class:`Books` keeps N independent accounts (one per market or episode) as the columns of one
float64 state matrix; its fields (``cash_quote``, ``position_base``, ...) are views of the
matrix's rows, arrays of shape ``(N,)``. :class:`Account` is the same for one account, with the
fields as Python floats. Both step through the one compiled kernel (its bar is the portfolio
kernel's, :mod:`coinrl.envs.portfolio_bar`, with one asset: :mod:`coinrl.envs.single_kernel`),
whose per-account code is also what TradingEnv and the vector env run each step, so a single env
and a batched env given the same actions produce bit-identical books by construction (and
tested with ``np.array_equal``). TradingEnv, the vector env, the backtester and the paper broker
all move money only through this kernel.

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
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from . import kernel
from . import single_kernel as sk
from .config import EnvConfig
from .domain import Position
from .execution import ExecutionModel

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]
IntArr = npt.NDArray[np.intp]


class _Row:
    """A field of :class:`Books`: the view of its row of the state matrix. Assigning to the
    field writes into that row (the kernel keeps stepping the same memory)."""

    def __init__(self, row: int) -> None:
        self.row = row

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _Row: ...
    @overload
    def __get__(self, obj: Books, objtype: type | None = None) -> F64: ...
    def __get__(self, obj: Books | None, objtype: type | None = None) -> F64 | _Row:
        return self if obj is None else obj._rows[self.row]

    def __set__(self, obj: Books, value: npt.ArrayLike) -> None:
        obj._rows[self.row][...] = value


class _Scalar:
    """A field of :class:`Account`: its cell of the state matrix, as a Python float."""

    def __init__(self, row: int) -> None:
        self.row = row

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _Scalar: ...
    @overload
    def __get__(self, obj: Account, objtype: type | None = None) -> float: ...
    def __get__(self, obj: Account | None, objtype: type | None = None) -> float | _Scalar:
        return self if obj is None else obj._cells[self.row]

    def __set__(self, obj: Account, value: float) -> None:
        obj._cells[self.row] = float(value)


class Books:
    """N accounts, the columns of one state matrix; all amounts in quote currency unless ``_base``.

    Attributes (arrays of shape ``(N,)``, views of the rows of ``state``):
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
        liquidated: bool, whether the last ``step_bar`` liquidated (or found bankrupt) the account.
        state: the ``(kernel.N_ROWS, N)`` float64 matrix itself (the rows after the books
            fields hold the state of the reward of the env that steps these books).

    Example:
        >>> b = Books(2, EnvConfig(taker_fee_rate=0.0, slippage_bps=0.0, rebalance_threshold=0.0))
        >>> one = np.ones(2)
        >>> _ = b.step_bar(np.array([1.0, 0.0]), 100 * one, 110 * one, 90 * one, 105 * one, one)
        >>> b.equity_quote.round(6).tolist()
        [10500.0, 10000.0]
    """

    cash_quote = _Row(kernel.CASH)
    position_base = _Row(sk.QTY)
    avg_entry_quote = _Row(sk.AVG_ENTRY)
    realised_pnl_quote = _Row(kernel.REALISED)
    equity_quote = _Row(kernel.EQUITY)
    mark_price_quote = _Row(sk.MARK)
    fees_paid_quote = _Row(kernel.FEES)
    slippage_paid_quote = _Row(kernel.SLIPPAGE)
    funding_paid_quote = _Row(kernel.FUNDING)
    borrow_paid_quote = _Row(kernel.BORROW)
    turnover_quote = _Row(kernel.TURNOVER)
    shortfall_quote = _Row(kernel.SHORTFALL)
    bars_held = _Row(sk.BARS_HELD)

    def __init__(self, n: int, config: EnvConfig) -> None:
        self.n = int(n)
        self.config = config
        self.execution = ExecutionModel.from_config(config)
        self.initial_cash_quote = float(config.initial_cash_quote)
        self.mmr = float(config.maintenance_margin_rate)
        self.borrow_rate = float(config.borrow_rate_per_bar)
        self.charge_funding = bool(config.use_funding and not config.is_spot)
        self.state: F64 = sk.new_state(self.n, self.initial_cash_quote, by_account=True)
        self._rows = list(self.state)
        self.liquidated: BoolArr = np.zeros(self.n, dtype=bool)
        self._params, self._pa = sk.make_params(config)
        self._zeros = np.zeros(self.n)
        self._kernel = sk.compiled()

    def __getstate__(self) -> dict[str, Any]:
        # the field views are rebuilt on the copy's own state matrix (a copied view would not
        # see the kernel's writes)
        return {k: v for k, v in self.__dict__.items() if k not in ("_rows", "_kernel")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._rows = list(self.state)
        self._kernel = sk.compiled()

    # ------------------------------------------------------------------ state
    def reset(self, idx: IntArr | slice | None = None, mark_price_quote: F64 | float = 0.0) -> None:
        """Return accounts ``idx`` (all by default) to initial cash and no position."""
        sel: IntArr | slice = slice(None) if idx is None else idx
        sk.reset_columns(self.state, sel, self.initial_cash_quote, mark_price_quote)
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
        return np.asarray(_conservation_error(self), dtype=np.float64)

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
        n = self.n
        f = self._zeros if funding_rate is None else _column(funding_rate, n)
        self._kernel.books_step(
            self.state, self._params, self._pa, self.liquidated, _column(target_exposure, n),
            _column(open_quote, n), _column(high_quote, n), _column(low_quote, n),
            _column(close_quote, n), _column(volume_base, n), f,
        )
        if logger.isEnabledFor(logging.DEBUG) and self.liquidated.any():
            idx = np.flatnonzero(self.liquidated)
            logger.debug("liquidated accounts=%s shortfall=%s", idx.tolist(), self.shortfall_quote[idx].tolist())
        return self.liquidated


def _conservation_error(a: Any) -> Any:
    """``equity - (initial + realised + unrealised - costs + shortfall)`` of :class:`Books`
    (arrays) or :class:`Account` (floats): the same attributes, the same formula."""
    expected = (
        a.initial_cash_quote + a.realised_pnl_quote + a.unrealised_pnl_quote
        - a.fees_paid_quote - a.slippage_paid_quote - a.funding_paid_quote
        - a.borrow_paid_quote + a.shortfall_quote
    )
    return a.equity_quote - expected


def _column(x: npt.ArrayLike, n: int) -> F64:
    """``x`` as a float64 array of shape ``(n,)`` (broadcast, not copied, where it can be)."""
    a = np.asarray(x, dtype=np.float64)
    return a if a.shape == (n,) else np.broadcast_to(a, (n,))


def _cells(state: F64) -> Any:
    """A memoryview of a one-column state matrix: item access returns Python floats (fast)."""
    return memoryview(state.reshape(-1))  # type: ignore[arg-type]


class Account:
    """One account: :class:`Books` with N=1, its fields as Python floats (same names, same
    meaning, the same kernel)."""

    __slots__ = (
        "_cells", "_kernel", "_pa", "_params", "borrow_rate", "charge_funding", "config", "execution",
        "initial_cash_quote", "mmr", "state",
    )

    cash_quote = _Scalar(kernel.CASH)
    position_base = _Scalar(sk.QTY)
    avg_entry_quote = _Scalar(sk.AVG_ENTRY)
    realised_pnl_quote = _Scalar(kernel.REALISED)
    equity_quote = _Scalar(kernel.EQUITY)
    mark_price_quote = _Scalar(sk.MARK)
    fees_paid_quote = _Scalar(kernel.FEES)
    slippage_paid_quote = _Scalar(kernel.SLIPPAGE)
    funding_paid_quote = _Scalar(kernel.FUNDING)
    borrow_paid_quote = _Scalar(kernel.BORROW)
    turnover_quote = _Scalar(kernel.TURNOVER)
    shortfall_quote = _Scalar(kernel.SHORTFALL)
    bars_held = _Scalar(sk.BARS_HELD)

    def __init__(self, config: EnvConfig) -> None:
        self.config = config
        self.execution = ExecutionModel.from_config(config)
        self.initial_cash_quote = float(config.initial_cash_quote)
        self.mmr = float(config.maintenance_margin_rate)
        self.borrow_rate = float(config.borrow_rate_per_bar)
        self.charge_funding = bool(config.use_funding and not config.is_spot)
        self.state: F64 = sk.new_state(1, self.initial_cash_quote)
        self._cells = _cells(self.state)
        self._params, self._pa = sk.make_params(config)
        self._kernel = sk.compiled()
        self.reset()

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if k not in ("_cells", "_kernel")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        self._cells = _cells(self.state)
        self._kernel = sk.compiled()

    @property
    def liquidated(self) -> bool:
        """Whether the last ``step_bar`` liquidated (or found bankrupt) the account."""
        return bool(self._cells[kernel.LIQUIDATED] != 0.0)

    @liquidated.setter
    def liquidated(self, value: bool) -> None:
        self._cells[kernel.LIQUIDATED] = 1.0 if value else 0.0

    def reset(self, mark_price_quote: float = 0.0) -> None:
        """Initial cash, no position, no costs."""
        sk.reset_columns(self.state, slice(None), self.initial_cash_quote, mark_price_quote)

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
        return float(_conservation_error(self))

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
        """Scalar form of :meth:`Books.step_bar`; returns whether the account was liquidated."""
        liq: bool = self._kernel.account_step(
            self.state, self._params, self._pa, target_exposure, open_quote, high_quote, low_quote,
            close_quote, volume_base, funding_rate,
        )
        if liq:
            logger.debug("liquidated shortfall=%s", self.shortfall_quote)
        return liq
