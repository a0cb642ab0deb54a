"""The order calls of the live exchange boundary: :class:`ExchangeClient`.

Orders are idempotent through client order ids: after a timeout, a dropped connection or a 5xx
the order is LOOKED UP by its client order id (and searched in the exchange's orders and trades
since the intent) before anything is re-sent, and it is re-sent (with the same id, so the
exchange itself refuses a duplicate) only when its absence is proven. An order is never blindly
re-sent. Quantities and prices are rounded and checked by
:class:`~coinrl.live.exchange_market.ExchangeMarketData` before sending.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import ccxt

from coinrl.envs.domain import OrderType, Side
from coinrl.pipeline.errors import ConfigError, ExchangeError, InvalidOrder, TemporaryExchangeError

from .exchange_calls import BOUNDARY_LOGGER, _fmt, _short
from .exchange_market import ExchangeMarketData
from .exchange_records import (
    CLIENT_ORDER_ID_PATTERN,
    ExchangeOrder,
    ExchangeTrade,
    new_client_order_id,
)
from .orders import AbsenceUnproven, DuplicateClientOrderId

logger = logging.getLogger(BOUNDARY_LOGGER)


class ExchangeClient(ExchangeMarketData):
    """A connected, signed exchange client (build it with
    :func:`~coinrl.live.exchange.connect_to_exchange`): the order calls, over the market data
    (:class:`~coinrl.live.exchange_market.ExchangeMarketData`) and the call plumbing
    (:class:`~coinrl.live.exchange_calls.ExchangeCalls`).

    Args:
        client: a ccxt client with keys, markets loaded.
        exchange: its ccxt id.
        max_retries: retries of temporary failures per call.
        credentials_hint: what to check when the keys are rejected (for messages).
    """

    # -- orders -----------------------------------------------------------------------------
    def _lookup(self, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """The order with ``client_order_id`` (ccxt structure), or None if the exchange has none."""
        q = self.quirks
        named = {q.lookup_client_id_param: client_order_id}
        if q.lookup_with_open_orders:  # the exchange answers a named order of any status
            rows: list[dict[str, Any]] = self._client.fetch_open_orders(symbol, None, None, named)
            return next((o for o in rows if o.get("clientOrderId") == client_order_id), None)
        try:
            found: dict[str, Any] = self._client.fetch_order(
                client_order_id if q.client_id_as_order_id else None, symbol, named
            )
            return found
        except ccxt.OrderNotFound:
            return None

    def _orders_since(self, symbol: str, since_ms: int | None) -> list[dict[str, Any]]:
        """Every order of ``symbol`` since ``since_ms`` (one call, or open + finished)."""
        if not self.quirks.split_order_lists:
            listed: list[dict[str, Any]] = self._client.fetch_orders(symbol, since_ms)
            return listed
        return [*self._client.fetch_open_orders(symbol),
                *self._client.fetch_canceled_and_closed_orders(symbol, since_ms)]

    def _locate(self, symbol: str, client_order_id: str, since_ms: int | None) -> dict[str, Any] | None:
        """The order with ``client_order_id`` (ccxt structure), or None only when its absence is
        PROVEN: a lookup by client id finds nothing, the exchange's order list since
        ``since_ms`` (UTC ms) has no order with that id, and every trade since then belongs to
        a listed order (so the list is complete). Some exchanges (Binance) refuse a repeated
        client id only among OPEN orders: a re-send after the first attempt filled would be
        accepted, so nothing is re-sent on a lookup alone.

        Raises:
            AbsenceUnproven: absence could not be proven (retry later; never re-send).
        """
        found = self._lookup(symbol, client_order_id)
        if found is not None:
            return found
        listed = self._orders_since(symbol, since_ms)
        for o in listed:
            if str(o.get("clientOrderId") or "") == client_order_id:
                return o
        ids = {str(o.get("id")) for o in listed} | set(self._cid_of)
        trades = self._client.fetch_my_trades(symbol, since_ms)
        strays = sorted({str(t.get("order")) for t in trades} - ids)
        if strays:
            raise AbsenceUnproven(
                f"{self.exchange_id}: order {client_order_id!r} is not found by id nor listed, "
                f"but trades since ts_ms={since_ms} belong to unlisted orders {strays[:5]}: its "
                "absence is not proven, so it is not re-sent; it is looked up again later"
            )
        return None

    def _remember(self, order: ExchangeOrder) -> ExchangeOrder:
        if order.client_order_id:
            self._symbol_of[order.client_order_id] = order.symbol
            if order.order_id:
                self._cid_of[order.order_id] = order.client_order_id
        return order

    def create_order(
        self,
        symbol: str,
        side: Side | str,
        qty_base: float,
        order_type: OrderType | str = OrderType.MARKET,
        price_quote: float | None = None,
        *,
        client_order_id: str | None = None,
        ref_price_quote: float | None = None,
        since_ms: int | None = None,
    ) -> ExchangeOrder:
        """Place an order, idempotently.

        The quantity is rounded down to the lot step and a limit price to the tick, then
        checked against the market's limits before anything is sent. On a temporary failure
        (timeout, dropped connection, 429, 5xx) the order is looked up by its client order id
        AND searched in the exchange's orders and trades since ``since_ms``; it is re-sent
        (same id) only when both prove the first attempt absent (:meth:`_locate`).

        Args:
            symbol: unified symbol (``"BTC/USDT"``).
            side: ``"buy"`` or ``"sell"``.
            qty_base: quantity in base units (> 0).
            order_type: ``"market"`` or ``"limit"``.
            price_quote: the limit price (limit orders only).
            client_order_id: the idempotency key (default: a fresh
                :func:`new_client_order_id`); reuse it to retry the same order safely.
            ref_price_quote: a recent price, to check a market order's minimum notional
                before sending (without it the exchange checks).
            since_ms: the exchange time of the intent, UTC ms (a little before the first send):
                where the search for an earlier attempt starts (None: the exchange's default
                window of recent orders and trades).

        Returns:
            The order as the exchange reports it (a market order may still be open).

        Raises:
            InvalidOrder: rounding/limit violations (with the numbers), a duplicate client
                order id, or the exchange's rejection.
            InsufficientFunds: the account cannot pay.
            TemporaryExchangeError: still failing after the retries: the order's state is
                unknown (look it up with :meth:`fetch_order` before sending it again).
        """
        side_e = Side(str(side).lower())
        type_e = OrderType(str(order_type).lower())
        if not (isinstance(qty_base, int | float) and math.isfinite(qty_base) and qty_base > 0):
            raise InvalidOrder(f"{symbol}: qty_base must be a finite number > 0, got {qty_base!r}")
        if type_e is OrderType.LIMIT and (price_quote is None or not price_quote > 0):
            raise InvalidOrder(f"{symbol}: a limit order needs price_quote > 0, got {price_quote!r}")
        if type_e is OrderType.MARKET and price_quote is not None:
            raise InvalidOrder(
                f"{symbol}: a market order takes no price_quote (got {price_quote}); pass "
                "ref_price_quote to check its notional, or send a limit order"
            )
        qty = self.round_qty(symbol, qty_base)
        price = self.round_price(symbol, price_quote) if price_quote is not None else None
        self._check_order(symbol, type_e, qty_base, qty, price, ref_price_quote)
        cid = client_order_id or new_client_order_id()
        if not CLIENT_ORDER_ID_PATTERN.fullmatch(cid):
            raise InvalidOrder(
                f"client order id {cid!r} is not accepted by the exchange: use 1-36 letters, "
                "digits or . : / _ -"
            )
        self._symbol_of[cid] = symbol
        what = (f"create_order {symbol} {side_e.value} {type_e.value} qty_base={_fmt(qty)}"
                f"{'' if price is None else f' price_quote={_fmt(price)}'} client_order_id={cid}")
        sends = 0

        def attempt() -> dict[str, Any]:
            nonlocal sends
            if sends:
                found = self._locate(symbol, cid, since_ms)  # unproven absence: retried, not re-sent
                if found is not None:
                    logger.warning(
                        "order found on the exchange after a failed send; not re-sent "
                        "client_order_id=%s symbol=%s status=%s", cid, symbol, found.get("status"),
                    )
                    return found
                logger.warning(
                    "order not on the exchange after a failed send; re-sending "
                    "client_order_id=%s symbol=%s attempt=%d", cid, symbol, sends + 1,
                )
            sends += 1
            try:
                placed: dict[str, Any] = self._client.create_order(
                    symbol, type_e.value, side_e.value, qty, price,
                    {self.quirks.create_client_id_param: cid},
                )
                if placed.get("side") is None:  # an acknowledgement only (Bybit): look it up
                    found = self._lookup(symbol, cid)
                    return found if found is not None else {  # not visible yet: as sent, open
                        **placed, "clientOrderId": cid, "symbol": symbol, "side": side_e.value,
                        "type": type_e.value, "amount": qty, "price": price, "status": "open"}
                return placed
            except ccxt.ExchangeError as e:
                typed = self._typed_refusal(e, what)
                if not isinstance(typed, DuplicateClientOrderId):
                    raise
                if sends > 1:  # an earlier send landed after our lookup: it is the order
                    found = self._lookup(symbol, cid)
                    if found is not None:
                        return found
                raise DuplicateClientOrderId(
                    f"{self.exchange_id}: client order id {cid!r} is already used by an order "
                    f"on the exchange ({_short(e)}); fetch_order({cid!r}) shows it, or send a "
                    "new order with a new client order id"
                ) from e

        logger.info("order sending %s", what)
        try:
            raw = self._call(attempt, what)
        except TemporaryExchangeError as e:
            raise TemporaryExchangeError(
                f"{e}; the state of order {cid!r} is unknown: look it up with "
                f"fetch_order({cid!r}) before sending it again"
            ) from e
        order = self._remember(ExchangeOrder.from_ccxt(raw))
        logger.info(
            "order placed client_order_id=%s order_id=%s symbol=%s status=%s filled_base=%s sends=%d",
            cid, order.order_id, symbol, order.status, _fmt(order.filled_base), sends,
        )
        return order

    def _symbol_for(self, client_order_id: str, symbol: str | None) -> str:
        sym = symbol or self._symbol_of.get(client_order_id)
        if sym is None:
            raise ConfigError(
                f"order {client_order_id!r} was not placed by this client: pass its symbol"
            )
        return sym

    def find_order(self, client_order_id: str, symbol: str | None = None) -> ExchangeOrder | None:
        """The order with ``client_order_id``, or None when the exchange has no such order."""
        sym = self._symbol_for(client_order_id, symbol)
        self.market(sym)
        raw = self._call(lambda: self._lookup(sym, client_order_id),
                         f"fetch_order {sym} client_order_id={client_order_id}")
        return self._remember(ExchangeOrder.from_ccxt(raw)) if raw is not None else None

    def locate_order(
        self, client_order_id: str, symbol: str | None = None, *, since_ms: int | None = None,
    ) -> ExchangeOrder | None:
        """The order with ``client_order_id``, or None only when its absence is proven by a
        lookup AND a scan of the orders and trades since ``since_ms`` (see :meth:`_locate`).

        Raises:
            AbsenceUnproven: absence not proven: look again later, do not re-send.
            TemporaryExchangeError: the exchange did not answer (after the retries).
        """
        sym = self._symbol_for(client_order_id, symbol)
        self.market(sym)
        unproven: list[AbsenceUnproven] = []

        def attempt() -> dict[str, Any] | None:
            try:
                return self._locate(sym, client_order_id, since_ms)
            except AbsenceUnproven as e:  # not a failure to retry now: a state to report
                unproven.append(e)
                return None

        raw = self._call(attempt, f"locate_order {sym} client_order_id={client_order_id}")
        if unproven:
            raise unproven[-1]
        return self._remember(ExchangeOrder.from_ccxt(raw)) if raw is not None else None

    def learn_order_ids(self, client_order_ids: Mapping[str, str]) -> None:
        """Exchange order id -> client order id of orders placed earlier (a restart's journal):
        their trades are attributed to them and never taken for a lost order's."""
        for oid, cid in client_order_ids.items():
            if oid and cid:
                self._cid_of.setdefault(oid, cid)

    def fetch_order(self, client_order_id: str, symbol: str | None = None) -> ExchangeOrder:
        """The order with ``client_order_id`` (``symbol`` needed only for orders placed elsewhere).

        Raises:
            InvalidOrder: the exchange has no such order.
        """
        found = self.find_order(client_order_id, symbol)
        if found is None:
            raise InvalidOrder(
                f"{self.exchange_id}: no order with client order id {client_order_id!r} "
                f"in {self._symbol_for(client_order_id, symbol)}"
            )
        return found

    def cancel_order(self, client_order_id: str, symbol: str | None = None) -> ExchangeOrder:
        """Cancel an open order by client order id and return its final state.

        If the cancel fails because the order is no longer open (it filled meanwhile), the
        order's current state is returned instead.

        Raises:
            InvalidOrder: the exchange has no such order.
        """
        sym = self._symbol_for(client_order_id, symbol)
        self.market(sym)

        def attempt() -> dict[str, Any]:
            try:
                q = self.quirks
                done: dict[str, Any] = self._client.cancel_order(
                    client_order_id if q.client_id_as_order_id else None, sym,
                    {q.lookup_client_id_param: client_order_id},
                )
                if done.get("side") is None:  # an acknowledgement only (Bybit): look it up
                    found = self._lookup(sym, client_order_id)
                    if found is None:  # retried: the cancel then finds it closed, or not found
                        raise ccxt.NetworkError(f"cancel of {client_order_id!r} acknowledged "
                                                "but the order is not visible yet")
                    return found
                return done
            except ccxt.OrderNotFound:
                found = self._lookup(sym, client_order_id)
                if found is None:
                    raise
                return found

        raw = self._call(attempt, f"cancel_order {sym} client_order_id={client_order_id}")
        order = ExchangeOrder.from_ccxt(raw)
        field_name = self.quirks.cancel_client_id_field
        info: dict[str, Any] = raw["info"] if isinstance(raw.get("info"), dict) else {}
        original = str(info.get(field_name) or "") if field_name else order.client_order_id
        if not order.client_order_id and not original:  # an answer with little detail
            return self.fetch_order(client_order_id, sym)
        if original and original != client_order_id:
            raise ExchangeError(
                f"{self.exchange_id}: cancel of {client_order_id!r} answered for order "
                f"{original!r}; not booked: look both up"
            )
        # the answer describes the CANCELLED order: it is booked under that order's id, never
        # under the id the exchange gave the cancel request itself (Binance's clientOrderId)
        order = replace(order, client_order_id=client_order_id)
        logger.info("order canceled client_order_id=%s symbol=%s status=%s", client_order_id, sym,
                    order.status)
        return self._remember(order)

    def open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        """Open orders in ``symbol`` (all symbols when None)."""
        if symbol is not None:
            self.market(symbol)
        raw = self._call(lambda: self._client.fetch_open_orders(symbol), f"fetch_open_orders {symbol}")
        return [self._remember(ExchangeOrder.from_ccxt(o)) for o in raw]

    def my_trades(
        self, symbol: str, since_ms: int | None = None, limit: int | None = None
    ) -> list[ExchangeTrade]:
        """Our fills in ``symbol`` from ``since_ms`` (UTC ms, inclusive) on, oldest first."""
        market = self.market(symbol)
        raw = self._call(
            lambda: self._client.fetch_my_trades(symbol, since_ms, limit),
            f"fetch_my_trades {symbol} since_ms={since_ms}",
        )
        out: list[ExchangeTrade] = []
        for t in raw:
            fee = t.get("fee") or {}
            fee_cost = float(fee.get("cost") or 0.0)
            fee_asset = fee.get("currency")
            price = float(t["price"])
            if fee_cost == 0.0 or fee_asset == market.get("quote"):
                fee_quote: float | None = fee_cost
            elif fee_asset == market.get("base"):
                fee_quote = fee_cost * price
            else:
                fee_quote = None
            order_id = str(t.get("order") or "")
            liquidity = t.get("takerOrMaker")
            out.append(ExchangeTrade(
                trade_id=str(t["id"]),
                order_id=order_id,
                client_order_id=self._cid_of.get(order_id),
                symbol=str(t["symbol"]),
                side=Side(str(t["side"]).lower()),
                qty_base=float(t["amount"]),
                price_quote=price,
                fee_cost=fee_cost,
                fee_asset=fee_asset,
                fee_quote=fee_quote,
                ts_ms=int(t["timestamp"]),
                liquidity=liquidity if liquidity in ("taker", "maker") else None,
            ))
        out.sort(key=lambda tr: (tr.ts_ms, tr.trade_id))
        return out


__all__ = ["ExchangeClient"]
