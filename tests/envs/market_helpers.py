"""Synthetic MarketData for the env tests (plain numpy, no pipeline code)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from coinrl.pipeline.dataset import MarketData, PortfolioData

HOUR_MS = 3_600_000
START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def random_market(
    n: int = 600,
    *,
    n_features: int = 5,
    seed: int = 0,
    vol: float = 0.006,
    funding: bool = False,
    symbol: str = "BTC/USD",
) -> MarketData:
    """A seeded random-walk market with consistent OHLC (low <= open, close <= high)."""
    rng = np.random.default_rng(seed)
    close = 40_000.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.r_[40_000.0, close[:-1]] * np.exp(rng.normal(0.0, vol / 4, n))
    wick = np.abs(rng.normal(0.0, vol / 2, (2, n)))
    high = np.maximum(open_, close) * (1.0 + wick[0])
    low = np.minimum(open_, close) * (1.0 - wick[1])
    fr = np.where(np.arange(n) % 8 == 0, rng.normal(1e-4, 3e-4, n), 0.0) if funding else None
    return MarketData(
        ts_ms=START_MS + np.arange(n, dtype=np.int64) * HOUR_MS,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=rng.lognormal(3.0, 0.5, n),
        features=rng.normal(size=(n, n_features)).astype(np.float32),
        feature_names=tuple(f"f{i}" for i in range(n_features)),
        funding_rate=fr,
        symbol=symbol,
    )


def market_from_prices(
    open_: Sequence[float],
    high: Sequence[float],
    low: Sequence[float],
    close: Sequence[float],
    *,
    volume: Sequence[float] | None = None,
    funding: Sequence[float] | None = None,
    n_features: int = 2,
) -> MarketData:
    """A tiny market with the given prices (features = row index, for look-ahead checks)."""
    n = len(open_)
    feats = np.repeat(np.arange(n, dtype=np.float32)[:, None], n_features, axis=1)
    return MarketData(
        ts_ms=START_MS + np.arange(n, dtype=np.int64) * HOUR_MS,
        open=np.asarray(open_, dtype=np.float64),
        high=np.asarray(high, dtype=np.float64),
        low=np.asarray(low, dtype=np.float64),
        close=np.asarray(close, dtype=np.float64),
        volume=np.asarray(volume if volume is not None else [1e6] * n, dtype=np.float64),
        features=feats,
        feature_names=tuple(f"f{i}" for i in range(n_features)),
        funding_rate=None if funding is None else np.asarray(funding, dtype=np.float64),
    )


def copy_obs(obs: object) -> object:
    """Deep copy of an observation (the envs reuse their buffers)."""
    if isinstance(obs, dict):
        return {k: np.array(v, copy=True) for k, v in obs.items()}
    return np.array(obs, copy=True)


def obs_equal(a: object, b: object) -> bool:
    """Bit-equality of two observations (Box arrays or Dict of arrays)."""
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def random_portfolio(
    n: int = 400, n_assets: int = 3, *, n_features: int = 3, seed: int = 0, vol: float = 0.01,
    funding: bool = False, flat_bars: bool = False, n_market_features: int = 0,
) -> PortfolioData:
    """A seeded random portfolio on one hourly clock (all bars tradable).

    ``flat_bars``: open = high = low = close within each bar (prices move only between bars),
    so weights at the close equal weights at the fill.
    """
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, (n, n_assets)), axis=0))
    if flat_bars:
        open_ = high = low = close
    else:
        open_ = np.r_[np.full((1, n_assets), 100.0), close[:-1]] * np.exp(rng.normal(0.0, vol / 4, (n, n_assets)))
        wick = np.abs(rng.normal(0.0, vol / 2, (2, n, n_assets)))
        high = np.maximum(open_, close) * (1.0 + wick[0])
        low = np.minimum(open_, close) * (1.0 - wick[1])
    fr = np.where(np.arange(n)[:, None] % 8 == 0, rng.normal(1e-4, 3e-4, (n, n_assets)), 0.0) if funding else np.zeros((n, n_assets))
    return PortfolioData(
        ts_ms=START_MS + np.arange(n, dtype=np.int64) * HOUR_MS,
        open=np.ascontiguousarray(open_), high=np.ascontiguousarray(high),
        low=np.ascontiguousarray(low), close=np.ascontiguousarray(close),
        volume=rng.lognormal(3.0, 0.5, (n, n_assets)), funding_rate=fr,
        tradable=np.ones((n, n_assets), dtype=bool),
        features=rng.normal(size=(n, n_assets, n_features)).astype(np.float32),
        feature_names=tuple(f"f{i}" for i in range(n_features)),
        symbols=tuple(f"A{i}/USD" for i in range(n_assets)),
        market_features=rng.normal(size=(n, n_market_features)).astype(np.float32),
        market_feature_names=tuple(f"m{i}" for i in range(n_market_features)),
    )
