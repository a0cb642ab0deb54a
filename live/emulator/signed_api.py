"""Binance's signed spot endpoints (balances, orders, trades) over the :class:`MatchingEngine`.

Requests are authenticated exactly as Binance does it, so the real ccxt ``binance`` client works
unchanged: the ``X-MBX-APIKEY`` header names the account, and ``signature`` is the hex
HMAC-SHA256, keyed with the account's secret, of the query string followed by the request body
(both as sent, without the ``signature`` parameter). ``timestamp`` must lie within ``recvWindow``
(default 5000 ms, at most 60000) of the server time and not more than 1000 ms ahead of it.

Signatures are checked against ``signature_clock`` (the wall clock by default), not the
emulator's market clock: a replay of 2021 runs on a clock years behind the client's, and a
client's request timestamps are about freshness of the request, not about market time.

Endpoints (spot, under ``/api/v3``): ``GET account``, ``POST order``, ``POST order/test``,
``GET order``, ``DELETE order``, ``GET openOrders``, ``DELETE openOrders``, ``GET allOrders``,
``GET myTrades``; and the three ``/sapi/v1`` reads ccxt's ``load_markets`` makes when it has
keys (``capital/config/getall``, ``margin/allPairs``, ``margin/isolated/allPairs``).

Errors (HTTP status, code, msg) as Binance answers them:

* missing or malformed key: 401, ``-2014 API-key format invalid.``
* unknown key (or a key without trading permission placing orders): 401, ``-2015 Invalid
  API-key, IP, or permissions for action.``
* wrong signature: 400, ``-1022 Signature for this request is not valid.``
* stale or future timestamp: 400, ``-1021 Timestamp for this request is outside of the
  recvWindow.`` / ``... was 1000ms ahead of the server's time.``
* filters: 400, ``-1013 Filter failure: LOT_SIZE | PRICE_FILTER | MARKET_LOT_SIZE | NOTIONAL``
* funds / duplicates: 400, ``-2010 Account has insufficient balance for requested action.`` /
  ``-2010 Duplicate order sent.``
* unknown order: 400, ``-2013 Order does not exist.`` (query), ``-2011 Unknown order sent.``
  (cancel).

Not emulated: quote-quantity market orders (``quoteOrderQty``), stop and OCO orders, IOC/FOK.
USDⓈ-M futures (``/fapi``) trading is :mod:`.binance_futures`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from coinrl.envs.domain import OrderType, Side

from .accounts import API_KEY_PATTERN, Account, Accounts
from .binance_api import BinanceError, fmt_decimal, invalid_symbol, json_response, mandatory
from .clock import Clock, RealClock
from .market import EmulatedMarkets, MarketSpec
from .matching import EmulatedOrder, EmulatedTrade, MatchingEngine, OrderRejected

logger = logging.getLogger(__name__)

DEFAULT_RECV_WINDOW_MS = 5000
MAX_RECV_WINDOW_MS = 60000
MAX_AHEAD_MS = 1000

_DECIMAL = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_SIGNATURE_PART = re.compile(r"(^|&)signature=[^&]*")

Params = dict[str, str]
SignedHandler = Callable[[web.Request, str, Params], Awaitable[Any]]


def sign_payload(secret: str, payload: str) -> str:
    """Binance's signature of ``payload`` (query string + body): hex HMAC-SHA256 with ``secret``."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _strip_signature(raw: str) -> tuple[str, bool]:
    stripped, n = _SIGNATURE_PART.subn("", raw)
    return stripped.lstrip("&") if n else raw, n > 0


def _decimal_param(params: Params, name: str, required: bool = True) -> float | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise mandatory(name)
        return None
    if not _DECIMAL.fullmatch(raw):
        raise BinanceError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is "
            "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
        )
    return float(raw)


def _int(params: Params, name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise BinanceError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        )
    return int(raw)


