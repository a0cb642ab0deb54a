"""What the exchange reports, as typed records: :class:`Balance`, :class:`ExchangeOrder`,
:class:`ExchangeTrade`, and the client order ids we send (:func:`new_client_order_id`).

Part of the exchange boundary (:mod:`coinrl.live.exchange`); no ccxt call is made here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from coinrl.envs.domain import Fill, OrderType, Side
from coinrl.pipeline.errors import ExchangeError

CLIENT_ORDER_ID_PATTERN = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
"""Client order ids Binance accepts (and most exchanges): 1-36 of letters, digits, ``.:/_-``."""

OrderStatusName = Literal["open", "closed", "canceled", "expired", "rejected"]


@dataclass(frozen=True)
class Balance:
    """One asset's balance, asset units: ``free`` (available), ``used`` (locked), ``total``."""

    asset: str
    free: float
    used: float
    total: float


@dataclass(frozen=True)
class ExchangeOrder:
    """An order as the exchange reports it.

    Attributes:
        client_order_id: our id (the idempotency key).
        order_id: the exchange's id.
        symbol: unified symbol.
        side, order_type: as sent.
        status: ``open`` (incl. partially filled), ``closed`` (filled), ``canceled``,
            ``expired``, ``rejected``.
        qty_base: ordered quantity; ``filled_base`` / ``remaining_base`` its parts.
        price_quote: the limit price (None for market orders).
        average_price_quote: average fill price (None before any fill).
        cost_quote: filled quote amount (sum of qty * price).
        ts_ms: creation time on the exchange, UTC ms (None when not reported).
    """

    client_order_id: str
    order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    status: OrderStatusName
    qty_base: float
    filled_base: float
    remaining_base: float
    price_quote: float | None
    average_price_quote: float | None
    cost_quote: float
    ts_ms: int | None

    @property
    def is_open(self) -> bool:
        """True while it can still fill."""
        return self.status == "open"

    @classmethod
    def from_ccxt(cls, o: Mapping[str, Any]) -> ExchangeOrder:
        """From a ccxt unified order structure."""
        otype = str(o.get("type") or "market").lower()
        order_type = OrderType.LIMIT if otype.startswith("limit") else OrderType.MARKET
        amount = float(o.get("amount") or 0.0)
        filled = float(o.get("filled") or 0.0)
        remaining = o.get("remaining")
        status = str(o.get("status") or "open")
        if status not in ("open", "closed", "canceled", "expired", "rejected"):
            status = "open"
        return cls(
            client_order_id=str(o.get("clientOrderId") or ""),
            order_id=str(o.get("id") or ""),
            symbol=str(o.get("symbol")),
            side=Side(str(o.get("side")).lower()),
            order_type=order_type,
            status=status,  # type: ignore[arg-type]
            qty_base=amount,
            filled_base=filled,
            remaining_base=float(remaining) if remaining is not None else max(0.0, amount - filled),
            price_quote=float(o["price"]) if order_type is OrderType.LIMIT and o.get("price") else None,
            average_price_quote=float(o["average"]) if o.get("average") else None,
            cost_quote=float(o.get("cost") or 0.0),
            ts_ms=int(o["timestamp"]) if o.get("timestamp") is not None else None,
        )


@dataclass(frozen=True)
class ExchangeTrade:
    """One fill of one of our orders, as the exchange reports it.

    Attributes:
        trade_id: the exchange's trade id.
        order_id: the exchange's order id; ``client_order_id`` ours when this client knows it.
        symbol, side: of the order.
        qty_base: filled quantity; ``price_quote`` its price.
        fee_cost, fee_asset: the commission as charged.
        fee_quote: the commission in quote currency (converted at the fill price when charged
            in the base asset; None when charged in a third asset such as BNB).
        ts_ms: execution time, UTC ms.
        liquidity: ``"taker"`` or ``"maker"`` (None when not reported).
    """

    trade_id: str
    order_id: str
    client_order_id: str | None
    symbol: str
    side: Side
    qty_base: float
    price_quote: float
    fee_cost: float
    fee_asset: str | None
    fee_quote: float | None
    ts_ms: int
    liquidity: Literal["taker", "maker"] | None

    def to_fill(self) -> Fill:
        """The same execution as an envs :class:`~coinrl.envs.domain.Fill` (for the books).

        Raises:
            ExchangeError: the fee was charged in an asset other than base or quote.
        """
        if self.fee_quote is None:
            raise ExchangeError(
                f"trade {self.trade_id} of {self.symbol}: fee charged in {self.fee_asset}, which "
                "cannot be booked in quote; disable paying fees in that asset on the exchange"
            )
        return Fill(
            fill_id=self.trade_id,
            order_id=self.client_order_id or self.order_id,
            symbol=self.symbol,
            side=self.side,
            qty_base=self.qty_base,
            price_quote=self.price_quote,
            fee_quote=self.fee_quote,
            ts_ms=self.ts_ms,
            liquidity=self.liquidity or "taker",
        )


def new_client_order_id(prefix: str = "coinrl") -> str:
    """A fresh client order id, ``<prefix>-<24 hex>`` (at most 36 characters)."""
    return f"{prefix[:11]}-{uuid.uuid4().hex[:24]}"


__all__ = [
    "CLIENT_ORDER_ID_PATTERN",
    "Balance",
    "ExchangeOrder",
    "ExchangeTrade",
    "OrderStatusName",
    "new_client_order_id",
]
