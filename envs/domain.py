"""Trading domain objects shared by the simulator (envs) and the brokers (live).

``Order`` and ``Fill`` are frozen; :class:`Position` is single-mutator: :meth:`Position.apply` is the
one place its cash and quantity change, and it refuses a fill (or charge) id it has already seen,
so a replayed exchange message is never double-counted.

Accounting convention (the same as :mod:`coinrl.envs.books`): cash moves by the real cash flow
(``-signed_qty * fill_price - fee``); realised PnL and the average entry are kept at the
*reference* price (the fill price less its slippage), and slippage is booked as a cost of its
own. So at any price ``p``::

    equity(p) = cash + qty * p
              = initial_cash + realised + unrealised(p) - fees - slippage - funding - borrow
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from coinrl.pipeline.errors import InvalidOrder


def trade(qty_base: float, avg_entry_quote: float, dq_base: float, price_quote: float) -> tuple[float, float, float]:
    """Position arithmetic of one trade (average-cost method), scalar form.

    The numpy vector form (``trade_vec``, an oracle in ``tests/envs/numpy_books.py``) performs the same IEEE
    operations in the same order, so both agree to the last bit.

    Args:
        qty_base: position before the trade (negative = short).
        avg_entry_quote: its average entry price (0 when flat).
        dq_base: signed traded quantity (+ buy, - sell).
        price_quote: reference price of the trade.

    Returns:
        ``(new_qty_base, new_avg_entry_quote, realised_pnl_quote)``. Reducing a position
        realises ``(price - avg) * closed_qty`` (sign-adjusted for shorts) and keeps the average;
        increasing it re-weights the average; opening or flipping sets it to ``price``; a flat
        result sets it to 0.

    Example:
        >>> trade(2.0, 100.0, -3.0, 110.0)  # sell 3: close the long 2 at +10 each, open short 1
        (-1.0, 110.0, 20.0)
    """
    new = qty_base + dq_base
    realised = 0.0
    if qty_base * dq_base < 0.0:
        r = (price_quote - avg_entry_quote) * min(abs(dq_base), abs(qty_base))
        realised = r if qty_base > 0.0 else -r
    if new == 0.0:
        avg = 0.0
    elif qty_base * new <= 0.0:
        avg = price_quote
    elif qty_base * dq_base > 0.0:
        avg = (avg_entry_quote * abs(qty_base) + price_quote * abs(dq_base)) / abs(new)
    else:
        avg = avg_entry_quote
    return new, avg, realised


class Side(StrEnum):
    """Order side."""

    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> float:
        """+1.0 for a buy, -1.0 for a sell."""
        return 1.0 if self is Side.BUY else -1.0


class OrderType(StrEnum):
    """Order type: market orders pay the taker fee, resting limit orders the maker fee."""

    MARKET = "market"
    LIMIT = "limit"


class ChargeKind(StrEnum):
    """A cash movement that is not a trade."""

    FUNDING = "funding"
    BORROW = "borrow"


@dataclass(frozen=True, slots=True)
class Order:
    """An instruction to trade.

    Attributes:
        order_id: client order id (idempotency key at the exchange).
        symbol: market, e.g. ``"BTC/USD"``.
        side: buy or sell.
        qty_base: quantity in base units, > 0.
        order_type: market or limit.
        limit_price_quote: required for limit orders.
        reduce_only: may only shrink the position (always allowed below minimum notional).
        ts_ms: creation time, epoch ms.
    """

    order_id: str
    symbol: str
    side: Side
    qty_base: float
    order_type: OrderType = OrderType.MARKET
    limit_price_quote: float | None = None
    reduce_only: bool = False
    ts_ms: int = 0

    def __post_init__(self) -> None:
        if not self.qty_base > 0.0:
            raise InvalidOrder(
                f"order {self.order_id}: qty_base must be > 0 (side says the direction), got {self.qty_base}"
            )
        if self.order_type is OrderType.LIMIT and (
            self.limit_price_quote is None or not self.limit_price_quote > 0.0
        ):
            raise InvalidOrder(f"order {self.order_id}: a limit order needs limit_price_quote > 0")


@dataclass(frozen=True, slots=True)
class Fill:
    """An execution report.

    Attributes:
        fill_id: unique id (exchange trade id); applying it twice is an error.
        order_id: the order it fills.
        symbol: market.
        side: buy or sell.
        qty_base: filled quantity, > 0.
        price_quote: execution price (slippage included), > 0.
        fee_quote: fee paid in quote currency, >= 0.
        ts_ms: execution time, epoch ms.
        slippage_quote: cost against the reference price, >= 0 (0 when unknown).
        liquidity: ``"taker"`` or ``"maker"``.
    """

    fill_id: str
    order_id: str
    symbol: str
    side: Side
    qty_base: float
    price_quote: float
    fee_quote: float
    ts_ms: int
    slippage_quote: float = 0.0
    liquidity: Literal["taker", "maker"] = "taker"

    def __post_init__(self) -> None:
        if not (self.qty_base > 0.0 and self.price_quote > 0.0):
            raise InvalidOrder(
                f"fill {self.fill_id}: qty_base and price_quote must be > 0, "
                f"got qty={self.qty_base} price={self.price_quote}"
            )
        if self.fee_quote < 0.0 or self.slippage_quote < 0.0:
            raise InvalidOrder(
                f"fill {self.fill_id}: fee_quote and slippage_quote must be >= 0 (rebates are not modelled)"
            )

    @property
    def signed_qty_base(self) -> float:
        """Quantity with sign: + for buys, - for sells."""
        return self.side.sign * self.qty_base

    @property
    def ref_price_quote(self) -> float:
        """Price before slippage: the price the books keep for PnL."""
        return self.price_quote - self.side.sign * self.slippage_quote / self.qty_base


@dataclass(frozen=True, slots=True)
class Charge:
    """A funding or borrow payment (positive = the account pays)."""

    charge_id: str
    kind: ChargeKind
    amount_quote: float
    ts_ms: int


@dataclass(slots=True)
class Position:
    """One account in one market; :meth:`apply` is its only mutator.

    Attributes:
        symbol: market.
        initial_cash_quote: cash at creation.
        cash_quote: current cash (negative = borrowed quote).
        qty_base: position (negative = short).
        avg_entry_quote: average entry (reference) price of the open position, 0 when flat.
        realised_pnl_quote: PnL of closed quantity at reference prices.
        fees_paid_quote, slippage_paid_quote, funding_paid_quote, borrow_paid_quote: costs.
    """

    symbol: str
    initial_cash_quote: float
    cash_quote: float = field(default=float("nan"))
    qty_base: float = 0.0
    avg_entry_quote: float = 0.0
    realised_pnl_quote: float = 0.0
    fees_paid_quote: float = 0.0
    slippage_paid_quote: float = 0.0
    funding_paid_quote: float = 0.0
    borrow_paid_quote: float = 0.0
    _seen_ids: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        if self.cash_quote != self.cash_quote:  # NaN: default to the initial cash
            self.cash_quote = self.initial_cash_quote

    def apply(self, event: Fill | Charge) -> float:
        """Book a fill or a charge; the one place cash and quantity change.

        Args:
            event: a :class:`Fill` of this symbol, or a :class:`Charge`.

        Returns:
            PnL realised by this event in quote currency (0 for charges and opening fills).

        Raises:
            InvalidOrder: the id was applied before, or the fill is for another symbol.
        """
        eid = event.fill_id if isinstance(event, Fill) else event.charge_id
        if eid in self._seen_ids:
            raise InvalidOrder(
                f"{type(event).__name__} id {eid!r} was already applied to {self.symbol}; "
                "a duplicate execution report must not be booked twice"
            )
        if isinstance(event, Charge):
            self._seen_ids.add(eid)
            self.cash_quote -= event.amount_quote
            if event.kind is ChargeKind.FUNDING:
                self.funding_paid_quote += event.amount_quote
            else:
                self.borrow_paid_quote += event.amount_quote
            return 0.0
        if event.symbol != self.symbol:
            raise InvalidOrder(f"fill {eid} is for {event.symbol}, this position is {self.symbol}")
        self._seen_ids.add(eid)
        dq = event.signed_qty_base
        self.cash_quote = self.cash_quote - dq * event.price_quote - event.fee_quote
        self.fees_paid_quote += event.fee_quote
        self.slippage_paid_quote += event.slippage_quote
        self.qty_base, self.avg_entry_quote, realised = trade(
            self.qty_base, self.avg_entry_quote, dq, event.ref_price_quote
        )
        self.realised_pnl_quote += realised
        return realised

    def unrealised_pnl_quote(self, price_quote: float) -> float:
        """PnL of the open position marked at ``price_quote``."""
        return (price_quote - self.avg_entry_quote) * self.qty_base

    def equity_quote(self, price_quote: float) -> float:
        """Cash plus the position marked at ``price_quote``."""
        return self.cash_quote + self.qty_base * price_quote