def _limit(params: Params, default: int = 500, maximum: int = 1000) -> int:
    limit = _int(params, "limit")
    if limit is None:
        return default
    if limit <= 0:
        raise BinanceError(-1130, "Invalid data sent for a parameter.")
    return min(limit, maximum)


class SignedApi:
    """Request handlers of Binance's signed spot API.

    Args:
        markets: listed markets (order endpoints take spot symbols).
        accounts: keys, secrets and balances.
        engine: the matching engine.
        clock: the emulator's market clock (order and fill times).
        signature_clock: the clock ``timestamp``/``recvWindow`` are checked against (default:
            the wall clock).
    """

    def __init__(
        self,
        markets: EmulatedMarkets,
        accounts: Accounts,
        engine: MatchingEngine,
        clock: Clock,
        signature_clock: Clock | None = None,
    ) -> None:
        self.markets = markets
        self.accounts = accounts
        self.engine = engine
        self.clock = clock
        self.signature_clock = signature_clock if signature_clock is not None else RealClock()

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes of the signed endpoints."""
        v3, sapi = "/api/v3", "/sapi/v1"
        h = self._handler
        return [
            web.get(f"{v3}/account", h(self.account)),
            web.post(f"{v3}/order", h(self.new_order)),
            web.post(f"{v3}/order/test", h(self.test_order)),
            web.get(f"{v3}/order", h(self.query_order)),
            web.delete(f"{v3}/order", h(self.cancel_order)),
            web.get(f"{v3}/openOrders", h(self.open_orders)),
            web.delete(f"{v3}/openOrders", h(self.cancel_open_orders)),
            web.get(f"{v3}/allOrders", h(self.all_orders)),
            web.get(f"{v3}/myTrades", h(self.my_trades)),
            web.get(f"{sapi}/capital/config/getall", h(self.capital_config)),
            web.get(f"{sapi}/margin/allPairs", h(self.empty_list)),
            web.get(f"{sapi}/margin/isolated/allPairs", h(self.empty_list)),
        ]

    def _handler(self, fn: SignedHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                api_key, params = await self.authenticate(request)
                return json_response(await fn(request, api_key, params))
            except OrderRejected as e:
                status = 401 if e.code in (-2014, -2015) else 400
                return BinanceError(e.code, e.msg, status).response()
            except BinanceError as e:
                return e.response()

        return handle

    # -- authentication ---------------------------------------------------------------------
    async def authenticate(self, request: web.Request) -> tuple[str, Params]:
        """Check key, signature and timestamp; return the API key and the request parameters.

        Raises:
            BinanceError: -2014/-2015 (HTTP 401), -1022, -1021, -1102 (HTTP 400).
        """
        api_key = request.headers.get("X-MBX-APIKEY", "")
        if not API_KEY_PATTERN.fullmatch(api_key):
            raise BinanceError(-2014, "API-key format invalid.", status=401)
        secret = self.accounts.secret_for(api_key)
        if secret is None:
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", status=401)
        raw_query = request.raw_path.partition("?")[2]
        body = await request.text() if request.can_read_body else ""
        query_wo, sig_in_query = _strip_signature(raw_query)
        body_wo, sig_in_body = _strip_signature(body)
        params: Params = dict(parse_qsl(raw_query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        signature = params.pop("signature", "")
        if not signature or not (sig_in_query or sig_in_body):
            raise mandatory("signature")
        expected = sign_payload(secret, query_wo + body_wo)
        if not hmac.compare_digest(signature.lower().encode(), expected.encode()):
            raise BinanceError(-1022, "Signature for this request is not valid.")
        ts = _int(params, "timestamp")
        if ts is None:
            raise mandatory("timestamp")
        recv_window = _int(params, "recvWindow")
        if recv_window is None:
            recv_window = DEFAULT_RECV_WINDOW_MS
        if recv_window > MAX_RECV_WINDOW_MS:
            raise BinanceError(-1131, "recvWindow must be less than 60000")
        server_ms = self.signature_clock.now_ms()
        if ts >= server_ms + MAX_AHEAD_MS:
            raise BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if server_ms - ts > recv_window:
            raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
        return api_key, params

    # -- helpers ----------------------------------------------------------------------------
    def _symbol(self, params: Params, required: bool = True) -> str | None:
        market_id = params.get("symbol")
        if not market_id:
            if required:
                raise mandatory("symbol")
            return None
        symbol = self.markets.symbol_for("spot", market_id.upper())
        if symbol is None:
            raise invalid_symbol()
        return symbol

    def _spec(self, symbol: str) -> MarketSpec:
        return self.markets.specs[symbol]

    def _account(self, api_key: str) -> Account:
        account = self.accounts.get(api_key)
        if account is None:  # removed between authentication and now
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", status=401)
        return account

    def order_json(self, o: EmulatedOrder) -> dict[str, Any]:
        """Binance's order object (GET/DELETE order, openOrders, allOrders)."""
        return {
            "symbol": self._spec(o.symbol).market_id,
            "orderId": o.order_id,
            "orderListId": -1,
            "clientOrderId": o.client_order_id,
            "price": fmt_decimal(o.limit_price_quote or 0.0),
            "origQty": fmt_decimal(o.qty_base),
            "executedQty": fmt_decimal(o.executed_base),
            "cummulativeQuoteQty": fmt_decimal(o.cum_quote),
            "status": o.status,
            "timeInForce": o.time_in_force or "GTC",
            "type": o.order_type.value.upper(),
            "side": o.side.value.upper(),
            "stopPrice": "0.0",
            "icebergQty": "0.0",
            "time": o.submit_ms,
            "updateTime": o.update_ms,
            "isWorking": True,
            "workingTime": o.submit_ms,
            "origQuoteOrderQty": "0.0",
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def trade_json(self, t: EmulatedTrade) -> dict[str, Any]:
        """Binance's myTrades row."""
        return {
            "symbol": self._spec(t.symbol).market_id,
            "id": t.trade_id,
            "orderId": t.order_id,
            "orderListId": -1,
            "price": fmt_decimal(t.price_quote),
            "qty": fmt_decimal(t.qty_base),
            "quoteQty": fmt_decimal(t.quote_qty),
            "commission": fmt_decimal(t.fee_quote),
            "commissionAsset": t.fee_asset,
            "time": t.ts_ms,
            "isBuyer": t.side is Side.BUY,
            "isMaker": t.is_maker,
            "isBestMatch": True,
        }

    def _parse_new_order(self, params: Params) -> dict[str, Any]:
        symbol = self._symbol(params)
        assert symbol is not None  # noqa: S101 - required=True
        side_raw = params.get("side")
        if not side_raw:
            raise mandatory("side")
        if side_raw not in ("BUY", "SELL"):
            raise BinanceError(-1117, "Invalid side.")
        type_raw = params.get("type")
        if not type_raw:
            raise mandatory("type")
        if type_raw not in ("MARKET", "LIMIT", "LIMIT_MAKER"):
            raise BinanceError(-1116, "Invalid orderType.")
        order_type = OrderType.MARKET if type_raw == "MARKET" else OrderType.LIMIT
        if params.get("quoteOrderQty"):
            raise BinanceError(
                -1106, "Parameter 'quoteOrderQty' sent when not required. "
                "(The emulator takes market orders by base quantity only.)"
            )
        qty = _decimal_param(params, "quantity")
        price: float | None = None
        tif = ""
        if order_type is OrderType.LIMIT:
            price = _decimal_param(params, "price")
            tif = params.get("timeInForce", "" if type_raw == "LIMIT_MAKER" else None) or ""
            if type_raw == "LIMIT" and not tif:
                raise mandatory("timeInForce")
            if tif not in ("", "GTC"):
                raise BinanceError(-1115, "Invalid timeInForce.")
            tif = "GTC"
        elif params.get("price"):
            raise BinanceError(-1106, "Parameter 'price' sent when not required.")
        cid = params.get("newClientOrderId") or None
        if cid is not None and not _CLIENT_ID.fullmatch(cid):
            raise BinanceError(
                -1100, "Illegal characters found in parameter 'newClientOrderId'; legal range is "
                "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'."
            )
        resp_type = params.get("newOrderRespType") or "FULL"
        if resp_type not in ("ACK", "RESULT", "FULL"):
            raise BinanceError(-1100, "Illegal characters found in parameter 'newOrderRespType'.")
        return {
            "symbol": symbol,
            "side": Side.BUY if side_raw == "BUY" else Side.SELL,
            "order_type": order_type,
            "qty_base": qty,
            "price_quote": price,
            "client_order_id": cid,
            "time_in_force": tif,
            "resp_type": resp_type,
        }

    # -- endpoints --------------------------------------------------------------------------
    async def account(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``GET /api/v3/account``: commissions, permissions and balances (free/locked)."""
        account = self._account(api_key)
        balances = self.engine.balances(api_key)
        omit_zero = params.get("omitZeroBalances", "").lower() == "true"
        rows = [
            {"asset": a, "free": fmt_decimal(free), "locked": fmt_decimal(locked)}
            for a, (free, locked) in balances.items()
            if not (omit_zero and free == 0.0 and locked == 0.0)
        ]
        m = self.engine.model
        return {
            "makerCommission": round(m.maker_fee_rate * 10_000),
            "takerCommission": round(m.taker_fee_rate * 10_000),
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": fmt_decimal(m.maker_fee_rate),
                "taker": fmt_decimal(m.taker_fee_rate),
                "buyer": "0.0",
                "seller": "0.0",
            },
            "canTrade": account.can_trade,
            "canWithdraw": False,
            "canDeposit": False,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": account.update_ms,
            "accountType": "SPOT",
            "balances": rows,
            "permissions": ["SPOT"],
            "uid": account.uid,
        }

    async def new_order(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``POST /api/v3/order``: place a market or limit order (ACK / RESULT / FULL answer)."""
        p = self._parse_new_order(params)
        now = self.clock.now_ms()
        order = self.engine.submit(
            api_key, p["symbol"], p["side"], p["order_type"], p["qty_base"], now_ms=now,
            price_quote=p["price_quote"], client_order_id=p["client_order_id"],
            time_in_force=p["time_in_force"],
        )
        ack = {
            "symbol": self._spec(order.symbol).market_id,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "transactTime": now,
        }
        if p["resp_type"] == "ACK":
            return ack
        full = self.order_json(order)
        for k in ("time", "updateTime", "isWorking", "stopPrice", "icebergQty"):
            full.pop(k, None)
        out = {**ack, **full}
        if p["resp_type"] == "FULL":
            out["fills"] = [
                {
                    "price": fmt_decimal(t.price_quote),
                    "qty": fmt_decimal(t.qty_base),
                    "commission": fmt_decimal(t.fee_quote),
                    "commissionAsset": t.fee_asset,
                    "tradeId": t.trade_id,
                }
                for t in self.engine.trades(api_key, order.symbol, order.order_id)
            ]
        return out

    async def test_order(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``POST /api/v3/order/test``: validate parameters only (nothing is placed)."""
        self._parse_new_order(params)
        return {}

    def _find(self, api_key: str, params: Params) -> EmulatedOrder:
        symbol = self._symbol(params)
        assert symbol is not None  # noqa: S101
        order_id = _int(params, "orderId")
        cid = params.get("origClientOrderId") or None
        if order_id is None and cid is None:
            raise BinanceError(
                -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        return self.engine.find(api_key, symbol, order_id=order_id, client_order_id=cid)

    async def query_order(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``GET /api/v3/order`` by ``orderId`` or ``origClientOrderId``."""
        return self.order_json(self._find(api_key, params))

    async def cancel_order(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``DELETE /api/v3/order`` by ``orderId`` or ``origClientOrderId``."""
        symbol = self._symbol(params)
        assert symbol is not None  # noqa: S101
        order_id = _int(params, "orderId")
        cid = params.get("origClientOrderId") or None
        if order_id is None and cid is None:
            raise BinanceError(
                -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        now = self.clock.now_ms()
        order = self.engine.cancel(api_key, symbol, now_ms=now, order_id=order_id, client_order_id=cid)
        return self._cancel_json(order, params, now)

    def _cancel_json(self, order: EmulatedOrder, params: Params, now: int) -> dict[str, Any]:
        out = self.order_json(order)
        for k in ("time", "updateTime", "isWorking", "stopPrice", "icebergQty", "workingTime"):
            out.pop(k, None)
        out["origClientOrderId"] = order.client_order_id
        out["clientOrderId"] = params.get("newClientOrderId") or f"cancel_{uuid.uuid4().hex[:20]}"
        out["transactTime"] = now
        return out

    async def open_orders(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``GET /api/v3/openOrders`` (one symbol, or all without ``symbol``)."""
        symbol = self._symbol(params, required=False)
        return [self.order_json(o) for o in self.engine.open_orders(api_key, symbol)]

    async def cancel_open_orders(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``DELETE /api/v3/openOrders``: cancel every open order of ``symbol``."""
        symbol = self._symbol(params)
        assert symbol is not None  # noqa: S101
        now = self.clock.now_ms()
        return [self._cancel_json(o, {}, now) for o in self.engine.cancel_all(api_key, symbol, now_ms=now)]

    async def all_orders(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``GET /api/v3/allOrders``: ``orderId`` (>=), ``startTime``/``endTime`` on order time."""
        symbol = self._symbol(params)
        order_id, start, end = _int(params, "orderId"), _int(params, "startTime"), _int(params, "endTime")
        limit = _limit(params)
        rows = [
            o for o in self.engine.orders(api_key, symbol)
            if (order_id is None or o.order_id >= order_id)
            and (start is None or o.submit_ms >= start)
            and (end is None or o.submit_ms <= end)
        ]
        rows = rows[:limit] if (order_id is not None or start is not None) else rows[-limit:]
        return [self.order_json(o) for o in rows]

    async def my_trades(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``GET /api/v3/myTrades``: ``orderId``, ``fromId`` (>=), ``startTime``/``endTime``."""
        symbol = self._symbol(params)
        order_id, from_id = _int(params, "orderId"), _int(params, "fromId")
        start, end = _int(params, "startTime"), _int(params, "endTime")
        limit = _limit(params)
        rows = [
            t for t in self.engine.trades(api_key, symbol, order_id)
            if (from_id is None or t.trade_id >= from_id)
            and (start is None or t.ts_ms >= start)
            and (end is None or t.ts_ms <= end)
        ]
        first = from_id is not None or start is not None
        rows = rows[:limit] if first else rows[-limit:]
        return [self.trade_json(t) for t in rows]

    async def capital_config(self, request: web.Request, api_key: str, params: Params) -> Any:
        """``GET /sapi/v1/capital/config/getall``: the listed coins and this account's balances."""
        balances = self.engine.balances(api_key)
        assets = sorted({a for m in self.markets.specs.values() for a in (m.base, m.quote)})
        return [
            {
                "coin": a,
                "name": a,
                "free": fmt_decimal(balances.get(a, (0.0, 0.0))[0]),
                "locked": fmt_decimal(balances.get(a, (0.0, 0.0))[1]),
                "freeze": "0",
                "withdrawing": "0",
                "ipoing": "0",
                "ipoable": "0",
                "storage": "0",
                "isLegalMoney": False,
                "trading": True,
                "depositAllEnable": False,
                "withdrawAllEnable": False,
                "networkList": [],
            }
            for a in assets
        ]

    async def empty_list(self, request: web.Request, api_key: str, params: Params) -> Any:
        """Margin pair lists: the emulator lists no margin markets."""
        return []


__all__ = [
    "DEFAULT_RECV_WINDOW_MS",
    "MAX_AHEAD_MS",
    "MAX_RECV_WINDOW_MS",
    "SignedApi",
    "sign_payload",
]
