"""The hand-off between the pipeline and the environments.

:class:`MarketData` is what every env, the backtester and the paper broker consume: aligned numpy
arrays of one market over one time range, with a precomputed float32 feature matrix. It holds no
pandas objects, so ``step()`` never touches pandas.

Alignment rule: row ``t`` is the bar that OPENS at ``ts_ms[t]``. ``features[t]`` is computed from
bars ``<= t`` only (it is known at bar t's close). A decision taken on ``features[t]`` fills at
``open[t + delay]`` with ``delay >= 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import DataError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class MarketData:
    """One market's bars and features as contiguous numpy arrays of equal length ``T``.

    Attributes:
        ts_ms: bar open times, int64 UTC epoch milliseconds, strictly ascending.
        open, high, low, close: prices in quote currency, float64.
        volume: traded volume in BASE units, float64.
        features: float32 matrix ``(T, F)``, normalised, causal (row t uses bars <= t).
        feature_names: names of the ``F`` feature columns.
        funding_rate: per-bar funding rate as a fraction of position notional, charged at the
            bar in which a funding time falls (longs pay positive rates); zeros for spot.
        symbol, timeframe, exchange: descriptive metadata.
        meta: free-form provenance (source file, data hash, split name, ...).
    """

    ts_ms: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    features: F32
    feature_names: tuple[str, ...]
    funding_rate: F64 | None = None
    symbol: str = "BTC/USD"
    timeframe: str = "1h"
    exchange: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ts_ms)
        for name in ("open", "high", "low", "close", "volume"):
            if len(getattr(self, name)) != n:
                raise DataError(f"MarketData.{name} has {len(getattr(self, name))} rows, ts_ms has {n}")
        if self.features.ndim != 2 or self.features.shape[0] != n:
            raise DataError(f"MarketData.features must be (T={n}, F), got {self.features.shape}")
        if self.features.dtype != np.float32:
            raise DataError(f"MarketData.features must be float32, got {self.features.dtype}")
        if len(self.feature_names) != self.features.shape[1]:
            raise DataError(
                f"{len(self.feature_names)} feature names for {self.features.shape[1]} feature columns"
            )
        if self.funding_rate is not None and len(self.funding_rate) != n:
            raise DataError(f"MarketData.funding_rate has {len(self.funding_rate)} rows, expected {n}")
        if n > 1 and not bool(np.all(np.diff(self.ts_ms) > 0)):
            raise DataError("MarketData.ts_ms must be strictly ascending; run preprocess_data first")

    def __len__(self) -> int:
        return len(self.ts_ms)

    @property
    def n_features(self) -> int:
        """Number of feature columns ``F``."""
        return int(self.features.shape[1])

    def slice(self, start: int, stop: int) -> MarketData:
        """Rows ``[start, stop)`` as views (no copy)."""
        fr = None if self.funding_rate is None else self.funding_rate[start:stop]
        return MarketData(
            ts_ms=self.ts_ms[start:stop],
            open=self.open[start:stop],
            high=self.high[start:stop],
            low=self.low[start:stop],
            close=self.close[start:stop],
            volume=self.volume[start:stop],
            features=self.features[start:stop],
            feature_names=self.feature_names,
            funding_rate=fr,
            symbol=self.symbol,
            timeframe=self.timeframe,
            exchange=self.exchange,
            meta=dict(self.meta),
        )


@dataclass(frozen=True, eq=False)
class PortfolioData:
    """A assets on one clock of ``T`` bars: the hand-off to the portfolio envs.

    Alignment is :class:`MarketData`'s: row ``t`` opens at ``ts_ms[t]``, ``features[t]`` uses
    bars ``<= t`` of its asset (and ``market_features[t]`` bars ``<= t`` of the tradable
    assets); a decision on row t fills at ``open[t + 1]``.

    Untradable bars (``tradable[t, a]`` False: the asset is not listed yet, has no candle in
    that bar, its features are still warming up, or it was delisted): the kernel never fills
    the asset there and charges no funding. The price arrays still hold a value so the books
    stay arithmetic: a flat bar at the last tradable close (open = high = low = close, volume
    0), so a position held through a gap is marked at its last real price without a jump
    from a stale print, and the real move is booked on the first bar it trades again, when it
    happened. Before an asset's first candle the prices hold its first open: a placeholder
    that the books never read (the position is 0 until the asset trades, and 0 * price is 0).
    Features of untradable bars are 0 (the normalised mean).

    Attributes:
        ts_ms: int64 bar open times (T,), strictly ascending, one timeframe.
        open, high, low, close: float64 (T, A), quote currency.
        volume: float64 (T, A), base units.
        funding_rate: float64 (T, A), fraction of notional per bar (0 where none).
        tradable: bool (T, A).
        features: float32 (T, A, F), per-asset features (normalised, causal).
        feature_names: the F names.
        market_features: float32 (T, G), market-wide features (G may be 0).
        market_feature_names: the G names.
        symbols: the A asset names.
        timeframe, exchange: metadata; meta: provenance.
    """

    ts_ms: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    funding_rate: F64
    tradable: npt.NDArray[np.bool_]
    features: F32
    feature_names: tuple[str, ...]
    symbols: tuple[str, ...]
    market_features: F32 = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    market_feature_names: tuple[str, ...] = ()
    timeframe: str = "1h"
    exchange: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t, a = len(self.ts_ms), len(self.symbols)
        if a < 1:
            raise DataError("PortfolioData needs at least one asset")
        for name in ("open", "high", "low", "close", "volume", "funding_rate", "tradable"):
            shape = getattr(self, name).shape
            if shape != (t, a):
                raise DataError(f"PortfolioData.{name} must be (T={t}, A={a}), got {shape}")
        if self.features.ndim != 3 or self.features.shape[:2] != (t, a):
            raise DataError(f"PortfolioData.features must be (T={t}, A={a}, F), got {self.features.shape}")
        if self.features.dtype != np.float32:
            raise DataError(f"PortfolioData.features must be float32, got {self.features.dtype}")
        if len(self.feature_names) != self.features.shape[2]:
            raise DataError(f"{len(self.feature_names)} feature names for {self.features.shape[2]} columns")
        if self.market_features.shape == (0, 0) and not self.market_feature_names:
            object.__setattr__(self, "market_features", np.zeros((t, 0), dtype=np.float32))
        mf = self.market_features
        if mf.shape != (t, len(self.market_feature_names)) or mf.dtype != np.float32:
            raise DataError(
                f"PortfolioData.market_features must be float32 (T={t}, G={len(self.market_feature_names)}), "
                f"got {mf.dtype} {mf.shape}"
            )
        if t > 1 and not bool(np.all(np.diff(self.ts_ms) > 0)):
            raise DataError("PortfolioData.ts_ms must be strictly ascending")
        prices = np.stack([self.open, self.high, self.low, self.close])
        ok = np.isfinite(prices).all(axis=0) & (prices > 0.0).all(axis=0)
        if not ok.all():
            ti, ai = (int(v[0]) for v in np.nonzero(~ok))
            raise DataError(
                f"{self.symbols[ai]}: prices must be finite and > 0 on every bar (untradable bars "
                f"hold the last close), bar {ti} (ts_ms={int(self.ts_ms[ti])}) is not"
            )
        if not np.isfinite(self.funding_rate).all() or not np.isfinite(self.volume).all():
            ai = int(np.nonzero(~(np.isfinite(self.funding_rate) & np.isfinite(self.volume)))[1][0])
            raise DataError(f"{self.symbols[ai]}: volume and funding_rate must be finite")

    def __len__(self) -> int:
        return len(self.ts_ms)

    @property
    def n_assets(self) -> int:
        """Number of assets ``A``."""
        return len(self.symbols)

    @property
    def n_features(self) -> int:
        """Per-asset feature columns ``F``."""
        return int(self.features.shape[2])

    @property
    def n_market_features(self) -> int:
        """Market-wide feature columns ``G``."""
        return len(self.market_feature_names)

    def slice(self, start: int, stop: int) -> PortfolioData:
        """Rows ``[start, stop)`` as views (no copy)."""
        s = slice(start, stop)
        mf = self.market_features
        return PortfolioData(
            ts_ms=self.ts_ms[s], open=self.open[s], high=self.high[s], low=self.low[s],
            close=self.close[s], volume=self.volume[s], funding_rate=self.funding_rate[s],
            tradable=self.tradable[s], features=self.features[s],
            feature_names=self.feature_names, symbols=self.symbols, market_features=mf[s],
            market_feature_names=self.market_feature_names, timeframe=self.timeframe,
            exchange=self.exchange, meta=dict(self.meta),
        )

    @classmethod
    def from_markets(cls, markets: list[MarketData] | tuple[MarketData, ...]) -> PortfolioData:
        """Assets that already share one clock (equal ``ts_ms``), e.g. one market as A = 1.

        Raises:
            DataError: markets on different clocks or feature columns, naming the asset.
        """
        if not markets:
            raise DataError("from_markets needs at least one MarketData")
        m0 = markets[0]
        for md in markets[1:]:
            if md.timeframe != m0.timeframe:
                raise DataError(f"{md.symbol} is on timeframe {md.timeframe}, {m0.symbol} on "
                                f"{m0.timeframe}; resample to one timeframe first")
            if len(md) != len(m0) or not np.array_equal(md.ts_ms, m0.ts_ms):
                raise DataError(f"{md.symbol} is not on {m0.symbol}'s clock (different ts_ms); "
                                "load the assets with load_portfolio_dataset, which aligns them")
            if md.feature_names != m0.feature_names:
                raise DataError(f"{md.symbol} has features {md.feature_names}, {m0.symbol} "
                                f"{m0.feature_names}; build them with one FeatureSpec")

        def stack(name: str) -> F64:
            return np.ascontiguousarray(np.stack([getattr(md, name) for md in markets], axis=1), dtype=np.float64)

        funding = np.stack([md.funding_rate if md.funding_rate is not None else np.zeros(len(md))
                            for md in markets], axis=1)
        return cls(
            ts_ms=np.asarray(m0.ts_ms, dtype=np.int64), open=stack("open"), high=stack("high"),
            low=stack("low"), close=stack("close"), volume=stack("volume"),
            funding_rate=np.ascontiguousarray(funding, dtype=np.float64),
            tradable=np.ones((len(m0), len(markets)), dtype=bool),
            features=np.ascontiguousarray(np.stack([md.features for md in markets], axis=1)),
            feature_names=m0.feature_names, symbols=tuple(md.symbol for md in markets),
            timeframe=m0.timeframe, exchange=m0.exchange, meta=dict(m0.meta),
        )
