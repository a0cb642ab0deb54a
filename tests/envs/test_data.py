"""Where envs get MarketData: as is, from a candle frame, from a file, or the packaged sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from market_helpers import random_market

from coinrl.envs.data import market_data_from, market_list
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import DataError


def test_market_data_passes_through_unchanged() -> None:
    md = random_market(50)
    assert market_data_from(md) is md


def test_candle_frame_is_featured_split_and_normalised(hourly_candles: pd.DataFrame) -> None:
    train = market_data_from(hourly_candles, split="train")
    test = market_data_from(hourly_candles, split="test")
    assert isinstance(train, MarketData)
    assert train.features.dtype == np.float32
    assert train.ts_ms[-1] < test.ts_ms[0]  # chronological split, train first
    assert np.isfinite(train.features).all()


def test_exchange_file_is_read_and_prepared(shared_data: Path) -> None:
    md = market_data_from(shared_data / "btc_usd_1h_bitfinex.csv")
    assert len(md) > 1_000
    assert bool(np.all(np.diff(md.ts_ms) > 0))


def test_unusable_inputs_raise_data_error() -> None:
    with pytest.raises(DataError, match="cannot build market data"):
        market_data_from(42)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="does not exist"):
        market_data_from("/nonexistent/file.csv")
    with pytest.raises(DataError, match="empty list"):
        market_list([])
    with pytest.raises(DataError, match="share feature columns"):
        market_list([random_market(50, n_features=3), random_market(50, n_features=4)])
