"""The live order model: one status enum, the moves it may make, and typed order errors.

Every order a broker journals carries an :class:`OrderStatus`. A status changes only through
:func:`transition`, which refuses a move the exchange cannot make (a filled order does not
re-open; a cancelled one does not fill) with :class:`OrderStateError`: a broker that meets one
has misread the exchange, and must not book it silently.

The exchange's refusals are translated ONCE, at the exchange boundary
(:mod:`coinrl.live.exchange_calls`), into the typed errors below, from a per-exchange table of quirks
(:data:`QUIRKS`: which codes or messages mean "duplicate client id", "filter failure",
"insufficient funds", and where a cancel answer keeps the original client order id). No broker
code reads an exchange's message text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from coinrl.pipeline.errors import (
    CoinrlError,
    InsufficientFunds,
    InvalidOrder,
    TemporaryExchangeError,
)


class OrderStatus(StrEnum):
    """Where one of our orders stands.

    ``INTENT``: journalled, about to be sent; ``UNKNOWN``: sent, no answer (looked up before
    anything is re-sent); ``OPEN``: on the book (possibly partly filled); ``CLOSED``: filled;
    ``CANCELED`` / ``EXPIRED``: off the book, maybe partly filled; ``REJECTED``: refused;
    ``NOT_FOUND``: proven never placed (lookup by client id AND a scan of the orders and trades
    since the intent); ``SKIPPED``: no order needed (below the lot step or minimum notional);
    ``PENDING``: a paper decision queued for the next bar's open.
    """

    INTENT = "intent"
    UNKNOWN = "unknown"
    OPEN = "open"
    CLOSED = "closed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    NOT_FOUND = "not_found"
    SKIPPED = "skipped"
    PENDING = "pending"

    @property
    def terminal(self) -> bool:
        """True when the order can never fill again."""
        return self in TERMINAL

    @property
    def active(self) -> bool:
        """True while a sync must still act on it (look it up, or watch/cancel it)."""
        return self in ACTIVE


TERMINAL: frozenset[OrderStatus] = frozenset({
    OrderStatus.CLOSED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED,
    OrderStatus.NOT_FOUND, OrderStatus.SKIPPED,
})
"""Statuses after which an order never fills again."""

ACTIVE: frozenset[OrderStatus] = frozenset({OrderStatus.INTENT, OrderStatus.UNKNOWN, OrderStatus.OPEN})
"""Statuses a sync still acts on."""

_ON_EXCHANGE = frozenset({
    OrderStatus.OPEN, OrderStatus.CLOSED, OrderStatus.CANCELED, OrderStatus.EXPIRED,
    OrderStatus.REJECTED,
})

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.INTENT: _ON_EXCHANGE | {OrderStatus.UNKNOWN, OrderStatus.NOT_FOUND},
    OrderStatus.UNKNOWN: _ON_EXCHANGE | {OrderStatus.UNKNOWN, OrderStatus.NOT_FOUND},
    OrderStatus.OPEN: frozenset({
        OrderStatus.OPEN, OrderStatus.CLOSED, OrderStatus.CANCELED, OrderStatus.EXPIRED,
    }),
    # "proven absent" is a conclusion from what the exchange listed; an order that lands
    # later (a send delayed in the network) is the exchange's fact and wins
    OrderStatus.NOT_FOUND: _ON_EXCHANGE - {OrderStatus.REJECTED},
    OrderStatus.PENDING: frozenset({OrderStatus.CLOSED, OrderStatus.SKIPPED}),
    OrderStatus.CLOSED: frozenset(),
    OrderStatus.CANCELED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.SKIPPED: frozenset(),
}
"""Status -> the statuses it may move to (staying put is always allowed)."""


class OrderStateError(CoinrlError):
    """An order status move the exchange cannot make (a bug or a misread answer)."""


def transition(client_order_id: str, old: OrderStatus | str, new: OrderStatus | str) -> OrderStatus:
    """The new status of ``client_order_id`` after checking the move is possible.

    Raises:
        OrderStateError: ``old -> new`` is not in :data:`TRANSITIONS`.

    Example:
        >>> transition("r1-x-0", "open", "closed")
        <OrderStatus.CLOSED: 'closed'>
    """
    o, n = OrderStatus(old), OrderStatus(new)
    if n is o or n in TRANSITIONS[o]:
        return n
    raise OrderStateError(
        f"order {client_order_id}: {o.value} -> {n.value} is not a move an exchange makes "
        f"(from {o.value} only {sorted(s.value for s in TRANSITIONS[o]) or 'nothing'}); the "
        "exchange's answer was misread: check the journal before trading on"
    )


# -- typed refusals, produced once at the exchange boundary ----------------------------------
class DuplicateClientOrderId(InvalidOrder):
    """The exchange already has an (open) order with this client order id."""


class FilterFailure(InvalidOrder):
    """The order broke the market's filters (lot step, tick, minimum notional, quantity)."""


class OrderInsufficientFunds(InsufficientFunds):
    """The account cannot pay for the order."""


class AbsenceUnproven(TemporaryExchangeError):
    """An order is not found by its client id, but the exchange's recent orders and trades do
    not prove it absent either: it must not be re-sent; look again later."""


