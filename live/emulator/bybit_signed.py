"""Bybit's v5 signed endpoints over the shared :class:`~.matching.MatchingEngine`.

Authentication is Bybit's, so the real ccxt ``bybit`` client works unchanged: headers
``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP`` (ms), ``X-BAPI-RECV-WINDOW`` (default 5000) and
``X-BAPI-SIGN``, the hex HMAC-SHA256, keyed with the account's secret, of
``timestamp + api_key + recv_window + payload`` where the payload is the query string as sent
(GET) or the JSON body (POST). The timestamp must satisfy
``server - recv_window <= timestamp < server + 1000`` on ``signature_clock`` (the wall clock).

Answers (HTTP 200, Bybit's envelope) and the ``retCode`` ccxt maps to its typed errors:

* unknown or missing key: ``10003`` (AuthenticationError); wrong signature: ``10004``
  (AuthenticationError); stale timestamp: ``10002`` (InvalidNonce); no trading permission:
  ``10005`` (PermissionDenied); bad parameters: ``10001`` (BadRequest).
* duplicate ``orderLinkId``: ``110072`` (InvalidOrder). Unlike Binance, Bybit refuses a link id
  used by ANY earlier order of the account, open or not.
* insufficient balance: ``170131`` (InsufficientFunds); filters: ``170134`` price decimals,
  ``170137`` quantity decimals, ``170135`` quantity too large, ``170140`` value below the
  minimum (InvalidOrder); unknown order: ``170213`` (OrderNotFound).

Endpoints: ``GET user/query-api`` and ``account/info`` (a unified trading account, UTA 2.0),
``asset/coin/query-info``, ``account/wallet-balance``, ``POST order/create``, ``order/cancel``,
``order/cancel-all``, ``GET order/realtime`` (open orders; any order named by ``orderId`` or
``orderLinkId``), ``order/history`` (finished orders), ``execution/list`` (fills) and
``position/list``.

Linear perpetuals trade on cross margin over the account's unified wallet, with funding at
funding times (:mod:`.perps`); refusals there: ``110007`` margin (InsufficientFunds), ``110017``
reduce-only (InvalidOrder). Not emulated: market orders by quote amount
(``marketUnit=quoteCoin``), conditional/TP-SL orders, IOC/FOK/PostOnly, leverage changes (every
position runs at :data:`~.perps.DEFAULT_LEVERAGE`), liquidation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from coinrl.envs.domain import OrderType, Side

from .accounts import API_KEY_PATTERN, Accounts
from .bybit_api import (
    PREFIX,
    BybitError,
    Query,
    category_kind,
    envelope,
    int_arg,
    limit_arg,
    market_symbol,
)
from .bybit_records import execution_json, funding_json, order_json, position_json, wallet_json
from .clock import Clock, RealClock
from .market import EmulatedMarkets
from .matching import EmulatedOrder, MatchingEngine, OrderRejected

logger = logging.getLogger(__name__)

DEFAULT_RECV_WINDOW_MS = 5000
MAX_AHEAD_MS = 1000

SignedHandler = Callable[[str, Query], Any]

_FILTER_CODES = {
    "Filter failure: PRICE_FILTER": (170134, "Order price decimal too long."),
    "Filter failure: LOT_SIZE": (170137, "Order volume decimal too long."),
    "Filter failure: MARKET_LOT_SIZE": (170135, "Order quantity too large."),
    "Filter failure: NOTIONAL": (170140, "Order value exceeded lower limit."),
}


def bybit_sign(secret: str, timestamp: str, api_key: str, recv_window: str, payload: str) -> str:
    """Bybit v5's HMAC signature: hex HMAC-SHA256 of ``timestamp+key+recvWindow+payload``."""
    text = f"{timestamp}{api_key}{recv_window}{payload}"
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def bybit_error_for(code: int, msg: str) -> BybitError:
    """Bybit's answer to a refusal the matching engine raised with Binance's ``(code, msg)``."""
    if code == -2010 and "Duplicate" in msg:
        return BybitError(110072, "OrderLinkedID is duplicate")
    if code == -2010 and "insufficient" in msg:
        return BybitError(170131, "Insufficient balance.")
    if code == -2010:  # a reject fault: "new order rejected"
        return BybitError(170210, f"New order rejected. {msg}")
    if code in (-2011, -2013):
        return BybitError(170213, "Order does not exist.")
    if code in (-2014, -2015):
        return BybitError(10005, "Permission denied, please check your API key permissions.")
    if code == -1121:
        return BybitError(10001, "Not supported symbols")
    if msg in _FILTER_CODES:
        return BybitError(*_FILTER_CODES[msg])
    if code == -1013:
        return BybitError(170130, f"Data sent for paramter 'qty' is not valid. ({msg})")
    return BybitError(10001, f"params error: {msg}")


