"""Several assets' candles on one clock: features per asset, splits, train-only normalisers.

:func:`prepare_portfolio` is the multi-asset :func:`~coinrl.pipeline.splits.prepare_data_for_model`:

1. every asset is featured on its own candles with the same :class:`FeatureSpec` (causal);
2. the clock is the union of the assets' bar open times (one timeframe, checked);
3. point-in-time universe: an asset is tradable on a bar only when it has a candle there and
   its features are past their warm-up; before its first candle it does not exist for the
   books (no survivorship look-ahead); missing bars are flat bars at its last close (see
   :class:`~coinrl.pipeline.dataset.PortfolioData` for why);
4. optional market-wide feature ``basket_ret_1``: the mean one-bar log return of the assets
   tradable on this bar and the previous one (0 when none), a cross-asset feature that uses
   bars ``<= t`` only;
5. chronological split of the clock rows; normalisers fitted on the TRAIN rows only, one per
   asset (``norm_scope="per_asset"``) or one over all assets' train rows (``"pooled"``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from .dataset import PortfolioData
from .errors import ConfigError, DataError
from .features import FeatureSpec, coerce_spec, feature_engineering
from .splits import (
    Fold,
    Normaliser,
    NormConfig,
    SplitConfig,
    _coerce,
    _timeframe_of,
    split_bounds,
    walk_forward_folds,
)

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
NormScope = Literal["per_asset", "pooled"]
MARKET_FEATURES = ("basket_ret_1",)


@dataclass(frozen=True, eq=False)
class PreparedPortfolio:
    """What :func:`prepare_portfolio` produces.

    Attributes:
        train, validation, test, full: PortfolioData parts (views of ``full``'s arrays).
        normalisers: one per asset (``per_asset``) or a single one (``pooled``), fitted on the
            train rows where the asset was tradable.
        market_normaliser: the market-wide features' normaliser (None without them).
        spec, split, norm, norm_scope: the configs used.
        main_fold: the split's row ranges into ``full``.
    """

    train: PortfolioData
    validation: PortfolioData
    test: PortfolioData
    full: PortfolioData
    normalisers: tuple[Normaliser, ...]
    market_normaliser: Normaliser | None
    spec: FeatureSpec
    split: SplitConfig
    norm: NormConfig
    norm_scope: NormScope
    main_fold: Fold

    @property
    def asset_fingerprints(self) -> dict[str, str]:
        """sha256 hex per asset of its candles on the clock (``ts_ms``, OHLCV, funding and the
        tradable mask of ``full``), keyed by symbol."""
        return {sym: portfolio_fingerprint(self.full, a) for a, sym in enumerate(self.full.symbols)}

    @property
    def data_fingerprint(self) -> str:
        """sha256 hex of every asset's candles on the clock (see :attr:`asset_fingerprints`)."""
        return portfolio_fingerprint(self.full)


def portfolio_fingerprint(data: PortfolioData, asset: int | None = None) -> str:
    """sha256 hex of a portfolio's clock and candle arrays (one asset's, or all of them).

    Hashes ``ts_ms`` (int64) and, per asset, the symbol, open/high/low/close/volume/funding
    (float64) and the tradable mask, little-endian: the same candles give the same hash.
    """
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data.ts_ms, dtype="<i8").tobytes())
    for a in range(data.n_assets) if asset is None else (asset,):
        h.update(data.symbols[a].encode())
        for col in (data.open, data.high, data.low, data.close, data.volume, data.funding_rate):
            h.update(np.ascontiguousarray(col[:, a], dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(data.tradable[:, a], dtype=np.uint8).tobytes())
    return h.hexdigest()


def _fold(n_rows: int, split: SplitConfig, i: int) -> Fold:
    """Walk-forward fold ``i`` of ``n_rows`` clock rows.

    Raises:
        ConfigError: no walk-forward folds configured, or ``i`` out of range.
    """
    folds = walk_forward_folds(n_rows, split)
    if not 0 <= i < len(folds):
        raise ConfigError(
            f"fold {i} does not exist: split.walk_forward_folds={split.walk_forward_folds} "
            f"gives {len(folds)} fold(s); pass 0..{len(folds) - 1} or set walk_forward_folds"
        )
    return folds[i]


def _symbol(frame: pd.DataFrame, i: int) -> str:
    return str(frame.attrs.get("symbol") or f"asset{i}")


def _check_assets(frames: Sequence[pd.DataFrame]) -> tuple[list[str], str]:
    """Names and the common timeframe; errors name the asset that does not fit."""
    if not frames:
        raise DataError("a portfolio needs at least one asset; pass one or more candle frames")
    names = [_symbol(f, i) for i, f in enumerate(frames)]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"assets {dup} appear more than once; give each asset one source")
    tfs = []
    for f, name in zip(frames, names, strict=True):
        ts = f["ts_ms"].to_numpy(dtype=np.int64)
        if len(ts) == 0:
            raise DataError(f"{name} has no candles")
        tfs.append(_timeframe_of(f, ts))
    for tf, name in zip(tfs, names, strict=True):
        if tf != tfs[0]:
            raise DataError(
                f"{name} is on timeframe {tf} but {names[0]} is on {tfs[0]}; a portfolio trades "
                "one clock: resample or fetch every asset on the same timeframe"
            )
    if len(frames) > 1:
        spans = [(int(f["ts_ms"].iloc[0]), int(f["ts_ms"].iloc[-1])) for f in frames]
        alone = [
            f"{names[i]} ({lo}..{hi} ts_ms)"
            for i, (lo, hi) in enumerate(spans)
            if not any(lo <= o_hi and o_lo <= hi for j, (o_lo, o_hi) in enumerate(spans) if j != i)
        ]
        if alone:
            raise DataError(
                f"{', '.join(alone)}: no bar overlaps any other asset's bars; drop it or load "
                "data covering a common period"
            )
    return names, tfs[0]