@dataclass(frozen=True)
class ExchangeQuirks:
    """What one exchange's answers mean (freqtrade's ``_ft_has`` idea).

    Attributes:
        duplicate_markers: substrings of an error that mean "this client order id is in use".
        filter_markers: substrings that mean "the order broke a market filter".
        funds_markers: substrings that mean "insufficient balance".
        cancel_client_id_field: the raw field of a cancel answer that holds the CANCELLED order's
            client id (Binance answers with the cancel request's own ``clientOrderId`` and keeps
            the original in ``origClientOrderId``); "" = the unified ``clientOrderId`` is it.
        client_id_unique_among_open_only: the exchange refuses a repeated client id only while
            the first order is open (Binance), so a re-send after a fill would be ACCEPTED:
            re-sends must prove the first attempt absent first.
        create_client_id_param: the ccxt ``create_order`` param that carries our client id.
        lookup_client_id_param: the ccxt param naming an order by our client id in lookups and
            cancels (Binance: ``clientOrderId``; Bybit: its raw ``orderLinkId``).
        client_id_as_order_id: pass our client id as ccxt's order ``id`` argument too (Binance);
            False: ``id`` is None (Bybit answers by ``orderId`` first, which is not ours).
        lookup_with_open_orders: look an order up with ``fetch_open_orders`` and the lookup
            param instead of ``fetch_order`` (Bybit: ``order/realtime`` answers an order named
            by ``orderLinkId`` whatever its status; ccxt's ``fetch_order`` needs its exchange id).
        split_order_lists: the exchange has no "all orders" list: open orders and finished
            orders are listed by two calls (Bybit's unified account).
    """

    duplicate_markers: tuple[str, ...] = ("Duplicate order", "duplicate clientOrderId")
    filter_markers: tuple[str, ...] = ("Filter failure",)
    funds_markers: tuple[str, ...] = ("insufficient balance", "Insufficient balance")
    cancel_client_id_field: str = ""
    client_id_unique_among_open_only: bool = True
    create_client_id_param: str = "newClientOrderId"
    lookup_client_id_param: str = "clientOrderId"
    client_id_as_order_id: bool = True
    lookup_with_open_orders: bool = False
    split_order_lists: bool = False


QUIRKS: dict[str, ExchangeQuirks] = {
    # (futures' -4116/-2019 too: ccxt types those by the fapi hostname only, which a local
    # emulator URL does not have, so they arrive as plain ExchangeErrors)
    "binance": ExchangeQuirks(
        duplicate_markers=("Duplicate order sent", "ClientOrderId is duplicated"),
        filter_markers=("Filter failure",),
        funds_markers=("insufficient balance", "Margin is insufficient"),
        cancel_client_id_field="origClientOrderId",
        client_id_unique_among_open_only=True,
    ),
    # Bybit v5 (unified account): codes from ccxt's bybit exceptions table, messages as Bybit
    # words them (110072 duplicate orderLinkId; 170134/170137/170135/170140/170130 filters;
    # 170131/110004/110007/110012 funds). An orderLinkId is refused when ANY earlier order of
    # the account used it; cancel and create answer only {orderId, orderLinkId} (the broker
    # completes such acknowledgements with a lookup).
    "bybit": ExchangeQuirks(
        duplicate_markers=("OrderLinkedID is duplicate", "Duplicate clientOrderId"),
        filter_markers=("decimal too long", "lower than the minimum", "exceeded lower limit",
                        "quantity too large", "is not valid"),
        funds_markers=("Insufficient balance", "Insufficient wallet balance", "not enough"),
        cancel_client_id_field="orderLinkId",
        client_id_unique_among_open_only=False,
        create_client_id_param="clientOrderId",
        lookup_client_id_param="orderLinkId",
        client_id_as_order_id=False,
        lookup_with_open_orders=True,
        split_order_lists=True,
    ),
}
"""Quirks by ccxt exchange id (:func:`quirks_for` falls back to a cautious default)."""


def quirks_for(exchange_id: str) -> ExchangeQuirks:
    """The quirks of ``exchange_id`` (a cautious default for exchanges not in :data:`QUIRKS`)."""
    return QUIRKS.get(exchange_id, ExchangeQuirks())


def classify_refusal(exchange_id: str, message: str) -> type[InvalidOrder] | type[InsufficientFunds] | None:
    """The typed error an exchange's refusal ``message`` means, per :data:`QUIRKS` (None: none)."""
    q = quirks_for(exchange_id)
    if any(m in message for m in q.duplicate_markers):
        return DuplicateClientOrderId
    if any(m in message for m in q.filter_markers):
        return FilterFailure
    if any(m in message for m in q.funds_markers):
        return OrderInsufficientFunds
    return None


__all__ = [
    "ACTIVE",
    "AbsenceUnproven",
    "QUIRKS",
    "TERMINAL",
    "TRANSITIONS",
    "DuplicateClientOrderId",
    "ExchangeQuirks",
    "FilterFailure",
    "OrderInsufficientFunds",
    "OrderStateError",
    "OrderStatus",
    "classify_refusal",
    "quirks_for",
    "transition",
]