def _window(rows: Sequence[Any], query: Query, default: int, maximum: int) -> tuple[list[Any], str]:
    """One page of ``rows`` (newest first) from ``cursor`` (an offset), and the next cursor."""
    limit = limit_arg(query, default, maximum)
    raw = query.get("cursor") or "0"
    if not raw.isdigit():
        raise BybitError(10001, "params error: cursor invalid")
    start = int(raw)
    page = list(rows[start:start + limit])
    return page, (str(start + limit) if start + limit < len(rows) else "")


class BybitSignedApi:
    """Request handlers of Bybit's v5 signed API (spot and linear perpetual trading).

    Args:
        markets: listed markets.
        accounts: keys, secrets and balances.
        engine: the matching engine (shared with the Binance dialect).
        clock: the emulator's market clock (order and fill times).
        signature_clock: the clock request timestamps are checked against (default: wall clock).
    """

    def __init__(
        self, markets: EmulatedMarkets, accounts: Accounts, engine: MatchingEngine, clock: Clock,
        signature_clock: Clock | None = None,
    ) -> None:
        self.markets = markets
        self.accounts = accounts
        self.engine = engine
        self.clock = clock
        self.signature_clock = signature_clock if signature_clock is not None else RealClock()

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes of the signed endpoints."""
        h, p = self._handler, PREFIX
        return [
            web.get(f"{p}/user/query-api", h(self.query_api)),
            web.get(f"{p}/account/info", h(self.account_info)),
            web.get(f"{p}/asset/coin/query-info", h(self.coin_info)),
            web.get(f"{p}/account/wallet-balance", h(self.wallet_balance)),
            web.post(f"{p}/order/create", h(self.create_order)),
            web.post(f"{p}/order/cancel", h(self.cancel_order)),
            web.post(f"{p}/order/cancel-all", h(self.cancel_all)),
            web.get(f"{p}/order/realtime", h(self.realtime)),
            web.get(f"{p}/order/history", h(self.history)),
            web.get(f"{p}/execution/list", h(self.executions)),
            web.get(f"{p}/position/list", h(self.positions)),
        ]

    def _handler(self, fn: SignedHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            now = self.clock.now_ms()
            try:
                api_key, query = await self.authenticate(request)
                return envelope(fn(api_key, query), now)
            except OrderRejected as e:
                return bybit_error_for(e.code, e.msg).response(now)
            except BybitError as e:
                return e.response(now)

        return handle

    # -- authentication ---------------------------------------------------------------------
    async def authenticate(self, request: web.Request) -> tuple[str, Query]:
        """Check key, signature and timestamp; return the API key and the request parameters.

        Raises:
            BybitError: 10003 (key), 10004 (signature), 10002 (timestamp), 10001 (malformed).
        """
        h = request.headers
        api_key, ts, sign = h.get("X-BAPI-API-KEY", ""), h.get("X-BAPI-TIMESTAMP", ""), h.get("X-BAPI-SIGN", "")
        recv = h.get("X-BAPI-RECV-WINDOW", str(DEFAULT_RECV_WINDOW_MS))
        if not api_key or not ts or not sign:
            raise BybitError(10001, "empty value: apiTimestamp apiKey apiSignature: openapi sign params error!")
        if not API_KEY_PATTERN.fullmatch(api_key):
            raise BybitError(10003, "API key is invalid.")
        secret = self.accounts.secret_for(api_key)
        if secret is None:
            raise BybitError(10003, "API key is invalid.")
        if request.method == "POST":
            payload = await request.text() if request.can_read_body else ""
        else:
            payload = request.raw_path.partition("?")[2]
        if not hmac.compare_digest(sign.lower().encode(), bybit_sign(secret, ts, api_key, recv, payload).encode()):
            raise BybitError(10004, "error sign! please check your signature generation algorithm")
        if not ts.isdigit() or not recv.isdigit():
            raise BybitError(10001, "params error: X-BAPI-TIMESTAMP / X-BAPI-RECV-WINDOW invalid")
        server_ms = self.signature_clock.now_ms()
        if not server_ms - int(recv) <= int(ts) < server_ms + MAX_AHEAD_MS:
            raise BybitError(
                10002, f"invalid request, please check your server timestamp or recv_window param. "
                f"req_timestamp[{ts}],server_timestamp[{server_ms}],recv_window[{recv}]",
            )
        if request.method == "POST":
            try:
                body = json.loads(payload or "{}")
            except ValueError as e:
                raise BybitError(10001, "params error: the body is not JSON") from e
            if not isinstance(body, dict):
                raise BybitError(10001, "params error: the body is not a JSON object")
            query = {k: ("true" if v is True else "false" if v is False else str(v))
                     for k, v in body.items() if v is not None}
        else:
            query = dict(request.query)
        return api_key, query

    # -- formatting ----------------------------------------------------------------------
    def order_json(self, o: EmulatedOrder) -> dict[str, Any]:
        """Bybit's order object (``order/realtime``, ``order/history``)."""
        return order_json(self.markets, self.engine, o)

    # -- account ----------------------------------------------------------------------------
    def query_api(self, api_key: str, query: Query) -> Any:
        """``GET /v5/user/query-api``: this key is a UTA 2.0 key (``uta=1``)."""
        account = self.engine._account(api_key)
        trade = ["Order", "Position"] if account.can_trade else []
        return {
            "id": str(account.uid), "note": "coinrl emulator", "apiKey": api_key,
            "readOnly": 0 if account.can_trade else 1, "secret": "",
            "permissions": {"ContractTrade": trade, "Spot": ["SpotTrade"] if account.can_trade else [],
                            "Wallet": [], "Options": [], "Derivatives": [], "CopyTrading": [],
                            "BlockTrade": [], "Exchange": [], "NFT": []},
            "ips": ["*"], "type": 1, "deadlineDay": -1, "expiredAt": "", "createdAt": "",
            "unified": 0, "uta": 1, "userID": account.uid, "inviterID": 0,
            "vipLevel": "No VIP", "mktMakerLevel": "0", "affiliateID": 0, "rsaPublicKey": "",
            "isMaster": True,
        }

    def account_info(self, api_key: str, query: Query) -> Any:
        """``GET /v5/account/info``: cross (regular) margin, UTA 2.0 (``unifiedMarginStatus=6``)."""
        account = self.engine._account(api_key)
        return {"marginMode": "REGULAR_MARGIN", "updatedTime": str(account.update_ms),
                "unifiedMarginStatus": 6, "dcpStatus": "OFF", "timeWindow": 10, "smpGroup": 0,
                "isMasterTrader": False, "spotHedgingStatus": "OFF"}

    def coin_info(self, api_key: str, query: Query) -> Any:
        """``GET /v5/asset/coin/query-info``: the listed coins (no deposit/withdrawal chains)."""
        coins = sorted({a for m in self.markets.specs.values() for a in (m.base, m.quote)})
        return {"rows": [{"name": c, "coin": c, "remainAmount": "0", "chains": []} for c in coins]}

    def wallet_balance(self, api_key: str, query: Query) -> Any:
        """``GET /v5/account/wallet-balance?accountType=UNIFIED``: one unified wallet."""
        if query.get("accountType", "UNIFIED") != "UNIFIED":
            raise BybitError(10001, "accountType only support UNIFIED.")
        return wallet_json(self.markets, self.engine, api_key, self.clock.now_ms())

    # -- orders -----------------------------------------------------------------------------
    def _trade_symbol(self, query: Query) -> str:
        return market_symbol(self.markets, category_kind(query), query.get("symbol"))

    @staticmethod
    def _decimal(query: Query, name: str) -> float:
        raw = query.get(name, "")
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not value > 0.0 or value == float("inf"):
            raise BybitError(10001, f"params error: {name} invalid")
        return value

    def create_order(self, api_key: str, query: Query) -> Any:
        """``POST /v5/order/create``: a market (base quantity) or GTC limit order, spot or
        linear (``reduceOnly`` honoured: it may not open or grow a position)."""
        symbol = self._trade_symbol(query)
        linear = self.markets.specs[symbol].kind == "linear"
        side = {"Buy": Side.BUY, "Sell": Side.SELL}.get(query.get("side", ""))
        order_type = {"Market": OrderType.MARKET, "Limit": OrderType.LIMIT}.get(query.get("orderType", ""))
        if side is None or order_type is None:
            raise BybitError(10001, "params error: side / orderType invalid")
        qty = self._decimal(query, "qty")
        price: float | None = None
        if order_type is OrderType.LIMIT:
            price = self._decimal(query, "price")
            if query.get("timeInForce", "GTC") != "GTC":
                raise BybitError(10001, "params error: only timeInForce=GTC is emulated")
        elif not linear and query.get("marketUnit", "baseCoin" if side is Side.SELL else "quoteCoin") != "baseCoin":
            raise BybitError(10001, "params error: the emulator takes spot market orders by base "
                             "quantity only (marketUnit=baseCoin)")
        cid = query.get("orderLinkId") or None
        if cid is not None and not (len(cid) <= 36 and all(c.isalnum() or c in "-_" for c in cid)):
            raise BybitError(10001, "params error: orderLinkId invalid (1-36 of A-Z a-z 0-9 - _)")
        if linear and query.get("reduceOnly") == "true" and qty > self.engine.perps.reducible(
                api_key, symbol, side is Side.BUY):
            raise BybitError(110017, "Reduce-only rule not satisfied")
        try:
            order = self.engine.submit(
                api_key, symbol, side, order_type, qty, now_ms=self.clock.now_ms(),
                price_quote=price, client_order_id=cid, time_in_force="GTC",
                client_id_unique_forever=True,
            )
        except OrderRejected as e:
            if linear and "insufficient" in e.msg:
                raise BybitError(110007, "ab not enough for new order") from e
            raise
        return {"orderId": str(order.order_id), "orderLinkId": order.client_order_id}

    def _named(self, api_key: str, symbol: str | None, query: Query) -> EmulatedOrder | None:
        """The order named by ``orderId`` (first) or ``orderLinkId`` in ``symbol``, or None."""
        oid, cid = query.get("orderId") or None, query.get("orderLinkId") or None
        if oid is not None and not oid.isdigit():
            return None
        orders = self.engine.orders(api_key, symbol)
        if oid is not None:
            return next((o for o in orders if o.order_id == int(oid)), None)
        matches = [o for o in orders if o.client_order_id == cid]
        return matches[-1] if matches else None

    def cancel_order(self, api_key: str, query: Query) -> Any:
        """``POST /v5/order/cancel`` by ``orderId`` or ``orderLinkId``."""
        symbol = self._trade_symbol(query)
        if not (query.get("orderId") or query.get("orderLinkId")):
            raise BybitError(10001, "params error: orderId or orderLinkId is required")
        order = self._named(api_key, symbol, query)
        if order is None or not order.is_open:
            raise BybitError(170213, "Order does not exist.")
        done = self.engine.cancel(api_key, symbol, now_ms=self.clock.now_ms(), order_id=order.order_id)
        return {"orderId": str(done.order_id), "orderLinkId": done.client_order_id}

    def cancel_all(self, api_key: str, query: Query) -> Any:
        """``POST /v5/order/cancel-all``: every open order of ``symbol``."""
        symbol = self._trade_symbol(query)
        done = self.engine.cancel_all(api_key, symbol, now_ms=self.clock.now_ms())
        return {"list": [{"orderId": str(o.order_id), "orderLinkId": o.client_order_id} for o in done],
                "success": "1"}

    def _optional_symbol(self, query: Query) -> str | None:
        kind = category_kind(query)
        return market_symbol(self.markets, kind, query["symbol"]) if query.get("symbol") else None

    def realtime(self, api_key: str, query: Query) -> Any:
        """``GET /v5/order/realtime``: open orders, newest first; an order named by ``orderId``
        or ``orderLinkId`` is answered whatever its status (Bybit's last-500-orders window)."""
        symbol = self._optional_symbol(query)
        if query.get("orderId") or query.get("orderLinkId"):
            found = self._named(api_key, symbol, query)
            rows = [found] if found is not None else []
        else:
            rows = self.engine.open_orders(api_key, symbol)[::-1]
        page, cursor = _window(rows, query, 20, 50)
        return {"category": query["category"], "list": [self.order_json(o) for o in page],
                "nextPageCursor": cursor}

    def history(self, api_key: str, query: Query) -> Any:
        """``GET /v5/order/history``: finished orders, newest first, ``startTime``/``endTime``
        on the creation time."""
        symbol = self._optional_symbol(query)
        start, end = int_arg(query, "startTime"), int_arg(query, "endTime")
        named = query.get("orderId") or query.get("orderLinkId")
        found = self._named(api_key, symbol, query) if named else None
        rows = [found] if found is not None else [] if named else self.engine.orders(api_key, symbol)
        rows = [o for o in rows[::-1] if not o.is_open
                and (start is None or o.submit_ms >= start) and (end is None or o.submit_ms <= end)]
        page, cursor = _window(rows, query, 20, 50)
        return {"category": query["category"], "list": [self.order_json(o) for o in page],
                "nextPageCursor": cursor}

    def executions(self, api_key: str, query: Query) -> Any:
        """``GET /v5/execution/list``: our fills (``execType=Trade``) and, for linear, funding
        settlements (``execType=Funding``), newest first; ``orderId``/``orderLinkId``,
        ``startTime``/``endTime`` on the execution time."""
        kind = category_kind(query)
        symbol = self._optional_symbol(query)
        start, end = int_arg(query, "startTime"), int_arg(query, "endTime")
        exec_type = query.get("execType", "")
        named = query.get("orderId") or query.get("orderLinkId")
        order = self._named(api_key, symbol, query) if named else None
        rows: list[tuple[int, int, dict[str, Any]]] = []
        if exec_type in ("", "Trade"):
            if order is not None:
                trades = self.engine.trades(api_key, order.symbol, order.order_id)
            else:
                trades = [] if named else self.engine.trades(api_key, symbol)
            rows += [(t.ts_ms, t.trade_id, execution_json(self.markets, self.engine, t))
                     for t in trades if t.api_key == api_key
                     and self.markets.specs[t.symbol].kind == kind]
        if exec_type in ("", "Funding") and kind == "linear" and not named:
            rows += [(f.ts_ms, 0, funding_json(self.markets, f, f"funding-{f.symbol}-{f.ts_ms}"))
                     for f in self.engine.perps.payments
                     if f.api_key == api_key and (symbol is None or f.symbol == symbol)]
        rows = sorted((r for r in rows if (start is None or r[0] >= start)
                       and (end is None or r[0] <= end)), key=lambda r: r[:2], reverse=True)
        page, cursor = _window([r[2] for r in rows], query, 50, 100)
        return {"category": query["category"], "list": page, "nextPageCursor": cursor}

    def positions(self, api_key: str, query: Query) -> Any:
        """``GET /v5/position/list?category=linear``: open positions (``symbol`` or
        ``settleCoin``), marked at the emulator's reference price."""
        category_kind(query, ("linear",))
        if not query.get("symbol") and not query.get("settleCoin"):
            raise BybitError(10001, "params error: symbol or settleCoin is required")
        symbol = self._optional_symbol(query)
        self.engine._account(api_key)
        now = self.clock.now_ms()
        rows = [position_json(self.markets, self.engine.perps, s, p, now)
                for s, p in self.engine.perps.of(api_key, query.get("settleCoin") or None)
                if symbol is None or s == symbol]
        return {"category": "linear", "list": rows, "nextPageCursor": ""}


__all__ = [
    "DEFAULT_RECV_WINDOW_MS",
    "MAX_AHEAD_MS",
    "BybitSignedApi",
    "bybit_error_for",
    "bybit_sign",
]
