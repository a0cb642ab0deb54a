"""The tuner's data: walk-forward folds over the rows before the test split.

The candles are cut at the test split's first bar BEFORE any feature is computed, so no test
price reaches a feature, a normaliser or an env.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.features import FeatureSpec, feature_engineering, fit_feature_spec
from coinrl.pipeline.portfolio import PreparedPortfolio
from coinrl.pipeline.source import DataConfig
from coinrl.pipeline.splits import (
    Fold,
    Normaliser,
    PreparedData,
    SplitConfig,
    candles_fingerprint,
    make_market_data,
    split_bounds,
    walk_forward_folds,
)

from ..tune_space import FoldMode

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class TuningData:
    """Walk-forward folds over the rows before the test split.

    Attributes:
        folds: one :class:`~coinrl.pipeline.splits.PreparedData` per fold: ``train`` and
            ``validation`` normalised with a normaliser fitted on that fold's train rows;
            ``test`` is EMPTY (0 rows) and ``full`` stops before the test split.
        dev_rows: feature rows before the test split (train, embargo, validation).
        dev_candles: candle rows the features were computed from (warm-up + ``dev_rows``;
            for a portfolio's folds, :mod:`~coinrl.agents.tune.portfolio_data`, the clock
            rows before the test split).
    """

    folds: tuple[PreparedData | PreparedPortfolio, ...]
    dev_rows: int
    dev_candles: int


def _fold_layout(
    dev_rows: int, main: Fold, split: SplitConfig, folds: int, mode: FoldMode
) -> list[tuple[range, range]]:
    if folds == 1:
        return [(main.train, main.validation)]
    val_share = split.validation / (split.train + split.validation)
    wf = SplitConfig(
        train=1.0 - val_share,
        validation=0.0,
        test=val_share,
        embargo_bars=split.embargo_bars,
        walk_forward_folds=folds,
        walk_forward_mode=mode,
    )
    # each walk-forward fold's "test" block is the tuning validation block
    return [(f.train, f.test) for f in walk_forward_folds(dev_rows, wf)]


def tuning_folds(
    candles: pd.DataFrame,
    data: DataConfig,
    folds: int = 1,
    mode: FoldMode = "anchored",
) -> TuningData:
    """The tuner's data: ``folds`` train/validation folds over the rows before the test split.

    The candles are cut at the test split's first bar BEFORE features are computed, so the
    test rows are never read (their prices may be anything, even NaN). With ``folds=1`` the one
    fold is exactly the experiment's own train/validation split (same rows, same normaliser as
    :func:`~coinrl.pipeline.splits.prepare_data_for_model` on all the candles).

    Args:
        candles: cleaned candles of the whole history (train, validation AND test span).
        data: the data section (feature spec, split, normalisation).
        folds: walk-forward folds inside the pre-test rows (1 = the main split).
        mode: ``anchored`` or ``rolling`` folds.

    Returns:
        The :class:`TuningData`.

    Raises:
        ConfigError: no validation split to tune on.
        DataError: too few rows for the warm-up, the split or the folds.
    """
    spec: FeatureSpec = data.features
    split = data.split
    if split.validation <= 0:
        raise ConfigError(
            "data.split.validation is 0: the tuner scores trials on the validation split; give "
            "it a share (e.g. validation: 0.15)"
        )
    warm = spec.warmup_bars
    n_rows = len(candles) - warm
    if n_rows < 2:
        raise DataError(
            f"{len(candles)} candles leave {max(n_rows, 0)} feature rows after a {warm}-bar "
            "warm-up; load a longer history"
        )
    main = split_bounds(n_rows, split)
    dev_rows = main.validation.stop
    n_candles = warm + dev_rows
    dev = candles.iloc[:n_candles].reset_index(drop=True)
    dev.attrs.update(candles.attrs)
    # Fitted kinds (hmm_regime) are fitted on training rows only: the main split's here (what
    # prepare_data_for_model fits them on), each other fold's in the loop below.
    base_spec = fit_feature_spec(dev, spec, range(warm + main.train.start, warm + main.train.stop))
    frame = feature_engineering(dev, base_spec)
    if len(frame) != dev_rows:  # the warm-up is exactly spec.warmup_bars rows
        raise DataError(
            f"feature rows {len(frame)} != expected {dev_rows}; the spec's warm-up changed"
        )
    names = spec.feature_names
    raw = frame[list(names)].to_numpy(dtype=np.float64)
    fingerprint = candles_fingerprint(dev)
    out = []
    for i, (tr, va) in enumerate(_fold_layout(dev_rows, main, split, folds, mode)):
        fold_spec, fold_frame, fold_raw = base_spec, frame, raw
        if spec.fitted_kinds and tr != main.train:
            fold_spec = fit_feature_spec(dev, spec, range(warm + tr.start, warm + tr.stop))
            fold_frame = feature_engineering(dev, fold_spec)
            fold_raw = fold_frame[list(names)].to_numpy(dtype=np.float64)
        norm = Normaliser.fit(fold_raw[tr.start : tr.stop], names, data.norm)
        full = make_market_data(
            dev, fold_frame, norm, split="tune", meta={"fold": i, "data_fingerprint": fingerprint}
        )
        parts: dict[str, MarketData] = {}
        for name, rows in (("train", tr), ("validation", va), ("test", range(dev_rows, dev_rows))):
            md = full.slice(rows.start, rows.stop)
            md.meta.update({"split": name, "row_start": rows.start, "row_stop": rows.stop})
            parts[name] = md
        out.append(
            PreparedData(
                train=parts["train"],
                validation=parts["validation"],
                test=parts["test"],
                full=full,
                raw_features=fold_raw,
                normaliser=norm,
                spec=fold_spec,
                split=split,
                norm=data.norm,
                folds=(),
                main_fold=Fold(i, tr, va, range(dev_rows, dev_rows)),
                data_fingerprint=fingerprint,
                warmup_rows_dropped=warm,
            )
        )
    logger.info(
        "tuning data symbol=%s rows_before_test=%d folds=%d mode=%s train=%s validation=%s",
        candles.attrs.get("symbol", "?"),
        dev_rows,
        len(out),
        mode,
        [len(p.train) for p in out],
        [len(p.validation) for p in out],
    )
    return TuningData(tuple(out), dev_rows, n_candles)
