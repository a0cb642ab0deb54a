"""The emulator's market data: symbols, their trading rules, candles and funding, cut at "now".

Nothing here knows about HTTP or Binance's JSON; :mod:`.binance_api` formats what this module
answers. The order half (matching engine, balances) will reuse :class:`MarketSpec` for the
exchange's filters and :meth:`CandleSeries.price_at` for fills.

Honesty rule: a query at time ``now_ms`` only sees bars that opened at or before ``now_ms``.
The bar containing ``now_ms`` is served *in progress*: its open is known, nothing else is, so it
is reported with open = high = low = close = its open and zero volume. A coarser interval built
from finer stored bars (4h from 1h) uses the closed finer bars plus that in-progress one, so the
final close of any bar is never revealed before the bar is over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from coinrl.pipeline.errors import ConfigError, DataError

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

MarketKind = Literal["spot", "linear"]

_OHLCV = ("ts_ms", "open", "high", "low", "close", "volume")
_WEEK_MS = 7 * 86_400_000
_WEEK_OFFSET_MS = 4 * 86_400_000  # 1970-01-01 was a Thursday; Binance weeks open on Monday

#: Binance kline intervals the emulator serves, in ms (1M has no fixed length: not served).
BINANCE_INTERVALS_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": _WEEK_MS,
}

#: Minimum order notional by quote currency (Binance's usual NOTIONAL filter values).
_MIN_NOTIONAL_BY_QUOTE = {
    "USDT": 5.0, "USDC": 5.0, "FDUSD": 5.0, "BUSD": 5.0, "USD": 5.0, "TUSD": 5.0, "EUR": 5.0,
    "BTC": 0.0001, "ETH": 0.001, "BNB": 0.01,
}


@dataclass(frozen=True)
class MarketSpec:
    """One listed market and its trading rules (Binance's exchangeInfo filters).

    Attributes:
        symbol: ccxt unified symbol: ``"BTC/USDT"`` (spot) or ``"BTC/USDT:USDT"`` (USDⓈ-M perp).
        kind: ``"spot"`` (served under /api/v3) or ``"linear"`` (perpetual, under /fapi/v1).
        base, quote: currency codes.
        tick_size: price increment, quote units (PRICE_FILTER tickSize).
        step_size: quantity increment, base units (LOT_SIZE stepSize).
        min_qty, max_qty: order quantity bounds, base units (LOT_SIZE).
        min_notional: minimum order value, quote units (NOTIONAL / MIN_NOTIONAL).
        min_price, max_price: PRICE_FILTER bounds, quote units.
    """

    symbol: str
    kind: MarketKind
    base: str
    quote: str
    tick_size: float
    step_size: float
    min_qty: float
    max_qty: float
    min_notional: float
    min_price: float
    max_price: float

    @property
    def market_id(self) -> str:
        """Binance's id of the market (``BTCUSDT``)."""
        return f"{self.base}{self.quote}"

    @property
    def settle(self) -> str | None:
        """Settlement currency of a perpetual (the quote for linear), None for spot."""
        return self.quote if self.kind == "linear" else None

    @property
    def price_decimals(self) -> int:
        """Digits after the point of ``tick_size`` (pricePrecision)."""
        return _decimals(self.tick_size)

    @property
    def qty_decimals(self) -> int:
        """Digits after the point of ``step_size`` (quantityPrecision)."""
        return _decimals(self.step_size)


def _decimals(step: float) -> int:
    return max(0, -int(math.floor(math.log10(step) + 1e-9)))


def parse_symbol(symbol: str) -> tuple[str, str, MarketKind]:
    """Split a ccxt unified symbol into ``(base, quote, kind)``.

    ``"BTC/USDT"`` is spot; ``"BTC/USDT:USDT"`` is a USDⓈ-M (linear) perpetual. Inverse
    (``"BTC/USD:BTC"``) and dated futures are not emulated.
    """
    main, _, settle = symbol.partition(":")
    base, sep, quote = main.partition("/")
    if not sep or not base or not quote or not base.isalnum() or not quote.isalnum():
        raise ConfigError(
            f"emulator symbol {symbol!r} is not a ccxt unified symbol; "
            "use BASE/QUOTE for spot (BTC/USDT) or BASE/QUOTE:QUOTE for a linear perpetual"
        )
    if not settle:
        return base, quote, "spot"
    if settle != quote:
        raise ConfigError(
            f"emulator symbol {symbol!r}: only linear perpetuals (settled in the quote, "
            f"{base}/{quote}:{quote}) are emulated, not inverse or dated futures"
        )
    return base, quote, "linear"


def default_market_spec(symbol: str, reference_price: float) -> MarketSpec:
    """Realistic Binance-like filters for ``symbol`` trading around ``reference_price``.

    The tick is about a millionth of the price (BTC/USDT at 30,000 -> 0.01); the step is the
    power of ten whose value at that price is a fiftieth of the minimum notional
    (BTC/USDT -> 0.00001 BTC, ETH/BTC at 0.05 -> 0.0001 ETH), as on Binance.
    """
    base, quote, kind = parse_symbol(symbol)
    if not (reference_price > 0 and math.isfinite(reference_price)):
        raise DataError(f"{symbol}: reference price {reference_price} must be a positive number")
    min_notional = _MIN_NOTIONAL_BY_QUOTE.get(quote, 5.0)
    tick = 10.0 ** max(-8, math.floor(math.log10(reference_price)) - 6)
    step = 10.0 ** max(-8, math.ceil(math.log10(min_notional / 50.0 / reference_price)))
    return MarketSpec(
        symbol=symbol,
        kind=kind,
        base=base,
        quote=quote,
        tick_size=tick,
        step_size=step,
        min_qty=step,
        max_qty=max(9000.0, 9e6 * step),
        min_notional=min_notional,
        min_price=tick,
        max_price=float(10 ** (math.floor(math.log10(reference_price)) + 3)),
    )


def interval_bucket_ms(ts_ms: I64, interval_ms: int) -> I64:
    """Open time of the ``interval_ms`` bar containing each ``ts_ms`` (UTC, Binance alignment)."""
    if interval_ms == _WEEK_MS:
        return ((ts_ms - _WEEK_OFFSET_MS) // _WEEK_MS) * _WEEK_MS + _WEEK_OFFSET_MS
    return (ts_ms // interval_ms) * interval_ms


@dataclass(frozen=True)
class Bars:
    """Bars answered for one query (all arrays of equal length, ascending open time)."""

    ts_ms: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    interval_ms: int
    in_progress: bool
    """True when the last bar contains "now" (its values are partial, volume so far)."""

    def __len__(self) -> int:
        return len(self.ts_ms)


@dataclass(frozen=True)
class _Agg:
    ts_ms: I64  # bucket open times
    first: npt.NDArray[np.intp]  # index of the first base bar of each bucket
    last: npt.NDArray[np.intp]  # index one past the last base bar of each bucket
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64


class CandleSeries:
    """One symbol's stored bars at its base timeframe, queryable at any coarser interval.

    Args:
        frame: ``ts_ms`` (int64 UTC ms of bar open, strictly ascending) and float
            ``open, high, low, close, volume`` (volume in base units). No NaNs.
        timeframe_ms: base bar length in ms; inferred from ``frame.attrs["timeframe"]`` or the
            smallest gap between bars when omitted.
        name: for error messages.
    """

    def __init__(self, frame: pd.DataFrame, timeframe_ms: int | None = None, name: str = "") -> None:
        missing = [c for c in _OHLCV if c not in frame.columns]
        if missing:
            raise DataError(
                f"emulator candles {name!r} miss columns {missing}; expected {list(_OHLCV)}"
            )
        if len(frame) == 0:
            raise DataError(f"emulator candles {name!r} are empty; give at least one bar")
        self.name = name
        self.ts_ms: I64 = frame["ts_ms"].to_numpy(dtype=np.int64).copy()
        cols = {c: frame[c].to_numpy(dtype=np.float64).copy() for c in _OHLCV[1:]}
        self.open, self.high, self.low = cols["open"], cols["high"], cols["low"]
        self.close, self.volume = cols["close"], cols["volume"]
        d = np.diff(self.ts_ms)
        if len(d) and not bool(np.all(d > 0)):
            raise DataError(
                f"emulator candles {name!r}: ts_ms is not strictly ascending; "
                "clean the frame first (coinrl.pipeline preprocess_data)"
            )
        for c, arr in cols.items():
            if not bool(np.all(np.isfinite(arr))):
                raise DataError(
                    f"emulator candles {name!r}: column {c} has {int((~np.isfinite(arr)).sum())} "
                    "NaN/inf values; clean the frame first"
                )
        if timeframe_ms is None:
            tf = frame.attrs.get("timeframe")
            if tf:
                from coinrl.pipeline.timeframes import timeframe_to_ms

                timeframe_ms = timeframe_to_ms(str(tf))
            elif len(d):
                timeframe_ms = int(d.min())
            else:
                raise DataError(
                    f"emulator candles {name!r}: one bar and no attrs['timeframe']; "
                    "cannot tell the bar length"
                )
        self.timeframe_ms = int(timeframe_ms)
        if len(d) and bool(np.any(d % self.timeframe_ms)):
            raise DataError(
                f"emulator candles {name!r}: bar open times are not whole multiples of "
                f"{self.timeframe_ms} ms apart"
            )
        self._aggs: dict[int, _Agg] = {}

    def __len__(self) -> int:
        return len(self.ts_ms)

    @property
    def end_ms(self) -> int:
        """Close time of the last stored bar (its open + timeframe), UTC ms."""
        return int(self.ts_ms[-1]) + self.timeframe_ms

    def supports(self, interval_ms: int) -> bool:
        """True when ``interval_ms`` can be built from the stored bars (a whole multiple)."""
        return interval_ms >= self.timeframe_ms and interval_ms % self.timeframe_ms == 0

    def _agg(self, interval_ms: int) -> _Agg:
        agg = self._aggs.get(interval_ms)
        if agg is not None:
            return agg
        n = len(self.ts_ms)
        if interval_ms == self.timeframe_ms:
            idx = np.arange(n, dtype=np.intp)
            agg = _Agg(self.ts_ms, idx, idx + 1, self.open, self.high, self.low, self.close,
                       self.volume)
        else:
            buckets = interval_bucket_ms(self.ts_ms, interval_ms)
            starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]]).astype(np.intp)
            ends = np.r_[starts[1:], n].astype(np.intp)
            agg = _Agg(
                ts_ms=buckets[starts],
                first=starts,
                last=ends,
                open=self.open[starts],
                high=np.maximum.reduceat(self.high, starts),
                low=np.minimum.reduceat(self.low, starts),
                close=self.close[ends - 1],
                volume=np.add.reduceat(self.volume, starts),
            )
        self._aggs[interval_ms] = agg
        return agg

    def bars(
        self,
        interval_ms: int,
        now_ms: int,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> Bars:
        """Bars as an exchange would answer them at ``now_ms`` (Binance klines semantics).

        Args:
            interval_ms: bar length; a whole multiple of the stored timeframe.
            now_ms: the emulator's current time, UTC ms. Bars opening later are not returned.
            start_ms, end_ms: inclusive bounds on bar open time, UTC ms.
            limit: most bars returned: the first ``limit`` from ``start_ms`` when it is given,
                else the last ``limit`` up to ``end_ms`` (or now).

        Returns:
            The bars; when the last one contains ``now_ms`` it is partial (see module doc).
        """
        if not self.supports(interval_ms):
            raise DataError(
                f"{self.name}: interval {interval_ms} ms is not a multiple of the stored "
                f"{self.timeframe_ms} ms bars"
            )
        agg = self._agg(interval_ms)
        # A bucket is visible once its first stored bar has opened.
        first_ts = self.ts_ms[agg.first]
        n_visible = int(np.searchsorted(first_ts, now_ms, side="right"))
        hi = n_visible
        if end_ms is not None:
            hi = min(hi, int(np.searchsorted(agg.ts_ms, end_ms, side="right")))
        lo = 0
        if start_ms is not None:
            lo = int(np.searchsorted(agg.ts_ms, start_ms, side="left"))
            hi = min(hi, lo + limit)
        else:
            lo = max(0, hi - limit)
        if hi <= lo:
            empty_i: I64 = np.empty(0, np.int64)
            empty_f: F64 = np.empty(0, np.float64)
            return Bars(empty_i, empty_f, empty_f, empty_f, empty_f, empty_f, interval_ms, False)
        sl = slice(lo, hi)
        ts = agg.ts_ms[sl]
        o, h, lo_, c, v = (agg.open[sl], agg.high[sl], agg.low[sl], agg.close[sl],
                           agg.volume[sl])
        last = hi - 1
        in_progress = int(agg.ts_ms[last]) + interval_ms > now_ms
        if in_progress:
            o, h, lo_, c, v = o.copy(), h.copy(), lo_.copy(), c.copy(), v.copy()
            po, ph, pl, pc, pv = self._partial(int(agg.first[last]), int(agg.last[last]), now_ms)
            o[-1], h[-1], lo_[-1], c[-1], v[-1] = po, ph, pl, pc, pv
        return Bars(ts, o, h, lo_, c, v, interval_ms, in_progress)

    def _partial(self, i0: int, i1: int, now_ms: int) -> tuple[float, float, float, float, float]:
        """O/H/L/C/V of base bars ``[i0, i1)`` as known at ``now_ms``."""
        # Base bars in the bucket that have opened by now; the last may be in progress.
        i_end = i0 + int(np.searchsorted(self.ts_ms[i0:i1], now_ms, side="right"))
        closed_end = i_end
        if i_end > i0 and int(self.ts_ms[i_end - 1]) + self.timeframe_ms > now_ms:
            closed_end = i_end - 1  # bar i_end-1 is in progress: only its open is known
        o = float(self.open[i0])
        if closed_end > i0:
            h = float(self.high[i0:closed_end].max())
            low = float(self.low[i0:closed_end].min())
            c = float(self.close[closed_end - 1])
            v = float(self.volume[i0:closed_end].sum())
        else:
            h = low = c = o
            v = 0.0
        if closed_end < i_end:  # the in-progress base bar contributes its open
            p = float(self.open[closed_end])
            h, low, c = max(h, p), min(low, p), p
        return o, h, low, c, v

    def price_at(self, ts_ms: int) -> float | None:
        """Open price of the stored bar containing ``ts_ms`` (None outside the data)."""
        i = int(np.searchsorted(self.ts_ms, ts_ms, side="right")) - 1
        if i < 0 or ts_ms >= int(self.ts_ms[i]) + self.timeframe_ms:
            return None
        return float(self.open[i])


class FundingSeries:
    """A perpetual's funding history: ``ts_ms`` (funding time, UTC ms) and ``funding_rate``.

    ``funding_rate`` is a fraction of position notional (0.0001 = 0.01 %) paid by longs when
    positive.
    """

    def __init__(self, frame: pd.DataFrame, name: str = "") -> None:
        missing = [c for c in ("ts_ms", "funding_rate") if c not in frame.columns]
        if missing:
            raise DataError(
                f"emulator funding {name!r} misses columns {missing}; expected ts_ms, funding_rate"
            )
        self.ts_ms: I64 = frame["ts_ms"].to_numpy(dtype=np.int64).copy()
        self.rate: F64 = frame["funding_rate"].to_numpy(dtype=np.float64).copy()
        if len(self.ts_ms) > 1 and not bool(np.all(np.diff(self.ts_ms) > 0)):
            raise DataError(f"emulator funding {name!r}: ts_ms is not strictly ascending")
        if not bool(np.all(np.isfinite(self.rate))):
            raise DataError(f"emulator funding {name!r}: funding_rate has NaN/inf values")

    def window(
        self, now_ms: int, *, start_ms: int | None, end_ms: int | None, limit: int
    ) -> tuple[I64, F64]:
        """Funding events known at ``now_ms`` (Binance fundingRate semantics).

        With ``start_ms``: the first ``limit`` events at or after it (up to ``end_ms``);
        otherwise the last ``limit`` events up to ``end_ms`` (or now).
        """
        hi = int(np.searchsorted(self.ts_ms, now_ms, side="right"))
        if end_ms is not None:
            hi = min(hi, int(np.searchsorted(self.ts_ms, end_ms, side="right")))
        if start_ms is not None:
            lo = int(np.searchsorted(self.ts_ms, start_ms, side="left"))
            hi = min(hi, lo + limit)
        else:
            lo = max(0, hi - limit)
        lo = min(lo, hi)
        return self.ts_ms[lo:hi], self.rate[lo:hi]


class EmulatedMarkets:
    """Everything the emulator lists: market specs, candles and funding by unified symbol.

    Args:
        candles: unified symbol -> OHLCV frame (see :class:`CandleSeries`).
        funding: perpetual symbol -> funding frame (see :class:`FundingSeries`).
        markets: optional explicit trading rules; defaults come from :func:`default_market_spec`
            at the median close.
    """

    def __init__(
        self,
        candles: Mapping[str, pd.DataFrame],
        funding: Mapping[str, pd.DataFrame] | None = None,
        markets: Mapping[str, MarketSpec] | None = None,
    ) -> None:
        if not candles:
            raise ConfigError("the emulator needs candles for at least one symbol")
        self.series: dict[str, CandleSeries] = {}
        self.specs: dict[str, MarketSpec] = {}
        for symbol, frame in candles.items():
            series = CandleSeries(frame, name=symbol)
            spec = (markets or {}).get(symbol) or default_market_spec(
                symbol, float(np.median(series.close))
            )
            if spec.symbol != symbol:
                raise ConfigError(f"markets[{symbol!r}] describes {spec.symbol!r}")
            self.series[symbol] = series
            self.specs[symbol] = spec
        self.funding: dict[str, FundingSeries] = {}
        for symbol, frame in (funding or {}).items():
            spec_f = self.specs.get(symbol)
            if spec_f is None or spec_f.kind != "linear":
                raise ConfigError(
                    f"funding given for {symbol!r}, which is not a listed perpetual; "
                    f"perpetuals here: {[s for s, m in self.specs.items() if m.kind == 'linear']}"
                )
            self.funding[symbol] = FundingSeries(frame, name=symbol)
        self._by_id: dict[tuple[MarketKind, str], str] = {
            (m.kind, m.market_id): s for s, m in self.specs.items()
        }

    def symbol_for(self, kind: MarketKind, market_id: str) -> str | None:
        """Unified symbol of the ``kind`` market with Binance id ``market_id`` (None if unlisted)."""
        return self._by_id.get((kind, market_id))

    def listed(self, kind: MarketKind) -> list[MarketSpec]:
        """Specs of the markets of one kind, sorted by id."""
        return sorted((m for m in self.specs.values() if m.kind == kind), key=lambda m: m.market_id)

    def default_now_ms(self) -> int:
        """Halfway through the latest stored bar: every symbol's last bar is in progress or closed."""
        return max(int(s.ts_ms[-1]) + s.timeframe_ms // 2 for s in self.series.values())


__all__ = [
    "BINANCE_INTERVALS_MS",
    "Bars",
    "CandleSeries",
    "FundingSeries",
    "EmulatedMarkets",
    "MarketKind",
    "MarketSpec",
    "default_market_spec",
    "interval_bucket_ms",
    "parse_symbol",
]
