"""coinrl.pipeline: market data in, clean featured leakage-free datasets out.

Public API (the seed's names): ``fetch_data``, ``preprocess_data``, ``store_data``,
``update_data``, ``feature_engineering``, ``prepare_data_for_model``, plus ``read_ohlcv``.
"""

from __future__ import annotations

from typing import Any

from .clean import CleanConfig, CleanReport, preprocess_data
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
from .features import FeatureSpec, default_feature_spec, feature_engineering
from .formats import KNOWN_FORMATS, parse_ohlcv, read_ohlcv
from .sample import load_sample
from .splits import (
    Normaliser,
    NormConfig,
    PreparedData,
    SplitConfig,
    make_market_data,
    market_data_from_spec,
    prepare_data_for_model,
    walk_forward_folds,
)
from .store import load_data, store_data
from .timeframes import bars_per_year, timeframe_to_ms

__all__ = [
    "AuthenticationError",
    "BadSymbol",
    "CleanConfig",
    "CleanReport",
    "CoinrlError",
    "ConfigError",
    "DataError",
    "ExchangeError",
    "FeatureSpec",
    "InsufficientFunds",
    "InvalidOrder",
    "KNOWN_FORMATS",
    "MarketData",
    "NormConfig",
    "Normaliser",
    "PreparedData",
    "SplitConfig",
    "TemporaryExchangeError",
    "UnknownFormatError",
    "bars_per_year",
    "default_feature_spec",
    "feature_engineering",
    "load_data",
    "load_sample",
    "make_market_data",
    "market_data_from_spec",
    "parse_ohlcv",
    "preprocess_data",
    "prepare_data_for_model",
    "read_ohlcv",
    "store_data",
    "timeframe_to_ms",
    "walk_forward_folds",
]

# Downloading imports ccxt (about a second): load it on first use only.
_LAZY = {
    "fetch_data": ".fetch",
    "update_data": ".fetch",
    "schedule_updates": ".fetch",
    "load_funding": ".fetch",
    "align_funding": ".fetch",
    "UpdateJob": ".fetch",
}
__all__ += list(_LAZY)

SEED_FUNCTIONS = (
    "fetch_data",
    "preprocess_data",
    "store_data",
    "update_data",
    "feature_engineering",
    "prepare_data_for_model",
)
"""The seed's public functions of the pipeline stage (each importable from this package)."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
