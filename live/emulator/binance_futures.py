"""Binance's signed USDⓈ-M futures endpoints (``/fapi``) over the shared matching engine.

The Binance dialect's half of the emulator's linear perpetuals (:mod:`.perps`: cross margin over
the account's wallet, funding at funding times), so the real ccxt ``binance`` client trades
``BTC/USDT:USDT`` as the Bybit dialect does. Authentication is the spot API's
(:meth:`.signed_api.SignedApi.authenticate`: ``X-MBX-APIKEY`` and an HMAC-SHA256 ``signature``).

Endpoints: ``GET /fapi/v2|v3/account`` (assets: wallet, unrealised PnL, margin balance,
initial margin, available balance; positions), ``GET /fapi/v2|v3/positionRisk``,
``GET /fapi/v1/leverageBracket``, ``POST|GET|DELETE /fapi/v1/order``, ``GET /fapi/v1/openOrders``,
``GET /fapi/v1/allOrders``, ``GET /fapi/v1/userTrades``, ``GET /fapi/v1/income`` (funding fees).

Refusals as Binance futures words them: ``-2019 Margin is insufficient.``, ``-4116
ClientOrderId is duplicated.`` (unique among OPEN orders, as on spot), ``-2022 ReduceOnly Order is
rejected.``, ``-2013 Order does not exist.``, ``-2011 Unknown order sent.``; filters ``-1013``
(ccxt: InsufficientFunds, InvalidOrder, OrderNotFound as for spot).

Not emulated: hedge mode (``positionSide`` is always ``BOTH``), leverage and margin-type
changes, stop and trailing orders, liquidation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from coinrl.envs.domain import OrderType, Side

from .binance_api import BinanceError, fmt_decimal, invalid_symbol, json_response, mandatory
from .matching import EmulatedOrder, EmulatedTrade, OrderRejected
from .perps import mark_price
from .signed_api import Params, SignedApi, SignedHandler, _decimal_param, _int, _limit

FAPI = "/fapi"


def _futures_error(e: OrderRejected) -> BinanceError:
    if "Duplicate" in e.msg:
        return BinanceError(-4116, "ClientOrderId is duplicated.")
    if "insufficient" in e.msg:
        return BinanceError(-2019, "Margin is insufficient.")
    status = 401 if e.code in (-2014, -2015) else 400
    return BinanceError(e.code, e.msg, status)


class FuturesSignedApi(SignedApi):
    """Request handlers of Binance's signed USDⓈ-M futures API (one-way mode, cross margin)."""

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes of the ``/fapi`` signed endpoints."""
        h, v1 = self._handler, f"{FAPI}/v1"
        out = [
            web.post(f"{v1}/order", h(self.new_futures_order)),
            web.get(f"{v1}/order", h(self.query_futures_order)),
            web.delete(f"{v1}/order", h(self.cancel_futures_order)),
            web.get(f"{v1}/openOrders", h(self.futures_open_orders)),
            web.get(f"{v1}/allOrders", h(self.futures_all_orders)),
            web.get(f"{v1}/userTrades", h(self.futures_trades)),
            web.get(f"{v1}/income", h(self.income)),
            web.get(f"{v1}/leverageBracket", h(self.leverage_bracket)),
        ]
        for v in ("v2", "v3"):
            out += [web.get(f"{FAPI}/{v}/account", h(self.futures_account)),
                    web.get(f"{FAPI}/{v}/positionRisk", h(self.position_risk))]
        return out

    def _handler(self, fn: SignedHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                api_key, params = await self.authenticate(request)
                return json_response(await fn(request, api_key, params))
            except OrderRejected as e:
                return _futures_error(e).response()
            except BinanceError as e:
                return e.response()

        return handle

    def _symbol(self, params: Params, required: bool = True) -> str | None:
        market_id = params.get("symbol")
        if not market_id:
            if required:
                raise mandatory("symbol")
            return None
        symbol = self.markets.symbol_for("linear", market_id.upper())
        if symbol is None:
            raise invalid_symbol()
        return symbol

    # -- records ----------------------------------------------------------------------------
    def futures_order_json(self, o: EmulatedOrder) -> dict[str, Any]:
        """Binance futures' order object."""
        avg = o.cum_quote / o.executed_base if o.executed_base > 0 else 0.0
        kind = o.order_type.value.upper()
        return {
            "orderId": o.order_id, "symbol": self._spec(o.symbol).market_id, "status": o.status,
            "clientOrderId": o.client_order_id, "price": fmt_decimal(o.limit_price_quote or 0.0),
            "avgPrice": fmt_decimal(avg), "origQty": fmt_decimal(o.qty_base),
            "executedQty": fmt_decimal(o.executed_base), "cumQuote": fmt_decimal(o.cum_quote),
            "timeInForce": o.time_in_force or "GTC", "type": kind, "reduceOnly": False,
            "closePosition": False, "side": o.side.value.upper(), "positionSide": "BOTH",
            "stopPrice": "0", "workingType": "CONTRACT_PRICE", "priceProtect": False,
            "origType": kind, "priceMatch": "NONE", "selfTradePreventionMode": "NONE",
            "goodTillDate": 0, "time": o.submit_ms, "updateTime": o.update_ms,
        }

    def futures_trade_json(self, t: EmulatedTrade) -> dict[str, Any]:
        """Binance futures' ``userTrades`` row."""
        return {
            "symbol": self._spec(t.symbol).market_id, "id": t.trade_id, "orderId": t.order_id,
            "side": t.side.value.upper(), "price": fmt_decimal(t.price_quote),
            "qty": fmt_decimal(t.qty_base), "realizedPnl": fmt_decimal(self.engine.perps.realised_by_trade.get(t.trade_id, 0.0)),
            "quoteQty": fmt_decimal(t.quote_qty), "commission": fmt_decimal(t.fee_quote),
            "commissionAsset": t.fee_asset, "time": t.ts_ms, "positionSide": "BOTH",
            "buyer": t.side is Side.BUY, "maker": t.is_maker,
        }

    # -- account ----------------------------------------------------------------------------
    def _positions(self, api_key: str, symbol: str | None = None) -> list[dict[str, Any]]:
        now = self.clock.now_ms()
        perps = self.engine.perps
        rows = []
        for s, p in perps.of(api_key):
            if symbol is not None and s != symbol:
                continue
            mark = mark_price(self.markets.series[s], now)
            notional = p.size_base * mark
            rows.append({
                "symbol": self._spec(s).market_id, "positionSide": "BOTH",
                "positionAmt": fmt_decimal(p.size_base), "entryPrice": fmt_decimal(p.entry_price_quote),
                "breakEvenPrice": "0.0", "markPrice": fmt_decimal(mark),
                "unRealizedProfit": fmt_decimal(p.size_base * (mark - p.entry_price_quote)),
                "unrealizedProfit": fmt_decimal(p.size_base * (mark - p.entry_price_quote)),
                "liquidationPrice": "0", "isolatedMargin": "0", "notional": fmt_decimal(notional),
                "marginAsset": self._spec(s).quote, "isolatedWallet": "0",
                "initialMargin": fmt_decimal(abs(notional) / perps.leverage),
                "maintMargin": "0", "positionInitialMargin": fmt_decimal(abs(notional) / perps.leverage),
                "openOrderInitialMargin": "0", "adl": 0, "bidNotional": "0", "askNotional": "0",
                "leverage": str(int(perps.leverage)), "marginType": "cross",
                "updateTime": p.update_ms,
            })
        return rows

    async def futures_account(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``GET /fapi/v2|v3/account``: per settle coin wallet, margin and availability."""
        now = self.clock.now_ms()
        perps = self.engine.perps
        account = self._account(api_key)
        quotes = sorted({m.quote for m in self.markets.listed("linear")})
        assets = []
        for q in quotes:
            wallet = account.total(q)
            upnl = perps.unrealised(api_key, q, now)
            p_im = perps.initial_margin(api_key, q, now)
            o_im = sum(o.lock_amount for o in self.engine.open_orders(api_key)
                       if o.lock_asset == q and self._spec(o.symbol).kind == "linear")
            locked = sum(o.lock_amount for o in self.engine.open_orders(api_key) if o.lock_asset == q)
            available = wallet + upnl - p_im - locked
            assets.append({
                "asset": q, "walletBalance": fmt_decimal(wallet), "unrealizedProfit": fmt_decimal(upnl),
                "marginBalance": fmt_decimal(wallet + upnl), "maintMargin": "0",
                "initialMargin": fmt_decimal(p_im + o_im), "positionInitialMargin": fmt_decimal(p_im),
                "openOrderInitialMargin": fmt_decimal(o_im), "crossWalletBalance": fmt_decimal(wallet),
                "crossUnPnl": fmt_decimal(upnl), "availableBalance": fmt_decimal(available),
                "maxWithdrawAmount": fmt_decimal(max(0.0, available)), "marginAvailable": True,
                "updateTime": account.update_ms or 1,
            })
        first = assets[0] if assets else {}
        return {
            "totalInitialMargin": first.get("initialMargin", "0"), "totalMaintMargin": "0",
            "totalWalletBalance": first.get("walletBalance", "0"),
            "totalUnrealizedProfit": first.get("unrealizedProfit", "0"),
            "totalMarginBalance": first.get("marginBalance", "0"),
            "availableBalance": first.get("availableBalance", "0"),
            "maxWithdrawAmount": first.get("maxWithdrawAmount", "0"),
            "assets": assets, "positions": self._positions(api_key),
        }

    async def position_risk(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``GET /fapi/v2|v3/positionRisk``: open positions (one symbol or all)."""
        self._account(api_key)
        return self._positions(api_key, self._symbol(params, required=False))

    async def leverage_bracket(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``GET /fapi/v1/leverageBracket``: one bracket per market at the emulator's leverage."""
        lev = int(self.engine.perps.leverage)
        return [{"symbol": m.market_id, "brackets": [{
            "bracket": 1, "initialLeverage": lev, "notionalCap": 1e12, "notionalFloor": 0,
            "maintMarginRatio": 0.0, "cum": 0.0}]} for m in self.markets.listed("linear")]

    async def income(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``GET /fapi/v1/income``: funding fees (``incomeType=FUNDING_FEE``), oldest first;
        ``income`` is what the account RECEIVED (negative: paid)."""
        symbol = self._symbol(params, required=False)
        kind = params.get("incomeType", "")
        start, end = _int(params, "startTime"), _int(params, "endTime")
        if kind not in ("", "FUNDING_FEE"):
            return []
        rows = [f for f in self.engine.perps.payments if f.api_key == api_key
                and (symbol is None or f.symbol == symbol)
                and (start is None or f.ts_ms >= start) and (end is None or f.ts_ms <= end)]
        return [{"symbol": self._spec(f.symbol).market_id, "incomeType": "FUNDING_FEE",
                 "income": fmt_decimal(-f.payment_quote), "asset": self._spec(f.symbol).quote,
                 "info": "FUNDING_FEE", "time": f.ts_ms, "tranId": i + 1, "tradeId": ""}
                for i, f in enumerate(rows[:_limit(params, 100, 1000)])]

    # -- orders -----------------------------------------------------------------------------
    async def new_futures_order(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``POST /fapi/v1/order``: a market or GTC limit order (``reduceOnly`` honoured)."""
        symbol = self._symbol(params)
        assert symbol is not None  # noqa: S101 - required
        side = {"BUY": Side.BUY, "SELL": Side.SELL}.get(params.get("side", ""))
        order_type = {"MARKET": OrderType.MARKET, "LIMIT": OrderType.LIMIT}.get(params.get("type", ""))
        if side is None:
            raise BinanceError(-1117, "Invalid side.")
        if order_type is None:
            raise BinanceError(-1116, "Invalid orderType.")
        qty = _decimal_param(params, "quantity")
        assert qty is not None  # noqa: S101 - required
        price = _decimal_param(params, "price") if order_type is OrderType.LIMIT else None
        if order_type is OrderType.LIMIT and params.get("timeInForce", "GTC") != "GTC":
            raise BinanceError(-1115, "Invalid timeInForce.")
        if params.get("reduceOnly", "").lower() == "true" and qty > self.engine.perps.reducible(
                api_key, symbol, side is Side.BUY):
            raise BinanceError(-2022, "ReduceOnly Order is rejected.")
        order = self.engine.submit(
            api_key, symbol, side, order_type, qty, now_ms=self.clock.now_ms(), price_quote=price,
            client_order_id=params.get("newClientOrderId") or None, time_in_force="GTC",
        )
        return self.futures_order_json(order)

    def _find_futures(self, api_key: str, params: Params) -> tuple[str, int | None, str | None]:
        symbol = self._symbol(params)
        assert symbol is not None  # noqa: S101 - required
        order_id, cid = _int(params, "orderId"), params.get("origClientOrderId") or None
        if order_id is None and cid is None:
            raise BinanceError(
                -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        return symbol, order_id, cid

    async def query_futures_order(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``GET /fapi/v1/order`` by ``orderId`` or ``origClientOrderId``."""
        symbol, order_id, cid = self._find_futures(api_key, params)
        return self.futures_order_json(
            self.engine.find(api_key, symbol, order_id=order_id, client_order_id=cid))

    async def cancel_futures_order(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``DELETE /fapi/v1/order`` by ``orderId`` or ``origClientOrderId``."""
        symbol, order_id, cid = self._find_futures(api_key, params)
        return self.futures_order_json(self.engine.cancel(
            api_key, symbol, now_ms=self.clock.now_ms(), order_id=order_id, client_order_id=cid))

    async def futures_open_orders(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``GET /fapi/v1/openOrders`` (one symbol, or every perpetual)."""
        symbol = self._symbol(params, required=False)
        return [self.futures_order_json(o) for o in self.engine.open_orders(api_key, symbol)
                if self._spec(o.symbol).kind == "linear"]

    async def futures_all_orders(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``GET /fapi/v1/allOrders``: ``orderId`` (>=), ``startTime``/``endTime``."""
        symbol = self._symbol(params)
        order_id, start, end = _int(params, "orderId"), _int(params, "startTime"), _int(params, "endTime")
        rows = [o for o in self.engine.orders(api_key, symbol)
                if (order_id is None or o.order_id >= order_id)
                and (start is None or o.submit_ms >= start) and (end is None or o.submit_ms <= end)]
        limit = _limit(params, 500, 1000)
        rows = rows[:limit] if (order_id is not None or start is not None) else rows[-limit:]
        return [self.futures_order_json(o) for o in rows]

    async def futures_trades(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``GET /fapi/v1/userTrades``: ``orderId``, ``fromId`` (>=), ``startTime``/``endTime``."""
        symbol = self._symbol(params)
        order_id, from_id = _int(params, "orderId"), _int(params, "fromId")
        start, end = _int(params, "startTime"), _int(params, "endTime")
        rows = [t for t in self.engine.trades(api_key, symbol, order_id)
                if (from_id is None or t.trade_id >= from_id)
                and (start is None or t.ts_ms >= start) and (end is None or t.ts_ms <= end)]
        limit = _limit(params, 500, 1000)
        rows = rows[:limit] if (from_id is not None or start is not None) else rows[-limit:]
        return [self.futures_trade_json(t) for t in rows]


__all__ = ["FAPI", "FuturesSignedApi"]
