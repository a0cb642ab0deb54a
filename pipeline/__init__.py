"""coinrl.pipeline: market data in, clean featured leakage-free datasets out.

Public API (the seed's names): ``fetch_data``, ``preprocess_data``, ``store_data``,
``update_data``, ``feature_engineering``, ``prepare_data_for_model``, plus ``read_ohlcv``.
"""

from __future__ import annotations

from .dataset import MarketData
from .errors import (
    AuthenticationError,
    BadSymbol,
    CoinrlError,
    ConfigError,
    DataError,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    TemporaryExchangeError,
    UnknownFormatError,
)
from .store import load_data, store_data
from .timeframes import bars_per_year, timeframe_to_ms

__all__ = [
    "AuthenticationError",
    "BadSymbol",
    "CoinrlError",
    "ConfigError",
    "DataError",
    "ExchangeError",
    "InsufficientFunds",
    "InvalidOrder",
    "MarketData",
    "TemporaryExchangeError",
    "UnknownFormatError",
    "bars_per_year",
    "load_data",
    "store_data",
    "timeframe_to_ms",
]
