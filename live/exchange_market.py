"""What the exchange says about its markets, its clock and our account (no orders here).

:class:`ExchangeMarketData` adds to the call plumbing (:class:`~coinrl.live.exchange_calls.ExchangeCalls`)
the listed markets (an unknown symbol is named with close matches), the exchange's clock and
the skew from ours, balances, the market's rounding and order limits (checked before an order
is sent), and the latest CLOSED candles. :class:`~coinrl.live.exchange.ExchangeClient` adds the
order calls on top.
"""

from __future__ import annotations

import difflib
import logging
import math
import time
from typing import Any

import ccxt
import numpy as np
import pandas as pd

from coinrl.envs.domain import OrderType
from coinrl.pipeline.errors import BadSymbol, ConfigError, DataError, InvalidOrder
from coinrl.pipeline.timeframes import timeframe_to_ms

from .exchange_calls import BOUNDARY_LOGGER, ExchangeCalls, _fmt
from .exchange_records import Balance

logger = logging.getLogger(BOUNDARY_LOGGER)


class ExchangeMarketData(ExchangeCalls):
    """Markets, clock, balances, order rules and closed candles of one connected exchange."""

    # -- markets and time -------------------------------------------------------------------
    @property
    def symbols(self) -> list[str]:
        """Unified symbols the exchange lists."""
        return list(self._client.symbols or [])

    def market(self, symbol: str) -> dict[str, Any]:
        """ccxt's market structure for ``symbol`` (precision, limits, ids).

        Raises:
            BadSymbol: not listed, with the closest listed symbols.
        """
        markets = self._client.markets or {}
        if symbol not in markets:
            close = difflib.get_close_matches(symbol, list(markets), n=5, cutoff=0.5)
            raise BadSymbol(
                f"{self.exchange_id} does not list {symbol!r}; close matches: {close} "
                f"({len(markets)} markets listed; spot symbols look like BTC/USDT, "
                "perpetuals like BTC/USDT:USDT)"
            )
        market: dict[str, Any] = markets[symbol]
        return market

    def server_time_ms(self) -> int:
        """The exchange's clock, UTC epoch ms (the local clock if the exchange has no time call)."""
        if not self._client.has.get("fetchTime"):
            return time.time_ns() // 1_000_000
        ms = int(self._call(self._client.fetch_time, "fetch_time"))
        self._last_server_ms = (ms, time.monotonic())
        return ms

    def measure_clock_skew_ms(self) -> float:
        """Exchange time minus local time at the middle of the round trip, ms."""
        t0 = time.time_ns() / 1e6
        server = self.server_time_ms()
        t1 = time.time_ns() / 1e6
        self.clock_skew_ms = server - (t0 + t1) / 2.0
        return self.clock_skew_ms

    # -- account ----------------------------------------------------------------------------
    def balances(self) -> dict[str, Balance]:
        """Balances with anything free or locked, by asset (asset units)."""
        raw = self._call(self._client.fetch_balance, "fetch_balance")
        out: dict[str, Balance] = {}
        for asset, total in (raw.get("total") or {}).items():
            free = float((raw.get("free") or {}).get(asset) or 0.0)
            used = float((raw.get("used") or {}).get(asset) or 0.0)
            tot = float(total or 0.0)
            if free or used or tot:
                out[asset] = Balance(asset, free, used, tot)
        return out

    # -- order rules ------------------------------------------------------------------------
    def round_qty(self, symbol: str, qty_base: float) -> float:
        """``qty_base`` rounded DOWN to the market's lot step (0.0 when below one step)."""
        self.market(symbol)
        try:
            return float(self._client.amount_to_precision(symbol, qty_base))
        except ccxt.InvalidOrder:  # below one step
            return 0.0

    def round_price(self, symbol: str, price_quote: float) -> float:
        """``price_quote`` rounded to the nearest tick."""
        self.market(symbol)
        return float(self._client.price_to_precision(symbol, price_quote))

    def _check_order(
        self, symbol: str, order_type: OrderType, qty_asked: float, qty: float,
        price: float | None, ref_price: float | None,
    ) -> None:
        market = self.market(symbol)
        base, quote = market.get("base"), market.get("quote")
        limits = market.get("limits") or {}
        step = (market.get("precision") or {}).get("amount")
        amount_min = (limits.get("amount") or {}).get("min") or 0.0
        amount_max = (limits.get("amount") or {}).get("max")
        if order_type is OrderType.MARKET and (limits.get("market") or {}).get("max"):
            amount_max = min(amount_max or math.inf, limits["market"]["max"])
        if qty <= 0.0 or qty < amount_min:
            raise InvalidOrder(
                f"{symbol}: quantity {_fmt(qty_asked)} {base} rounds down to {_fmt(qty)} at the lot "
                f"step {step}, below the minimum order quantity {_fmt(amount_min)} {base}; "
                f"send at least {_fmt(max(amount_min, step or 0.0))} {base}"
            )
        if amount_max and qty > amount_max:
            raise InvalidOrder(
                f"{symbol}: quantity {_fmt(qty)} {base} is above the maximum {_fmt(amount_max)} "
                f"{base} for a {order_type.value} order; split it"
            )
        if price is not None:
            pmin = (limits.get("price") or {}).get("min")
            pmax = (limits.get("price") or {}).get("max")
            if (pmin and price < pmin) or (pmax and price > pmax) or price <= 0.0:
                raise InvalidOrder(
                    f"{symbol}: limit price {_fmt(price)} {quote} is outside the allowed range "
                    f"[{pmin}, {pmax}] {quote}"
                )
        px = price if price is not None else ref_price
        cost_min = (limits.get("cost") or {}).get("min")
        if px is not None and cost_min and qty * px < cost_min:
            need = cost_min / px
            if step:
                need = math.ceil(need / step - 1e-9) * step
            raise InvalidOrder(
                f"{symbol}: order notional {_fmt(qty)} {base} x {_fmt(px)} {quote} = "
                f"{_fmt(qty * px)} {quote} is below the exchange minimum {_fmt(cost_min)} {quote}; "
                f"send at least {_fmt(need)} {base}"
            )


    # -- candles ----------------------------------------------------------------------------
    def fetch_closed_candles(
        self, symbol: str, timeframe: str = "1h", limit: int = 100, *, max_stale_bars: int | None = 1,
    ) -> pd.DataFrame:
        """The latest ``limit`` CLOSED candles (the bar in progress is never returned).

        A bar counts as closed when its close time (open + timeframe) is at or before the
        exchange's clock read BEFORE the candles are fetched: a bar boundary that passes while
        the candles travel cannot make the bar that was in progress when they were cut (on
        Binance: open = high = low = close, volume 0 right after the boundary) look closed.

        Args:
            symbol: unified symbol.
            timeframe: ccxt timeframe (``"1h"``).
            limit: how many closed bars, at most.
            max_stale_bars: how many bars the newest closed candle may lag the exchange clock
                by (a feed that stopped advancing); None = do not check.

        Returns:
            ``ts_ms`` (int64 UTC ms of bar open) and float64 ``open, high, low, close, volume``,
            oldest first; ``attrs`` hold ``symbol``, ``timeframe`` and ``server_time_ms``.

        Raises:
            DataError: no closed candle, or the feed is stale by more than ``max_stale_bars``.
        """
        self.market(symbol)
        tf_ms = timeframe_to_ms(timeframe)
        if limit <= 0:
            raise ConfigError(f"limit must be > 0 closed candles, got {limit}")
        now_ms = self.server_time_ms()  # before the fetch: the candles are at least this recent
        rows = self._call(
            lambda: self._client.fetch_ohlcv(symbol, timeframe, limit=limit + 1),
            f"fetch_ohlcv {symbol} {timeframe} limit={limit + 1}",
        )
        closed = [r for r in rows if int(r[0]) + tf_ms <= now_ms][-limit:]
        if not closed:
            raise DataError(
                f"{self.exchange_id} returned no closed {timeframe} candle of {symbol} at "
                f"server time {now_ms}; the market may be new or the feed is down"
            )
        arr = np.asarray(closed, dtype=np.float64)
        frame = pd.DataFrame({
            "ts_ms": np.asarray([int(r[0]) for r in closed], dtype=np.int64),
            "open": arr[:, 1], "high": arr[:, 2], "low": arr[:, 3], "close": arr[:, 4],
            "volume": arr[:, 5],
        })
        frame.attrs.update(symbol=symbol, timeframe=timeframe, server_time_ms=now_ms)
        last_close_ms = int(frame["ts_ms"].iloc[-1]) + tf_ms
        lag_bars = (now_ms - last_close_ms) // tf_ms
        if max_stale_bars is not None and lag_bars > max_stale_bars:
            raise DataError(
                f"stale candles from {self.exchange_id}: the newest closed {timeframe} bar of "
                f"{symbol} closed at ts_ms={last_close_ms}, {lag_bars} bars before the exchange's "
                f"time {now_ms}; the feed stopped advancing: do not trade on it, retry later"
            )
        logger.debug("closed candles symbol=%s timeframe=%s rows=%d last_ts_ms=%d", symbol,
                     timeframe, len(frame), int(frame["ts_ms"].iloc[-1]))
        return frame


__all__ = ["ExchangeMarketData"]
