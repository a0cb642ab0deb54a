"""The tuner's data for a portfolio: walk-forward folds over the clock rows before the test split.

One frame carries every asset's cleaned candles through the tuner (the Optuna workers read it
from one Parquet file, as a single market's candles): :func:`load_stacked_candles` stacks them
with an ``asset`` column (0..A-1) and each asset's frame attributes in
``attrs["portfolio_assets"]``; :func:`unstack_candles` gives the frames back.

:func:`portfolio_tuning_folds` cuts every asset's candles at the test split's first clock row
BEFORE any feature is computed (the split is placed from the timestamps alone), so no test price
reaches a feature, a normaliser or an env; each fold's normalisers are fitted on that fold's
train rows only (:func:`~coinrl.pipeline.portfolio.prepare_portfolio` with the fold's rows).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.portfolio import PreparedPortfolio, prepare_portfolio
from coinrl.pipeline.source import DataConfig, PortfolioDataConfig, load_candles, resolve_symbols
from coinrl.pipeline.splits import Fold, split_bounds

from ..tune_space import FoldMode
from .data import _fold_layout

logger = logging.getLogger(__name__)

ASSET_COLUMN = "asset"
"""Column of the stacked frame holding each candle's asset index (0..A-1)."""
ASSETS_ATTR = "portfolio_assets"
"""``attrs`` key of the stacked frame: each asset's frame attributes (symbol, timeframe, ...)."""


def is_stacked(candles: pd.DataFrame) -> bool:
    """Whether ``candles`` is a portfolio's stacked frame (:func:`load_stacked_candles`)."""
    return ASSETS_ATTR in candles.attrs


