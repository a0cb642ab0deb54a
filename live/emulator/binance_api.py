"""Binance's public market-data REST API, as far as ccxt's ``binance``/``binanceusdm`` use it.

Spot under ``/api/v3`` and USDⓈ-M futures under ``/fapi/v1``: ``ping``, ``time``,
``exchangeInfo``, ``klines`` and (futures) ``fundingRate``. ``/dapi/v1`` (COIN-M) answers an
empty market list so ``load_markets`` works unchanged. Parameter semantics follow Binance's
documentation: klines ``limit`` defaults to 500 and is capped at 1000 (spot) / 1500 (futures);
``startTime``/``endTime`` bound the bar open time inclusively; the bar in progress is included.
Errors use Binance's HTTP status and JSON body (``{"code": -1121, "msg": "Invalid symbol."}``).

Prices and quantities are sent as decimal strings, like Binance; they are the shortest strings
that parse back to the same float64, so a download is bit-for-bit the stored source.

The order half (signed endpoints, matching engine) goes in its own modules and adds its routes
beside these (see :meth:`BinanceMarketDataApi.routes`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from .clock import Clock
from .market import BINANCE_INTERVALS_MS, Bars, EmulatedMarkets, MarketKind, MarketSpec

logger = logging.getLogger(__name__)

_JSON = "application/json"

DATA_NOW_MS_KEY: Any = (
    web.RequestKey("coinrl_data_now_ms", int) if hasattr(web, "RequestKey")
    else "coinrl_data_now_ms"  # aiohttp < 3.12
)
"""Request key a ``stale`` fault sets: market data is answered as of this time (UTC ms)."""


def data_now_ms(request: web.Request, clock: Clock) -> int:
    """The time market data is cut at for ``request``: the clock, or a ``stale`` fault's time."""
    frozen = request.get(DATA_NOW_MS_KEY)
    return int(frozen) if frozen is not None else clock.now_ms()


@dataclass(frozen=True)
class Venue:
    """One Binance API family: URL prefix, market kind served and its klines limits."""

    prefix: str
    kind: MarketKind | None  # None: listed but empty (COIN-M)
    klines_max_limit: int
    klines_default_limit: int = 500
    funding_max_limit: int = 1000
    funding_default_limit: int = 100


SPOT = Venue("/api/v3", "spot", klines_max_limit=1000)
USDM = Venue("/fapi/v1", "linear", klines_max_limit=1500)
COINM = Venue("/dapi/v1", None, klines_max_limit=1500)

_RATE_LIMITS: dict[str, list[dict[str, Any]]] = {
    "spot": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
    ],
    "futures": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
    ],
}