def prepare_portfolio(
    frames: Sequence[pd.DataFrame],
    spec: FeatureSpec | Mapping[str, Any] | None = None,
    split: SplitConfig | Mapping[str, Any] | None = None,
    norm: NormConfig | Mapping[str, Any] | None = None,
    *,
    norm_scope: NormScope = "per_asset",
    market_features: bool = False,
    normalisers: Sequence[Normaliser] | None = None,
    market_normaliser: Normaliser | None = None,
    fold: int | Fold | None = None,
) -> PreparedPortfolio:
    """Cleaned candles of A assets -> one clock, per-asset features, split, train-only norm.

    Args:
        frames: cleaned candle frames, one per asset (``attrs["symbol"]`` names it).
        spec: the feature spec run on every asset.
        split: chronological split of the common clock's rows.
        norm: normalisation method and clip.
        norm_scope: ``per_asset`` or ``pooled`` (see module doc).
        market_features: add the market-wide ``basket_ret_1`` feature.
        normalisers, market_normaliser: already fitted normalisers (a trained agent's: one per
            asset, or one pooled, as ``norm_scope`` says) applied instead of fitting new ones,
            so new candles get the observations the agent was trained on.
        fold: walk-forward fold ``i`` (of ``split.walk_forward_folds``) instead of the single
            split: its train/validation/test rows, and normalisers fitted on its train rows; or a
            :class:`~coinrl.pipeline.splits.Fold` of row ranges into the clock (the tuner's folds).

    Raises:
        DataError: assets on different timeframes, an asset with no overlap, an asset with no
            training rows under ``per_asset`` scaling (each names the asset).
    """
    spec = coerce_spec(spec)
    if spec.fitted_kinds:
        raise ConfigError(
            f"feature kinds {list(spec.fitted_kinds)} are fitted on one market's training rows "
            "and are not supported for portfolios yet; remove them from the portfolio's spec"
        )
    split_cfg = _coerce(SplitConfig, split)
    norm_cfg = _coerce(NormConfig, norm)
    names, timeframe = _check_assets(frames)
    feats = []
    for f, name in zip(frames, names, strict=True):
        try:
            feats.append(feature_engineering(f, spec))
        except DataError as e:
            raise DataError(f"{name}: {e}") from e
    clock = np.unique(np.concatenate([f["ts_ms"].to_numpy(dtype=np.int64) for f in frames]))
    t_all, a_n, f_n = len(clock), len(frames), len(spec.feature_names)
    cols = {k: np.empty((t_all, a_n)) for k in ("open", "high", "low", "close", "volume", "funding_rate")}
    tradable = np.zeros((t_all, a_n), dtype=bool)
    raw = np.full((t_all, a_n, f_n), np.nan)
    for a, (f, ff) in enumerate(zip(frames, feats, strict=True)):
        ts = f["ts_ms"].to_numpy(dtype=np.int64)
        pos = np.searchsorted(clock, ts)
        present = np.zeros(t_all, dtype=bool)
        present[pos] = True
        close = f["close"].to_numpy(dtype=np.float64)
        src = np.cumsum(present) - 1  # index of the last candle at or before each row (-1: none)
        held = close[np.clip(src, 0, None)]
        held[src < 0] = float(f["open"].iloc[0])  # placeholder before listing (never read)
        for k in ("open", "high", "low", "close"):
            col = held.copy()
            col[pos] = f[k].to_numpy(dtype=np.float64)
            cols[k][:, a] = col
        vol = np.zeros(t_all)
        vol[pos] = f["volume"].to_numpy(dtype=np.float64)
        cols["volume"][:, a] = vol
        fr = np.zeros(t_all)
        if "funding_rate" in f.columns:
            fr[pos] = f["funding_rate"].to_numpy(dtype=np.float64)
        cols["funding_rate"][:, a] = fr
        fpos = np.searchsorted(clock, ff["ts_ms"].to_numpy(dtype=np.int64))
        tradable[fpos, a] = True
        raw[fpos, a] = ff[list(spec.feature_names)].to_numpy(dtype=np.float64)
    mkt_raw = np.zeros((t_all, 0))
    if market_features:
        lr = np.zeros((t_all, a_n))
        lr[1:] = np.log(cols["close"][1:] / cols["close"][:-1])
        both = tradable.copy()
        both[1:] &= tradable[:-1]
        both[0] = False
        n_ok = both.sum(axis=1)
        basket = np.divide((lr * both).sum(axis=1), n_ok, out=np.zeros(t_all), where=n_ok > 0)
        mkt_raw = basket[:, None]
    first = int(np.flatnonzero(tradable.any(axis=1))[0])
    clock = clock[first:]
    cols = {k: np.ascontiguousarray(v[first:]) for k, v in cols.items()}
    tradable, raw, mkt_raw = tradable[first:], raw[first:], mkt_raw[first:]
    t_n = len(clock)
    main = (split_bounds(t_n, split_cfg) if fold is None
            else fold if isinstance(fold, Fold) else _fold(t_n, split_cfg, fold))
    train_rows = np.zeros(t_n, dtype=bool)
    train_rows[main.train.start : main.train.stop] = True
    x = np.zeros((t_n, a_n, f_n), dtype=np.float32)
    if normalisers is not None:
        fitted_given = tuple(normalisers)
        want = 1 if norm_scope == "pooled" else a_n
        if len(fitted_given) != want or any(n.names != spec.feature_names for n in fitted_given):
            raise ConfigError(
                f"{len(fitted_given)} fitted normaliser(s) given for {a_n} asset(s) with "
                f"norm_scope={norm_scope!r} (need {want}, each over the spec's features "
                f"{list(spec.feature_names)}); pass the normalisers the agent was trained with"
            )
        if market_features and market_normaliser is None:
            raise ConfigError("market_features=True with fitted normalisers needs the fitted "
                              "market_normaliser too")
        for a in range(a_n):
            ok = tradable[:, a]
            x[ok, a] = fitted_given[0 if norm_scope == "pooled" else a].transform(raw[ok, a])
        normalisers = fitted_given
    elif norm_scope == "pooled":
        sel = tradable & train_rows[:, None]
        if not sel.any():
            raise DataError("no asset is tradable in the training rows; move the split or add data")
        pooled = Normaliser.fit(raw[sel], spec.feature_names, norm_cfg)
        normalisers = (pooled,)
        for a in range(a_n):
            ok = tradable[:, a]
            x[ok, a] = pooled.transform(raw[ok, a])
    elif norm_scope == "per_asset":
        fitted = []
        for a in range(a_n):
            ok = tradable[:, a]
            sel = ok & train_rows
            if sel.sum() < 2:
                raise DataError(
                    f"{names[a]} has {int(sel.sum())} tradable training rows, too few to fit its "
                    "own normaliser (it lists after the training period); use norm_scope='pooled'"
                )
            nz = Normaliser.fit(raw[sel, a], spec.feature_names, norm_cfg)
            fitted.append(nz)
            x[ok, a] = nz.transform(raw[ok, a])
        normalisers = tuple(fitted)
    else:
        raise DataError(f"norm_scope must be 'per_asset' or 'pooled', got {norm_scope!r}")
    mkt_norm = None
    mkt_x = np.zeros((t_n, 0), dtype=np.float32)
    if market_features:
        mkt_norm = market_normaliser or Normaliser.fit(mkt_raw[train_rows], MARKET_FEATURES, norm_cfg)
        mkt_x = mkt_norm.transform(mkt_raw)
    full = PortfolioData(
        ts_ms=np.ascontiguousarray(clock), tradable=np.ascontiguousarray(tradable),
        features=x, feature_names=spec.feature_names, symbols=tuple(names),
        market_features=np.ascontiguousarray(mkt_x),
        market_feature_names=MARKET_FEATURES if market_features else (),
        timeframe=timeframe, exchange=str(frames[0].attrs.get("exchange", "")),
        meta={"split": "full", "norm_scope": norm_scope,
              "feature_spec_fingerprint": spec.fingerprint(),
              **({} if fold is None else {"fold": main.index})},
        **cols,
    )
    parts = {}
    for name, rows in main.parts().items():
        part = full.slice(rows.start, rows.stop)
        part.meta.update({"split": name, "row_start": rows.start, "row_stop": rows.stop})
        parts[name] = part
    logger.info(
        "portfolio assets=%s timeframe=%s rows=%d train=%d validation=%d test=%d features=%d "
        "norm_scope=%s market_features=%d",
        ",".join(names), timeframe, t_n, len(main.train), len(main.validation), len(main.test),
        f_n, norm_scope, mkt_x.shape[1],
    )
    return PreparedPortfolio(
        train=parts["train"], validation=parts["validation"], test=parts["test"], full=full,
        normalisers=tuple(normalisers), market_normaliser=mkt_norm, spec=spec, split=split_cfg,
        norm=norm_cfg, norm_scope=norm_scope, main_fold=main,
    )


__all__ = ["MARKET_FEATURES", "NormScope", "PreparedPortfolio", "portfolio_fingerprint", "prepare_portfolio"]
