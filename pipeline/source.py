"""One declarative data section for experiments: where candles come from and how they are prepared.

:class:`DataConfig` is the ``data:`` block of an experiment YAML; :func:`load_dataset` turns it
into a :class:`~coinrl.pipeline.splits.PreparedData` (train/validation/test MarketData plus the
normaliser fitted on train), the same way for training, tuning and backtesting.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field

from .clean import CleanConfig, preprocess_data
from .config import FrozenModel
from .errors import ConfigError, DataError
from .features import FeatureSpec, default_feature_spec
from .formats import read_ohlcv
from .portfolio import PreparedPortfolio, prepare_portfolio
from .sample import load_sample
from .splits import Normaliser, NormConfig, PreparedData, SplitConfig, prepare_data_for_model
from .store import iter_catalog

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


def _refuse_portfolio(cfg: DataConfig) -> None:
    if isinstance(cfg, PortfolioDataConfig):
        raise ConfigError(
            f"this data section is a portfolio ({len(cfg.sources) + len(cfg.symbols)} assets in "
            "sources/symbols) and this command or function trades one market; load it with "
            "load_portfolio_dataset (coinrl train, backtest, walkforward and tune accept "
            "portfolios)"
        )


def load_candles(cfg: DataConfig) -> pd.DataFrame:
    """Read and clean the candles named by ``cfg.source``.

    Raises:
        ConfigError: a :class:`PortfolioDataConfig` (one market's loader must not quietly
            read ``source`` alone; use :func:`load_portfolio_dataset`).
    """
    _refuse_portfolio(cfg)
    if cfg.source == SAMPLE:
        return preprocess_data(load_sample(), cfg.clean)
    return read_ohlcv(Path(cfg.source), fmt=cfg.format, clean=cfg.clean)


def load_dataset(cfg: DataConfig | None = None) -> PreparedData:
    """Candles → features → time splits → normaliser fitted on train, as env-ready arrays.

    Raises:
        ConfigError: a :class:`PortfolioDataConfig` (several assets: use
            :func:`load_portfolio_dataset`; a one-market path must not quietly train on
            ``source`` alone).
    """
    cfg = cfg or DataConfig()
    _refuse_portfolio(cfg)
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
            sample as a one-asset portfolio).
        symbols: asset symbols (``"ETH/BTC"``) looked up in the stored Parquet catalog under
            ``data_dir`` (what ``coinrl data fetch`` writes), on ``timeframe`` when given.
            ``sources`` and ``symbols`` may be combined; both empty: ``source`` alone (A = 1).
        data_dir: the folder the symbols are looked up in.
        timeframe: the timeframe the symbols must be stored on (None: any, when unique).
        norm_scope: ``per_asset`` (a normaliser per asset, fitted on its train rows) or
            ``pooled`` (one over all assets' train rows).
        market_features: add the market-wide ``basket_ret_1`` feature.
    """

    sources: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    data_dir: str = "coinrl_data"
    timeframe: str | None = None
    norm_scope: Literal["per_asset", "pooled"] = "per_asset"
    market_features: bool = False


def resolve_symbols(symbols: tuple[str, ...], data_dir: str | Path, timeframe: str | None = None) -> tuple[str, ...]:
    """The stored file of each symbol in ``data_dir``'s catalog.

    Raises:
        DataError: a symbol stored nowhere, or on several files (naming it and the choices).
    """
    entries = list(iter_catalog(data_dir)) if Path(data_dir).is_dir() else []
    paths = []
    for sym in symbols:
        hits = [e for e in entries if e.symbol == sym and (timeframe is None or e.timeframe == timeframe)]
        if not hits:
            on = f" on {timeframe}" if timeframe else ""
            raise DataError(
                f"{sym}{on} is not stored under {data_dir}; fetch it (coinrl data fetch) or pass its "
                "file in sources"
            )
        if len(hits) > 1:
            raise DataError(
                f"{sym} is stored {len(hits)} times under {data_dir} "
                f"({', '.join(f'{h.path} {h.timeframe}' for h in hits)}); set data.timeframe or pass "
                "the file in sources"
            )
        paths.append(str(hits[0].path))
    return tuple(paths)


def load_portfolio_dataset(
    cfg: PortfolioDataConfig | None = None,
    *,
    spec: FeatureSpec | None = None,
    normalisers: Sequence[Normaliser] | None = None,
    market_normaliser: Normaliser | None = None,
    fold: int | None = None,
) -> PreparedPortfolio:
    """Each source's candles -> one clock -> per-asset features -> split -> train-only norm.

    Args:
        cfg: the ``data:`` section.
        spec, normalisers, market_normaliser: a trained agent's feature spec and fitted
            normalisers, used instead of ``cfg.features`` and a new fit (see
            :func:`~coinrl.pipeline.portfolio.prepare_portfolio`).
        fold: walk-forward fold ``i`` of ``cfg.split`` instead of the single split (its
            normalisers fitted on that fold's train rows).

    Returns:
        The prepared portfolio; ``full.meta["sources"]`` lists the file of each asset.

    Raises:
        DataError: a source that cannot be read, a symbol not stored, assets on different
            timeframes or with no overlap (the message names the asset).
    """
    cfg = cfg or PortfolioDataConfig()
    sources = cfg.sources + resolve_symbols(cfg.symbols, cfg.data_dir, cfg.timeframe)
    sources = sources or (cfg.source,)
    frames = [load_candles(DataConfig(source=s, format=cfg.format, clean=cfg.clean)) for s in sources]
    prepared = prepare_portfolio(
        frames, spec=spec or cfg.features, split=cfg.split, norm=cfg.norm,
        norm_scope=cfg.norm_scope, market_features=cfg.market_features,
        normalisers=normalisers, market_normaliser=market_normaliser, fold=fold,
    )
    prepared.full.meta["sources"] = list(sources)
    return prepared