class BinanceError(Exception):
    """An error answer in Binance's format: HTTP ``status`` with ``{"code": code, "msg": msg}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status

    def response(self) -> web.Response:
        """The aiohttp response for this error."""
        return web.Response(
            status=self.status,
            text=json.dumps({"code": self.code, "msg": self.msg}),
            content_type=_JSON,
        )


def invalid_symbol() -> BinanceError:
    """``-1121 Invalid symbol.``"""
    return BinanceError(-1121, "Invalid symbol.")


def mandatory(name: str) -> BinanceError:
    """``-1102`` for a missing mandatory parameter."""
    return BinanceError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def fmt_decimal(x: float) -> str:
    """A float as the shortest plain decimal string that parses back to the same float64.

    Example:
        >>> fmt_decimal(0.00001), fmt_decimal(43221.71), fmt_decimal(2.0)
        ('0.00001', '43221.71', '2.0')
    """
    s = repr(float(x))
    if "e" in s or "E" in s:
        s = np.format_float_positional(float(x), unique=True, trim="0")
    return s


def _fixed8(x: float) -> str:
    return f"{x:.8f}"


def int_param(request: web.Request, name: str) -> int | None:
    """An optional non-negative integer query parameter (Binance's -1100 when malformed)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise BinanceError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        )
    return int(raw)


def json_response(data: Any) -> web.Response:
    """Compact JSON answer, as Binance sends it."""
    return web.Response(text=json.dumps(data, separators=(",", ":")), content_type=_JSON)


class BinanceMarketDataApi:
    """Request handlers for Binance's public market data over one :class:`EmulatedMarkets`.

    Args:
        data: the listed markets, candles and funding.
        clock: the emulator's "now" (UTC ms); nothing after it is ever answered.
    """

    def __init__(self, data: EmulatedMarkets, clock: Clock) -> None:
        self.data = data
        self.clock = clock
        # Formatted kline rows of closed bars never change: cache them per (symbol, interval).
        self._row_cache: dict[tuple[str, int], dict[int, str]] = {}

    def clear_cache(self) -> None:
        """Forget the formatted candles (after a stored candle was revised)."""
        self._row_cache.clear()

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes of every venue (spot, USDⓈ-M, empty COIN-M)."""
        out: list[web.RouteDef] = []
        for venue in (SPOT, USDM, COINM):
            out += [
                web.get(f"{venue.prefix}/ping", self._ping),
                web.get(f"{venue.prefix}/time", self._time),
                web.get(f"{venue.prefix}/exchangeInfo", self._handler(self.exchange_info, venue)),
            ]
            if venue.kind is not None:
                out.append(web.get(f"{venue.prefix}/klines", self._handler(self.klines, venue)))
        out.append(web.get(f"{USDM.prefix}/fundingRate", self._handler(self.funding_rate, USDM)))
        return out

    @staticmethod
    def _handler(fn: Any, venue: Venue) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                return fn(request, venue)
            except BinanceError as e:
                return e.response()

        return handle

    async def _ping(self, request: web.Request) -> web.Response:
        return json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return json_response({"serverTime": self.clock.now_ms()})

    # -- exchangeInfo -----------------------------------------------------------------------
    def exchange_info(self, request: web.Request, venue: Venue) -> web.Response:
        """``GET exchangeInfo``: the venue's markets with their filters (``symbol(s)`` filter)."""
        specs = self.data.listed(venue.kind) if venue.kind is not None else []
        wanted: list[str] | None = None
        if request.query.get("symbol"):
            wanted = [request.query["symbol"]]
        elif request.query.get("symbols"):
            try:
                wanted = [str(s) for s in json.loads(request.query["symbols"])]
            except (ValueError, TypeError) as e:
                raise BinanceError(-1100, "Illegal characters found in parameter 'symbols'.") from e
        if wanted is not None:
            by_id = {m.market_id: m for m in specs}
            if any(w not in by_id for w in wanted):
                raise invalid_symbol()
            specs = [by_id[w] for w in wanted]
        now = self.clock.now_ms()
        body: dict[str, Any] = {
            "timezone": "UTC",
            "serverTime": now,
            "rateLimits": _RATE_LIMITS["spot" if venue is SPOT else "futures"],
            "exchangeFilters": [],
        }
        if venue is SPOT:
            body["symbols"] = [_spot_symbol(m) for m in specs]
        else:
            body["assets"] = sorted(
                ({"asset": m.quote, "marginAvailable": True, "autoAssetExchange": "0"}
                 for m in {m.quote: m for m in specs}.values()),
                key=lambda a: str(a["asset"]),
            )
            body["symbols"] = [_usdm_symbol(m, self.data.series[m.symbol].ts_ms[0]) for m in specs]
        return json_response(body)

    # -- klines -----------------------------------------------------------------------------
    def _symbol(self, request: web.Request, venue: Venue) -> str:
        market_id = request.query.get("symbol")
        if not market_id:
            raise mandatory("symbol")
        assert venue.kind is not None  # noqa: S101 - routes only register klines for kinds
        symbol = self.data.symbol_for(venue.kind, market_id.upper())
        if symbol is None:
            raise invalid_symbol()
        return symbol

    def klines(self, request: web.Request, venue: Venue) -> web.Response:
        """``GET klines``: Binance's 12-field rows, oldest first, bar in progress included."""
        symbol = self._symbol(request, venue)
        interval = request.query.get("interval")
        if not interval:
            raise mandatory("interval")
        interval_ms = BINANCE_INTERVALS_MS.get(interval)
        series = self.data.series[symbol]
        if interval_ms is None or not series.supports(interval_ms):
            raise BinanceError(-1120, "Invalid interval.")
        limit = int_param(request, "limit")
        if limit is None:
            limit = venue.klines_default_limit
        if limit <= 0:
            raise BinanceError(-1130, "Invalid data sent for a parameter.")
        limit = min(limit, venue.klines_max_limit)
        start_ms = int_param(request, "startTime")
        end_ms = int_param(request, "endTime")
        if start_ms is not None and end_ms is not None and start_ms > end_ms:
            return json_response([])
        bars = series.bars(
            interval_ms, data_now_ms(request, self.clock), start_ms=start_ms, end_ms=end_ms,
            limit=limit,
        )
        return web.Response(text=self._klines_body(symbol, bars), content_type=_JSON)

    def _klines_body(self, symbol: str, bars: Bars) -> str:
        n = len(bars)
        if n == 0:
            return "[]"
        cache = self._row_cache.setdefault((symbol, bars.interval_ms), {})
        rows: list[str] = []
        n_cached = n - 1 if bars.in_progress else n
        for i in range(n):
            ts = int(bars.ts_ms[i])
            row = cache.get(ts) if i < n_cached else None
            if row is None:
                row = _kline_row(
                    ts, bars.interval_ms, float(bars.open[i]), float(bars.high[i]),
                    float(bars.low[i]), float(bars.close[i]), float(bars.volume[i]),
                )
                if i < n_cached:
                    cache[ts] = row
            rows.append(row)
        return "[" + ",".join(rows) + "]"

    # -- fundingRate ------------------------------------------------------------------------
    def funding_rate(self, request: web.Request, venue: Venue) -> web.Response:
        """``GET /fapi/v1/fundingRate``: funding events known by now, oldest first."""
        symbol = self._symbol(request, venue)
        limit = int_param(request, "limit")
        if limit is None:
            limit = venue.funding_default_limit
        if limit <= 0:
            raise BinanceError(-1130, "Invalid data sent for a parameter.")
        limit = min(limit, venue.funding_max_limit)
        series = self.data.funding.get(symbol)
        if series is None:
            return json_response([])
        ts, rate = series.window(
            data_now_ms(request, self.clock),
            start_ms=int_param(request, "startTime"),
            end_ms=int_param(request, "endTime"),
            limit=limit,
        )
        candles = self.data.series[symbol]
        spec = self.data.specs[symbol]
        out = []
        for t, r in zip(ts.tolist(), rate.tolist(), strict=True):
            mark = candles.price_at(t)
            out.append({
                "symbol": spec.market_id,
                "fundingTime": t,
                "fundingRate": fmt_decimal(r),
                "markPrice": fmt_decimal(mark) if mark is not None else "",
            })
        return json_response(out)


def _kline_row(ts: int, interval_ms: int, o: float, h: float, lo: float, c: float, v: float) -> str:
    typical = (o + h + lo + c) / 4.0
    quote_vol = v * typical
    return (
        f'[{ts},"{fmt_decimal(o)}","{fmt_decimal(h)}","{fmt_decimal(lo)}","{fmt_decimal(c)}",'
        f'"{fmt_decimal(v)}",{ts + interval_ms - 1},"{_fixed8(quote_vol)}",0,'
        f'"{_fixed8(v / 2)}","{_fixed8(quote_vol / 2)}","0"]'
    )


def _filters_common(m: MarketSpec) -> list[dict[str, Any]]:
    return [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": _fixed8(m.min_price),
            "maxPrice": _fixed8(m.max_price),
            "tickSize": _fixed8(m.tick_size),
        },
        {
            "filterType": "LOT_SIZE",
            "minQty": _fixed8(m.min_qty),
            "maxQty": _fixed8(m.max_qty),
            "stepSize": _fixed8(m.step_size),
        },
        {
            "filterType": "MARKET_LOT_SIZE",
            "minQty": _fixed8(0.0),
            "maxQty": _fixed8(m.max_qty / 10),
            "stepSize": _fixed8(0.0),
        },
    ]


