"""Bybit's v5 REST API (public half): the emulator's second exchange dialect.

Why Bybit v5: it is where many users trade USDT-settled linear perpetuals beside spot, and its
v5 API serves both from ONE wire format (``category=spot|linear`` on the same paths), which is
the opposite of Binance's split (``/api/v3`` spot, ``/fapi/v1`` futures): a good test that the
broker is exchange-agnostic. The same :class:`~.market.EmulatedMarkets`, :class:`~.clock.Clock`,
:class:`~.faults.FaultPlan` and :class:`~.matching.MatchingEngine` serve both dialects; only the
wire format differs (one matching engine, two dialects).

Endpoints, as far as the real ccxt ``bybit`` client (4.5) uses them:

* ``GET /v5/market/time``: ``{"timeSecond", "timeNano"}`` and the envelope's ``time``.
* ``GET /v5/market/instruments-info?category=spot|linear|inverse|option``: the listed markets
  (spot: ``lotSizeFilter.basePrecision/minOrderQty/minOrderAmt``; linear:
  ``contractType=LinearPerpetual``, ``qtyStep``, ``minNotionalValue``, ``fundingInterval``).
  Inverse and option categories answer an empty list, so ``load_markets`` works unchanged.
* ``GET /v5/market/kline``: rows ``[start, open, high, low, close, volume, turnover]`` as
  strings, NEWEST FIRST (Bybit's order; ccxt sorts them); ``limit`` default 200, at most 1000;
  ``start``/``end`` bound the bar open time inclusively; the bar in progress is included.
* ``GET /v5/market/funding/history``: ``{symbol, fundingRate, fundingRateTimestamp}`` newest
  first; ``limit`` default and max 200.

Every answer has Bybit's envelope ``{"retCode": 0, "retMsg": "OK", "result": ...,
"retExtInfo": {}, "time": ms}``; errors come with HTTP 200 and a non-zero ``retCode`` (ccxt maps
the code to its typed errors: ``10001`` BadRequest, ``10004`` AuthenticationError, ``110072``
InvalidOrder for a duplicate ``orderLinkId``, ...). The signed half is :mod:`.bybit_signed`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .binance_api import data_now_ms, fmt_decimal
from .clock import Clock
from .market import BINANCE_INTERVALS_MS, EmulatedMarkets, MarketKind, MarketSpec

_JSON = "application/json"
PREFIX = "/v5"

BYBIT_INTERVALS_MS: dict[str, int] = {
    str(k): BINANCE_INTERVALS_MS[v] for k, v in {
        1: "1m", 3: "3m", 5: "5m", 15: "15m", 30: "30m", 60: "1h", 120: "2h", 240: "4h",
        360: "6h", 720: "12h",
    }.items()
} | {"D": BINANCE_INTERVALS_MS["1d"], "W": BINANCE_INTERVALS_MS["1w"]}
"""Bybit's kline ``interval`` values -> ms (``M``, the calendar month, is not emulated)."""

FUNDING_INTERVAL_MIN = 480
"""The ``fundingInterval`` (minutes) listed for every perpetual: Bybit's usual 8 h."""

Query = dict[str, str]


class BybitError(Exception):
    """An error answer in Bybit's format: HTTP ``status`` (200 as Bybit) with ``retCode``/``retMsg``."""

    def __init__(self, ret_code: int, ret_msg: str, status: int = 200) -> None:
        super().__init__(ret_msg)
        self.ret_code = ret_code
        self.ret_msg = ret_msg
        self.status = status

    def response(self, now_ms: int) -> web.Response:
        """The aiohttp response for this error."""
        body = {"retCode": self.ret_code, "retMsg": self.ret_msg, "result": {},
                "retExtInfo": {}, "time": now_ms}
        return web.Response(status=self.status, text=json.dumps(body, separators=(",", ":")),
                            content_type=_JSON)