def stack_candles(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One frame of A assets' candles: an ``asset`` column and each frame's attrs kept."""
    parts = [f.assign(**{ASSET_COLUMN: a}) for a, f in enumerate(frames)]
    out = pd.concat(parts, ignore_index=True)
    out.attrs = {ASSETS_ATTR: [dict(f.attrs) for f in frames]}
    return out


def unstack_candles(candles: pd.DataFrame) -> list[pd.DataFrame]:
    """The per-asset frames of a stacked frame, in asset order, with their attrs."""
    metas: list[dict[str, Any]] = list(candles.attrs[ASSETS_ATTR])
    codes = candles[ASSET_COLUMN].to_numpy()
    frames = []
    for a, meta in enumerate(metas):
        f = candles.loc[codes == a].drop(columns=[ASSET_COLUMN]).reset_index(drop=True)
        f.attrs = dict(meta)
        frames.append(f)
    return frames


def load_stacked_candles(cfg: PortfolioDataConfig) -> pd.DataFrame:
    """Every asset's cleaned candles (``sources`` then ``symbols``), stacked.

    Raises:
        DataError: a source that cannot be read or a symbol not stored.
    """
    sources = cfg.sources + resolve_symbols(cfg.symbols, cfg.data_dir, cfg.timeframe)
    sources = sources or (cfg.source,)
    return stack_candles([load_candles(DataConfig(source=s, format=cfg.format, clean=cfg.clean))
                          for s in sources])


def _clock(frames: Sequence[pd.DataFrame], warm: int) -> np.ndarray:
    """The common clock's timestamps from the first feature row on (timestamps only)."""
    clock = np.unique(np.concatenate([f["ts_ms"].to_numpy(dtype=np.int64) for f in frames]))
    starts = [int(f["ts_ms"].iloc[warm]) for f in frames if len(f) > warm]
    if not starts:
        raise DataError(f"no asset has more candles than the {warm}-bar feature warm-up; load a longer history")
    return clock[clock >= min(starts)]


def portfolio_tuning_folds(
    candles: pd.DataFrame, data: PortfolioDataConfig, folds: int = 1, mode: FoldMode = "anchored"
) -> tuple[tuple[PreparedPortfolio, ...], int]:
    """``(folds, dev_rows)``: train/validation folds over the clock rows before the test split.

    The test split is placed on the common clock from timestamps alone; every asset's candles are
    cut at its first row before features are computed (the test prices are never read: they may
    be anything, even NaN). With ``folds=1`` the fold is the experiment's own train/validation
    split. Each fold's ``test`` is empty.

    Args:
        candles: the stacked candles of the whole history (:func:`load_stacked_candles`).
        data: the portfolio data section (features, split, norm, norm scope, market features).
        folds: walk-forward folds inside the pre-test rows (1 = the main split).
        mode: ``anchored`` or ``rolling`` folds.

    Raises:
        ConfigError: no validation split to tune on.
        DataError: too few rows for the warm-up, the split or the folds.
    """
    split = data.split
    if split.validation <= 0:
        raise ConfigError(
            "data.split.validation is 0: the tuner scores trials on the validation split; give "
            "it a share (e.g. validation: 0.15)"
        )
    frames = unstack_candles(candles)
    clock = _clock(frames, data.features.warmup_bars)
    main = split_bounds(len(clock), split)
    dev_rows = main.validation.stop
    if dev_rows >= len(clock):
        raise DataError("the split leaves no test rows to cut before; give data.split.test a share")
    cut = int(clock[dev_rows])
    dev = []
    for f in frames:
        d = f.loc[f["ts_ms"].to_numpy(dtype=np.int64) < cut].reset_index(drop=True)
        d.attrs = dict(f.attrs)
        dev.append(d)
    out = []
    for i, (tr, va) in enumerate(_fold_layout(dev_rows, main, split, folds, mode)):
        p = prepare_portfolio(
            dev, spec=data.features, split=split, norm=data.norm, norm_scope=data.norm_scope,
            market_features=data.market_features, fold=Fold(i, tr, va, range(dev_rows, dev_rows)),
        )
        if len(p.full) != dev_rows or int(p.full.ts_ms[0]) != int(clock[0]):
            raise DataError(
                f"the pre-test clock has {len(p.full)} rows, expected {dev_rows}; an asset's "
                "feature warm-up is not its first rows (uncleaned gaps?)"
            )
        out.append(p)
    logger.info("portfolio tuning data symbols=%s rows_before_test=%d folds=%d mode=%s train=%s validation=%s",
                ",".join(out[0].full.symbols), dev_rows, len(out), mode,
                [len(p.train) for p in out], [len(p.validation) for p in out])
    return tuple(out), dev_rows


def load_tuning_candles(data: DataConfig) -> pd.DataFrame:
    """What the tuner reads: one market's cleaned candles, or a portfolio's stacked candles."""
    if isinstance(data, PortfolioDataConfig):
        return load_stacked_candles(data)
    return load_candles(data)


def prepare_best_portfolio(
    candles: pd.DataFrame, data: PortfolioDataConfig, train_and_validation: bool
) -> PreparedPortfolio:
    """The best trial's portfolio data: the experiment's own split of every clock row (the test
    rows ARE read now, once), or with ``train_and_validation`` one train part over rows
    ``[0, validation.stop)`` (normalisers fitted on them) and no validation."""
    frames = unstack_candles(candles)
    kw: dict[str, Any] = {"spec": data.features, "split": data.split, "norm": data.norm,
                          "norm_scope": data.norm_scope, "market_features": data.market_features}
    prepared = prepare_portfolio(frames, **kw)
    if not train_and_validation:
        return prepared
    m = prepared.main_fold
    stop = m.validation.stop
    return prepare_portfolio(frames, **kw, fold=Fold(0, range(0, stop), range(stop, stop), m.test))


__all__ = [
    "ASSETS_ATTR",
    "ASSET_COLUMN",
    "is_stacked",
    "load_stacked_candles",
    "load_tuning_candles",
    "portfolio_tuning_folds",
    "prepare_best_portfolio",
    "stack_candles",
    "unstack_candles",
]
