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
