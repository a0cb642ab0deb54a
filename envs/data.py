"""Where the envs get market data: the one place envs touch the pipeline's frame-level API.

Everything else in :mod:`coinrl.envs` runs on :class:`~coinrl.pipeline.dataset.MarketData` alone
(numpy arrays). These helpers turn the other things a user may hand an env into MarketData:

- :func:`default_market_data`: the packaged hourly BTC/USD sample with the default features,
  normalised on its train split (what ``gymnasium.make("coinrl/Trading-v0")`` trades).
- :func:`market_data_from`: MarketData (as is), a cleaned candle DataFrame, or a file path.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from coinrl.pipeline.dataset import MarketData, PortfolioData
from coinrl.pipeline.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

Split = Literal["train", "validation", "test", "full"]


def _pick(prepared: object, split: Split) -> MarketData:
    md = getattr(prepared, split, None)
    if not isinstance(md, MarketData):
        raise DataError(f"split {split!r} is not one of train, validation, test, full")
    return md


@functools.lru_cache(maxsize=4)
def default_market_data(split: Split = "train") -> MarketData:
    """The packaged hourly BTC/USD sample, default features, normaliser fitted on train.

    Args:
        split: which chronological part to return (``"full"`` = all rows, same normaliser).

    Returns:
        MarketData of that split (cached: later calls return the same object).

    Raises:
        DataError: the packaged sample is missing or the split name is unknown.
    """
    from coinrl.pipeline.sample import load_sample
    from coinrl.pipeline.splits import prepare_data_for_model

    prepared = prepare_data_for_model(load_sample())
    md = _pick(prepared, split)
    logger.info("default market data symbol=%s split=%s rows=%d features=%d", md.symbol, split, len(md), md.n_features)
    return md


def market_data_from(data: MarketData | pd.DataFrame | str | Path | None, split: Split = "train") -> MarketData:
    """Turn what a user passes to an env into :class:`MarketData`.

    Args:
        data: MarketData (returned as is); a cleaned candle DataFrame (``ts_ms`` + OHLCV,
            optional ``funding_rate``), featured and normalised with the default spec; a path
            to an exchange export or a stored Parquet file (read and cleaned first); or None
            for :func:`default_market_data`.
        split: which part of a DataFrame or file to return.

    Returns:
        The MarketData an env trades.

    Raises:
        DataError: the input is of an unsupported type or unusable.
    """
    if data is None:
        return default_market_data(split)
    if isinstance(data, MarketData):
        return data
    if isinstance(data, (str, Path)):
        from coinrl.pipeline.formats import read_ohlcv

        p = Path(data)
        if not p.is_file():
            raise DataError(f"market data file {p} does not exist; pass a CSV/feather/Parquet export")
        frame = read_ohlcv(p)
    else:
        import pandas as pd

        if not isinstance(data, pd.DataFrame):
            raise DataError(
                f"cannot build market data from {type(data).__name__}; pass MarketData, a candle "
                "DataFrame, a file path, or None for the packaged sample"
            )
        frame = data
    from coinrl.pipeline.splits import prepare_data_for_model

    return _pick(prepare_data_for_model(frame), split)


def market_list(
    data: MarketData | Sequence[MarketData] | pd.DataFrame | str | Path | None, split: Split = "train"
) -> list[MarketData]:
    """Like :func:`market_data_from`, also accepting a sequence of MarketData (several markets).

    Raises:
        DataError: an empty sequence, or markets whose feature columns differ.
    """
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        markets = [market_data_from(d, split) for d in data]
        if not markets:
            raise DataError("an empty list of markets was passed; pass at least one MarketData")
    else:
        markets = [market_data_from(data, split)]
    names = markets[0].feature_names
    for md in markets[1:]:
        if md.feature_names != names:
            raise DataError(
                f"markets must share feature columns: {md.symbol} has {md.feature_names}, "
                f"{markets[0].symbol} has {names}; build them with the same FeatureSpec"
            )
    return markets


@functools.lru_cache(maxsize=4)
def default_portfolio_data(split: Split = "train") -> PortfolioData:
    """A seeded synthetic 4-asset hourly portfolio (common factor, regimes, asset 1 following
    asset 0's last return), default features, per-asset normalisers fitted on train.

    What ``gymnasium.make("coinrl/Portfolio-v0")`` trades. Cached.
    """
    from coinrl.pipeline.portfolio import prepare_portfolio
    from coinrl.pipeline.synthetic_assets import correlated_assets

    prepared = prepare_portfolio(correlated_assets(4, 3_000, seed=0, lead_lag=(0, 1, 0.3)))
    pd_: PortfolioData = getattr(prepared, split)
    return pd_


def portfolio_data_from(
    data: PortfolioData | MarketData | Sequence[MarketData] | object | None, split: Split = "train"
) -> PortfolioData:
    """Turn what a user passes to a portfolio env into :class:`PortfolioData`.

    Args:
        data: PortfolioData (as is); a ``PreparedPortfolio`` (its ``split`` part); one
            MarketData (A = 1) or a sequence of MarketData on one clock; None for
            :func:`default_portfolio_data`.
        split: the part of a PreparedPortfolio or of the default data.

    Raises:
        DataError: unsupported input, or markets on different clocks (naming the asset).
    """
    if data is None:
        return default_portfolio_data(split)
    if isinstance(data, PortfolioData):
        return data
    if isinstance(data, MarketData):
        return PortfolioData.from_markets([data])
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)) and all(
        isinstance(d, MarketData) for d in data
    ):
        return PortfolioData.from_markets(list(data))
    part = getattr(data, split, None)
    if isinstance(part, PortfolioData):
        return part
    raise DataError(
        f"cannot build portfolio data from {type(data).__name__}; pass PortfolioData, a "
        "PreparedPortfolio, MarketData on one clock, or None for the synthetic default"
    )
