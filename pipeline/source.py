"""One declarative data section for experiments: where candles come from and how they are prepared.

:class:`DataConfig` is the ``data:`` block of an experiment YAML; :func:`load_dataset` turns it
into a :class:`~coinrl.pipeline.splits.PreparedData` (train/validation/test MarketData plus the
normaliser fitted on train), the same way for training, tuning and backtesting.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field

from .clean import CleanConfig, preprocess_data
from .config import FrozenModel
from .features import FeatureSpec, default_feature_spec
from .formats import read_ohlcv
from .portfolio import PreparedPortfolio, prepare_portfolio
from .sample import load_sample
from .splits import NormConfig, PreparedData, SplitConfig, prepare_data_for_model

logger = logging.getLogger(__name__)

SAMPLE = "sample"


class DataConfig(FrozenModel):
    """The ``data:`` section of an experiment.

    Attributes:
        source: ``"sample"`` for the packaged hourly BTC/USD sample, or a path to any file
            :func:`~coinrl.pipeline.formats.read_ohlcv` understands (exports or stored Parquet).
        format: reader name, or ``"auto"`` to detect.
        clean: cleaning policies (duplicates, gaps, invalid rows).
        features: the declarative feature spec (replayed unchanged in live trading).
        split: train/validation/test fractions, embargo, walk-forward folds.
        norm: normalisation method, fitted on the training split only.
    """

    source: str = SAMPLE
    format: str = "auto"
    clean: CleanConfig = Field(default_factory=CleanConfig)
    features: FeatureSpec = Field(default_factory=default_feature_spec)
    split: SplitConfig = Field(default_factory=SplitConfig)
    norm: NormConfig = Field(default_factory=NormConfig)


def load_candles(cfg: DataConfig) -> pd.DataFrame:
    """Read and clean the candles named by ``cfg.source``."""
    if cfg.source == SAMPLE:
        return preprocess_data(load_sample(), cfg.clean)
    return read_ohlcv(Path(cfg.source), fmt=cfg.format, clean=cfg.clean)


def load_dataset(cfg: DataConfig | None = None) -> PreparedData:
    """Candles → features → time splits → normaliser fitted on train, as env-ready arrays."""
    cfg = cfg or DataConfig()
    candles = load_candles(cfg)
    prepared = prepare_data_for_model(candles, spec=cfg.features, split=cfg.split, norm=cfg.norm)
    logger.info(
        "dataset source=%s rows=%d train=%d validation=%d test=%d features=%d",
        cfg.source, len(candles), len(prepared.train), len(prepared.validation),
        len(prepared.test), prepared.train.n_features,
    )
    return prepared


class PortfolioDataConfig(DataConfig):
    """The ``data:`` section of a portfolio: several sources on one clock.

    Attributes:
        sources: one source per asset (paths, or ``"sample"`` once for the packaged BTC/USD
            sample as a one-asset portfolio). Empty: ``source`` alone, as A = 1.
        norm_scope: ``per_asset`` (a normaliser per asset, fitted on its train rows) or
            ``pooled`` (one over all assets' train rows).
        market_features: add the market-wide ``basket_ret_1`` feature.
    """

    sources: tuple[str, ...] = ()
    norm_scope: Literal["per_asset", "pooled"] = "per_asset"
    market_features: bool = False


def load_portfolio_dataset(cfg: PortfolioDataConfig | None = None) -> PreparedPortfolio:
    """Each source's candles -> one clock -> per-asset features -> split -> train-only norm.

    Raises:
        DataError: a source that cannot be read, assets on different timeframes or with no
            overlap (the message names the asset).
    """
    cfg = cfg or PortfolioDataConfig()
    sources = cfg.sources or (cfg.source,)
    frames = [load_candles(cfg.model_copy(update={"source": s})) for s in sources]
    return prepare_portfolio(frames, spec=cfg.features, split=cfg.split, norm=cfg.norm,
                             norm_scope=cfg.norm_scope, market_features=cfg.market_features)