def envelope(result: Any, now_ms: int) -> web.Response:
    """A successful answer: ``result`` in Bybit's envelope."""
    body = {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": now_ms}
    return web.Response(text=json.dumps(body, separators=(",", ":")), content_type=_JSON)


def param_error(name: str) -> BybitError:
    """``10001`` for a missing or malformed parameter (Bybit's "params error")."""
    return BybitError(10001, f"params error: {name} invalid")


def int_arg(query: Query, name: str) -> int | None:
    """An optional non-negative integer parameter (10001 when malformed)."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise param_error(name)
    return int(raw)


def limit_arg(query: Query, default: int, maximum: int) -> int:
    """``limit``: ``default`` when absent, 10001 when below 1; more than ``maximum`` is answered
    with ``maximum`` rows (as Binance does; the live data layer asks for one bar more than the
    history it keeps)."""
    limit = int_arg(query, "limit")
    if limit is None:
        return default
    if limit < 1:
        raise BybitError(10001, f"params error: limit must be between 1 and {maximum}")
    return min(limit, maximum)


def category_kind(query: Query, allowed: tuple[str, ...] = ("spot", "linear")) -> MarketKind:
    """The market kind of ``category`` (10001 when missing or not emulated)."""
    category = query.get("category", "")
    if category not in allowed:
        raise BybitError(10001, f"params error: category [{category}] not supported")
    return "spot" if category == "spot" else "linear"


def market_symbol(markets: EmulatedMarkets, kind: MarketKind, market_id: str | None) -> str:
    """Unified symbol of ``market_id`` in ``kind`` (10001 "Not supported symbols" otherwise)."""
    if not market_id:
        raise param_error("symbol")
    symbol = markets.symbol_for(kind, market_id.upper())
    if symbol is None:
        raise BybitError(10001, "Not supported symbols")
    return symbol


def _s(x: float) -> str:
    return fmt_decimal(x)


def instrument_json(m: MarketSpec, launch_ms: int) -> dict[str, Any]:
    """One row of ``/v5/market/instruments-info`` for a spot or linear market."""
    if m.kind == "spot":
        return {
            "symbol": m.market_id, "baseCoin": m.base, "quoteCoin": m.quote, "innovation": "0",
            "status": "Trading", "marginTrading": "none", "stTag": "0",
            "lotSizeFilter": {
                "basePrecision": _s(m.step_size), "quotePrecision": "0.00000001",
                "minOrderQty": _s(m.min_qty), "maxOrderQty": _s(m.max_qty),
                "minOrderAmt": _s(m.min_notional), "maxOrderAmt": "9000000",
            },
            "priceFilter": {"tickSize": _s(m.tick_size)},
            "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.05"},
        }
    return {
        "symbol": m.market_id, "contractType": "LinearPerpetual", "status": "Trading",
        "baseCoin": m.base, "quoteCoin": m.quote, "settleCoin": m.quote,
        "launchTime": str(launch_ms), "deliveryTime": "0", "deliveryFeeRate": "",
        "priceScale": str(m.price_decimals),
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": _s(m.min_price), "maxPrice": _s(m.max_price),
                        "tickSize": _s(m.tick_size)},
        "lotSizeFilter": {
            "maxOrderQty": _s(m.max_qty), "minOrderQty": _s(m.min_qty),
            "qtyStep": _s(m.step_size), "postOnlyMaxOrderQty": _s(m.max_qty),
            "maxMktOrderQty": _s(m.max_qty / 10), "minNotionalValue": _s(m.min_notional),
        },
        "unifiedMarginTrade": True, "fundingInterval": FUNDING_INTERVAL_MIN,
        "settlementCurrency": m.quote, "copyTrading": "none", "upperFundingRate": "0.00375",
        "lowerFundingRate": "-0.00375", "isPreListing": False, "preListingInfo": None,
    }


class BybitMarketDataApi:
    """Request handlers of Bybit's v5 public market data over one :class:`EmulatedMarkets`.

    Args:
        data: the listed markets, candles and funding.
        clock: the emulator's "now" (UTC ms); nothing after it is ever answered.
    """

    def __init__(self, data: EmulatedMarkets, clock: Clock) -> None:
        self.data = data
        self.clock = clock

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes of the public endpoints."""
        h = self._handler
        return [
            web.get(f"{PREFIX}/market/time", h(self.time)),
            web.get(f"{PREFIX}/market/instruments-info", h(self.instruments_info)),
            web.get(f"{PREFIX}/market/kline", h(self.kline)),
            web.get(f"{PREFIX}/market/funding/history", h(self.funding_history)),
        ]

    def _handler(
        self, fn: Callable[[web.Request, Query], Any]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            now = self.clock.now_ms()
            try:
                return envelope(fn(request, dict(request.query)), now)
            except BybitError as e:
                return e.response(now)

        return handle

    def time(self, request: web.Request, query: Query) -> Any:
        """``GET /v5/market/time``."""
        now = self.clock.now_ms()
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    def instruments_info(self, request: web.Request, query: Query) -> Any:
        """``GET /v5/market/instruments-info``: spot and linear markets (others: empty)."""
        category = query.get("category", "")
        if category not in ("spot", "linear", "inverse", "option"):
            raise BybitError(10001, f"params error: category [{category}] not supported")
        if category in ("inverse", "option") or query.get("status", "Trading") != "Trading":
            return {"category": category, "list": [], "nextPageCursor": ""}
        specs = self.data.listed(category_kind(query))
        if query.get("symbol"):
            specs = [m for m in specs if m.market_id == query["symbol"].upper()]
        rows = [instrument_json(m, int(self.data.series[m.symbol].ts_ms[0])) for m in specs]
        return {"category": category, "list": rows, "nextPageCursor": ""}

    def kline(self, request: web.Request, query: Query) -> Any:
        """``GET /v5/market/kline``: newest first, the bar in progress included."""
        kind = category_kind(query)
        symbol = market_symbol(self.data, kind, query.get("symbol"))
        interval_ms = BYBIT_INTERVALS_MS.get(query.get("interval", ""))
        series = self.data.series[symbol]
        if interval_ms is None or not series.supports(interval_ms):
            raise BybitError(10001, "params error: interval invalid")
        limit = limit_arg(query, 200, 1000)
        start, end = int_arg(query, "start"), int_arg(query, "end")
        rows: list[list[str]] = []
        if start is None or end is None or start <= end:
            bars = series.bars(interval_ms, data_now_ms(request, self.clock), start_ms=start,
                               end_ms=end, limit=limit)
            for i in range(len(bars) - 1, -1, -1):
                o, h, lo, c, v = (float(bars.open[i]), float(bars.high[i]), float(bars.low[i]),
                                  float(bars.close[i]), float(bars.volume[i]))
                rows.append([str(int(bars.ts_ms[i])), _s(o), _s(h), _s(lo), _s(c), _s(v),
                             _s(v * (o + h + lo + c) / 4.0)])
        return {"category": query["category"], "symbol": self.data.specs[symbol].market_id,
                "list": rows}

    def funding_history(self, request: web.Request, query: Query) -> Any:
        """``GET /v5/market/funding/history``: funding events known by now, newest first."""
        symbol = market_symbol(self.data, category_kind(query, ("linear",)), query.get("symbol"))
        limit = limit_arg(query, 200, 200)
        start, end = int_arg(query, "startTime"), int_arg(query, "endTime")
        if start is not None and end is None:
            raise BybitError(10001, "params error: endTime is required when startTime is sent")
        series = self.data.funding.get(symbol)
        rows: list[dict[str, str]] = []
        if series is not None:
            ts, rate = series.window(data_now_ms(request, self.clock), start_ms=start,
                                     end_ms=end, limit=limit)
            market_id = self.data.specs[symbol].market_id
            rows = [{"symbol": market_id, "fundingRate": _s(r), "fundingRateTimestamp": str(t)}
                    for t, r in zip(ts.tolist()[::-1], rate.tolist()[::-1], strict=True)]
        return {"category": "linear", "list": rows}


__all__ = [
    "BYBIT_INTERVALS_MS",
    "FUNDING_INTERVAL_MIN",
    "PREFIX",
    "BybitError",
    "BybitMarketDataApi",
    "category_kind",
    "envelope",
    "instrument_json",
    "int_arg",
    "limit_arg",
    "market_symbol",
    "param_error",
]