def _spot_symbol(m: MarketSpec) -> dict[str, Any]:
    filters = _filters_common(m) + [
        {"filterType": "ICEBERG_PARTS", "limit": 10},
        {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10,
         "maxTrailingAboveDelta": 2000, "minTrailingBelowDelta": 10,
         "maxTrailingBelowDelta": 2000},
        {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5",
         "bidMultiplierDown": "0.2", "askMultiplierUp": "5", "askMultiplierDown": "0.2",
         "avgPriceMins": 5},
        {"filterType": "NOTIONAL", "minNotional": _fixed8(m.min_notional),
         "applyMinToMarket": True, "maxNotional": "9000000.00000000",
         "applyMaxToMarket": False, "avgPriceMins": 5},
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
    ]
    return {
        "symbol": m.market_id,
        "status": "TRADING",
        "baseAsset": m.base,
        "baseAssetPrecision": 8,
        "quoteAsset": m.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT",
                       "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": filters,
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _usdm_symbol(m: MarketSpec, onboard_ms: Any) -> dict[str, Any]:
    filters = _filters_common(m) + [
        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
        {"filterType": "MIN_NOTIONAL", "notional": fmt_decimal(m.min_notional)},
        {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
         "multiplierDecimal": "4"},
    ]
    return {
        "symbol": m.market_id,
        "pair": m.market_id,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": int(onboard_ms),
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": m.base,
        "quoteAsset": m.quote,
        "marginAsset": m.quote,
        "pricePrecision": m.price_decimals,
        "quantityPrecision": m.qty_decimals,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": filters,
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                       "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


__all__ = [
    "COINM",
    "SPOT",
    "USDM",
    "BinanceError",
    "BinanceMarketDataApi",
    "DATA_NOW_MS_KEY",
    "Venue",
    "data_now_ms",
    "fmt_decimal",
    "int_param",
    "invalid_symbol",
    "json_response",
    "mandatory",
]
