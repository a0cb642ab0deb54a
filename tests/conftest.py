"""Shared fixtures: the real-data folder, a seeded synthetic candle frame, the exchange emulator."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

if TYPE_CHECKING:
    from coinrl.live.emulator import EmulatorServer

HOUR_MS = 3_600_000
FUNDING_EVERY_MS = 8 * HOUR_MS
SYNTH_START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC (a funding time: 00/08/16 UTC)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_candles(
    n: int = 3000,
    *,
    start_ms: int = SYNTH_START_MS,
    timeframe_ms: int = HOUR_MS,
    seed: int = 0,
    price0: float = 40_000.0,
    vol_per_bar: float = 0.006,
) -> pd.DataFrame:
    """Seeded geometric-random-walk candles, plain numpy (no coinrl code).

    Returns ``ts_ms`` (int64 UTC ms, every ``timeframe_ms``) and float64 OHLCV with
    ``low <= min(open, close) <= max(open, close) <= high``, ``open[t] == close[t-1]``,
    volume > 0 in base units; ``attrs["timeframe"]`` is set for hourly bars.
    """
    rng = np.random.default_rng(seed)
    log_ret = rng.normal(0.0, vol_per_bar, n)
    close = price0 * np.exp(np.cumsum(log_ret))
    open_ = np.r_[price0, close[:-1]]
    wick = np.abs(rng.normal(0.0, vol_per_bar / 2, (2, n)))
    high = np.maximum(open_, close) * (1.0 + wick[0])
    low = np.minimum(open_, close) * (1.0 - wick[1])
    volume = rng.lognormal(mean=3.0, sigma=0.5, size=n)
    frame = pd.DataFrame({
        "ts_ms": start_ms + np.arange(n, dtype=np.int64) * timeframe_ms,
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": volume,
    })
    if timeframe_ms == HOUR_MS:
        frame.attrs["timeframe"] = "1h"
    return frame


def make_funding(candles: pd.DataFrame, *, seed: int = 1) -> pd.DataFrame:
    """Funding events every 8 h (00/08/16 UTC) over the candles' span, rates as fractions."""
    rng = np.random.default_rng(seed)
    first = -(-int(candles["ts_ms"].iloc[0]) // FUNDING_EVERY_MS) * FUNDING_EVERY_MS
    ts = np.arange(first, int(candles["ts_ms"].iloc[-1]) + HOUR_MS, FUNDING_EVERY_MS,
                   dtype=np.int64)
    return pd.DataFrame({"ts_ms": ts, "funding_rate": rng.normal(1e-4, 2e-4, len(ts))})


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the read-only real exchange files (``/work/shared/data``)."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared data folder {SHARED_DATA} is missing in CI (clone beside ../shared)")
        pytest.skip(f"shared data folder {SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture
def candle_factory() -> Callable[..., pd.DataFrame]:
    """:func:`make_candles` (seeded synthetic OHLCV of any length, start and bar size)."""
    return make_candles


@pytest.fixture
def funding_factory() -> Callable[..., pd.DataFrame]:
    """:func:`make_funding` (8-hourly funding events over a candle frame)."""
    return make_funding


@pytest.fixture
def hourly_candles() -> pd.DataFrame:
    """3,000 seeded synthetic hourly BTC-like candles from 2024-01-01 00:00 UTC."""
    return make_candles()


@pytest.fixture
def emulator(hourly_candles: pd.DataFrame) -> Iterator[EmulatorServer]:
    """A running :class:`~coinrl.live.emulator.EmulatorServer` on 127.0.0.1 (ephemeral port).

    Lists ``BTC/USDT`` (spot) and ``BTC/USDT:USDT`` (perpetual, with 8-hourly funding) over
    ``hourly_candles``; its clock is fixed halfway through the last bar, so that bar is in
    progress and the other 2,999 are closed. Faults, clock and request log are per test.
    """
    from coinrl.live.emulator import EmulatorServer

    perp = make_candles(len(hourly_candles), seed=7, price0=40_050.0)
    server = EmulatorServer(
        {"BTC/USDT": hourly_candles, "BTC/USDT:USDT": perp},
        funding={"BTC/USDT:USDT": make_funding(perp)},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
