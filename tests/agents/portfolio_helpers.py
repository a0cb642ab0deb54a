"""Small hand-written portfolios for the portfolio backtest tests (plain numpy, no coinrl maths)."""

from __future__ import annotations

import numpy as np

from coinrl.pipeline.dataset import PortfolioData

HOUR_MS = 3_600_000
START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC

ZERO_COSTS = {"taker_fee_rate": 0.0, "slippage_bps": 0.0, "rebalance_threshold": 0.0}


def portfolio(open_: np.ndarray, close: np.ndarray, *, tf_ms: int = HOUR_MS, timeframe: str = "1h",
              funding: np.ndarray | None = None, seed: int = 0) -> PortfolioData:
    """Bars with the given opens and closes (wicks at the body), random features."""
    o = np.ascontiguousarray(open_, dtype=np.float64)
    c = np.ascontiguousarray(close, dtype=np.float64)
    t, a = o.shape
    rng = np.random.default_rng(seed)
    return PortfolioData(
        ts_ms=START_MS + np.arange(t, dtype=np.int64) * tf_ms, open=o,
        high=np.maximum(o, c), low=np.minimum(o, c), close=c,
        volume=np.full((t, a), 1e6), funding_rate=np.zeros((t, a)) if funding is None else funding,
        tradable=np.ones((t, a), dtype=bool),
        features=rng.normal(size=(t, a, 2)).astype(np.float32), feature_names=("f0", "f1"),
        symbols=tuple(f"A{i}/USD" for i in range(a)), timeframe=timeframe,
    )


def random_walk(n: int = 300, n_assets: int = 3, *, seed: int = 0, vol: float = 0.01,
                tf_ms: int = HOUR_MS, timeframe: str = "1h", funding: bool = False) -> PortfolioData:
    """A seeded random walk of ``n_assets`` assets (opens gap from the previous close)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, (n, n_assets)), axis=0))
    open_ = np.r_[np.full((1, n_assets), 100.0), close[:-1]] * np.exp(rng.normal(0.0, vol / 4, (n, n_assets)))
    fr = (np.where(np.arange(n)[:, None] % 8 == 0, rng.normal(1e-4, 3e-4, (n, n_assets)), 0.0)
          if funding else None)
    return portfolio(open_, close, tf_ms=tf_ms, timeframe=timeframe, funding=fr, seed=seed)
