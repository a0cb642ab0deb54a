"""One declarative data section for experiments: where candles come from and how they are prepared.

:class:`DataConfig` is the ``data:`` block of an experiment YAML; :func:`load_dataset` turns it
into a :class:`~coinrl.pipeline.splits.PreparedData` (train/validation/test MarketData plus the
normaliser fitted on train), the same way for training, tuning and backtesting.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from pydantic import Field

from .clean import CleanConfig, preprocess_data
from .config import FrozenModel
from .features import FeatureSpec, default_feature_spec
from .formats import read_ohlcv
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
