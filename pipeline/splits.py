"""Time splits, walk-forward folds with embargo, the train-only normaliser, and the hand-off.

:func:`prepare_data_for_model` is the one road from cleaned candles to the float32
:class:`~coinrl.pipeline.dataset.MarketData` the envs consume:

1. features from the :class:`~coinrl.pipeline.features.FeatureSpec` (causal, warm-up rows
   dropped from features and candles alike, so row ``t`` of both is the same bar); entries
   with fitted parameters (``hmm_regime``) are fitted on the TRAIN rows first, and the fitted
   spec is the one returned (and saved in bundles);
2. a chronological train / validation / test split with ``embargo_bars`` dropped between
   consecutive parts (and walk-forward folds, if asked for);
3. a :class:`Normaliser` fitted on the TRAIN rows only and applied to all three parts.

Live trading rebuilds identical observation rows from new candles with the saved spec and
normaliser through :func:`market_data_from_spec` (or :func:`make_market_data`).

Split layout over ``n`` rows (``e`` = ``embargo_bars``)::

    [ train | e | validation | e | test ]

sizes ``floor(fraction * usable)`` for validation and test (``usable = n - gaps``), train takes
the rest. Walk-forward with ``k`` folds slides that layout (a window of ``W`` rows) forward by
the test size, so the test blocks tile the end of the data and the last one ends at row ``n``;
``anchored`` folds keep every train part starting at row 0 (expanding), ``rolling`` ones keep
its length.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import Field, model_validator

from .config import Fraction, FrozenModel, validate_config
from .dataset import MarketData
from .errors import ConfigError, DataError
from .features import (
    FeatureSpec,
    check_candles,
    coerce_spec,
    feature_engineering,
    fit_feature_spec,
)
from .timeframes import ms_to_timeframe

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

M = TypeVar("M", bound=FrozenModel)

_EPS = 1e-9


# --------------------------------------------------------------------------- configs


class SplitConfig(FrozenModel):
    """Chronological split of the feature rows (after warm-up).

    Attributes:
        train, validation, test: fractions of the usable rows; they must sum to 1 and train
            must be > 0.
        embargo_bars: bars dropped between consecutive non-empty parts, so no feature window or
            reward horizon of one part reaches into the next. Set it to at least the feature
            spec's ``warmup_bars`` for parts that share no bar at all.
        walk_forward_folds: number of walk-forward folds (0: none, only the single split).
        walk_forward_mode: ``anchored`` (train always starts at row 0, expanding) or
            ``rolling`` (fixed-length train window).
    """

    train: Fraction = 0.7
    validation: Fraction = 0.15
    test: Fraction = 0.15
    embargo_bars: int = Field(default=0, ge=0)
    walk_forward_folds: int = Field(default=0, ge=0)
    walk_forward_mode: Literal["anchored", "rolling"] = "anchored"

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + validation + test must sum to 1, got {self.train} + {self.validation} "
                f"+ {self.test} = {total:g}"
            )
        if self.train <= 0:
            raise ValueError("train must be > 0: the normaliser and the agent need training rows")
        if self.walk_forward_folds > 0 and self.test <= 0:
            raise ValueError("walk-forward folds step by the test size, so test must be > 0")
        return self


class NormConfig(FrozenModel):
    """How features are scaled; the statistics come from the training rows only.

    Attributes:
        method: ``zscore`` (mean/std), ``robust`` (median and IQR/1.349, which equals the std
            for normal data) or ``none`` (no centring or scaling).
        clip: clip normalised values to ``[-clip, clip]``; None keeps them as they are.
    """

    method: Literal["zscore", "robust", "none"] = "zscore"
    clip: float | None = Field(default=5.0, gt=0.0)


def _coerce(model: type[M], value: M | Mapping[str, Any] | None) -> M:
    if value is None:
        return model()
    if isinstance(value, model):
        return value
    if isinstance(value, Mapping):
        return validate_config(model, dict(value), source=model.__name__)
    raise ConfigError(f"expected a {model.__name__}, a mapping or None, got {type(value).__name__}")


# --------------------------------------------------------------------------- folds


@dataclass(frozen=True)
class Fold:
    """Row ranges (into the feature rows) of one split; ordered, disjoint, embargo respected."""

    index: int
    train: range
    validation: range
    test: range

    def parts(self) -> dict[str, range]:
        """``{"train": ..., "validation": ..., "test": ...}``."""
        return {"train": self.train, "validation": self.validation, "test": self.test}


def _layout(n_rows: int, config: SplitConfig, k: int) -> list[Fold]:
    e = config.embargo_bars
    has_val = config.validation > 0
    has_test = config.test > 0
    gap_train = e if (has_val or has_test) else 0
    gap_val = e if (has_val and has_test) else 0
    usable = n_rows - gap_train - gap_val
    window = usable / (1.0 + (k - 1) * config.test)
    n_test = math.floor(config.test * window + _EPS)
    n_val = math.floor(config.validation * window + _EPS)
    n_train = usable - n_val - k * n_test
    if n_train < 1 or (has_val and n_val < 1) or (has_test and n_test < 1):
        raise DataError(
            f"{n_rows} rows are too few for train/validation/test = {config.train}/"
            f"{config.validation}/{config.test} with embargo_bars={e} and {k} fold(s) "
            f"(would get {n_train}/{n_val}/{n_test} rows); use more data, fewer folds or a "
            "smaller embargo"
        )
    folds = []
    for i in range(k):
        t0 = n_rows - (k - i) * n_test
        v1 = t0 - gap_val
        v0 = v1 - n_val
        tr1 = v0 - gap_train
        tr0 = 0 if config.walk_forward_mode == "anchored" else tr1 - n_train
        folds.append(Fold(i, range(tr0, tr1), range(v0, v1), range(t0, t0 + n_test)))
    return folds


def split_bounds(n_rows: int, config: SplitConfig | None = None) -> Fold:
    """The single chronological split of ``n_rows`` rows.

    Example:
        >>> f = split_bounds(100, SplitConfig(train=0.6, validation=0.2, test=0.2, embargo_bars=2))
        >>> f.train, f.validation, f.test
        (range(0, 58), range(60, 79), range(81, 100))
    """
    return _layout(n_rows, config or SplitConfig(), 1)[0]


def walk_forward_folds(n_rows: int, config: SplitConfig) -> list[Fold]:
    """Walk-forward folds over ``n_rows`` rows (empty list when ``walk_forward_folds == 0``).

    Each fold is the train/validation/test layout over a window; windows step forward by the
    test size so the test blocks are contiguous, disjoint and end at ``n_rows``. Anchored folds
    start training at row 0, rolling ones keep the train length of fold 0.

    Example:
        >>> cfg = SplitConfig(train=0.6, validation=0.2, test=0.2, embargo_bars=2,
        ...                   walk_forward_folds=3, walk_forward_mode="rolling")
        >>> [(f.train, f.test) for f in walk_forward_folds(100, cfg)][0]
        (range(0, 44), range(61, 74))
    """
    if config.walk_forward_folds == 0:
        return []
    return _layout(n_rows, config, config.walk_forward_folds)


# --------------------------------------------------------------------------- normaliser


def _as_2d(x: npt.ArrayLike, n_cols: int, what: str) -> F64:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != n_cols:
        raise DataError(f"{what} must be a (rows, {n_cols}) matrix, got shape {a.shape}")
    return a


@dataclass(frozen=True, eq=False)
class Normaliser:
    """Per-feature affine scaling ``(x - center) / scale``, then clipping, to float32.

    Build it with :meth:`fit` on training rows only; it serialises with :meth:`to_dict` into
    the model bundle and comes back with :meth:`from_dict` for live trading.
    """

    method: Literal["zscore", "robust", "none"]
    clip: float | None
    names: tuple[str, ...]
    center: F64
    scale: F64

    def __post_init__(self) -> None:
        for arr in (self.center, self.scale):
            arr.setflags(write=False)

    @classmethod
    def fit(
        cls,
        train_features: npt.ArrayLike,
        names: Sequence[str],
        config: NormConfig | Mapping[str, Any] | None = None,
    ) -> Normaliser:
        """Fit on the TRAINING rows only (never on validation/test or the whole series).

        A feature with (near) zero spread gets scale 1, so it is centred but not blown up; a
        warning names it.

        Args:
            train_features: ``(rows, F)`` raw feature values of the training part.
            names: the ``F`` feature names, in column order.
            config: :class:`NormConfig` (default z-score, clip 5).

        Returns:
            The fitted normaliser.
        """
        cfg = _coerce(NormConfig, config)
        names_t = tuple(names)
        x = _as_2d(train_features, len(names_t), "train_features")
        if len(x) == 0:
            raise DataError("cannot fit a normaliser on 0 training rows")
        if not np.isfinite(x).all():
            bad = [names_t[j] for j in np.flatnonzero(~np.isfinite(x).all(axis=0))]
            raise DataError(f"training features {bad} hold NaN/inf; fix the feature frame first")
        f = x.shape[1]
        if cfg.method == "none":
            center, scale = np.zeros(f), np.ones(f)
        elif cfg.method == "zscore":
            center, scale = x.mean(axis=0), x.std(axis=0)
        else:
            center = np.median(x, axis=0)
            q75, q25 = np.percentile(x, [75.0, 25.0], axis=0)
            scale = (q75 - q25) / 1.349
            flat = scale <= 1e-12 * np.maximum(1.0, np.abs(center))
            scale = np.where(flat, x.std(axis=0), scale)
        tiny = scale <= 1e-12 * np.maximum(1.0, np.abs(center))
        if tiny.any():
            logger.warning(
                "normaliser: features with zero spread in the training rows get scale 1: %s",
                [names_t[j] for j in np.flatnonzero(tiny)],
            )
            scale = np.where(tiny, 1.0, scale)
        return cls(
            cfg.method, cfg.clip, names_t, center.astype(np.float64), scale.astype(np.float64)
        )

    def transform(self, x: npt.ArrayLike) -> F32:
        """Normalise ``(rows, F)`` (or one row ``(F,)``) raw features to float32.

        Raises:
            DataError: wrong shape or non-finite input.
        """
        a = np.asarray(x, dtype=np.float64)
        one = a.ndim == 1
        a2 = _as_2d(a[None, :] if one else a, len(self.names), "features")
        if not np.isfinite(a2).all():
            raise DataError(
                "features to normalise hold NaN/inf; compute them with feature_engineering"
            )
        out = ((a2 - self.center) / self.scale).astype(np.float32)
        if self.clip is not None:
            np.clip(out, -self.clip, self.clip, out=out)
        return out[0] if one else out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (plain floats and strings) for the model bundle."""
        return {
            "format": "coinrl.normaliser",
            "version": 1,
            "method": self.method,
            "clip": self.clip,
            "names": list(self.names),
            "center": [float(v) for v in self.center],
            "scale": [float(v) for v in self.scale],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normaliser:
        """Rebuild from :meth:`to_dict` output; a malformed dict is a :class:`ConfigError`."""
        try:
            if data.get("format") != "coinrl.normaliser" or data.get("version") != 1:
                raise ConfigError(
                    f"not a coinrl normaliser v1 dict (format={data.get('format')!r}, "
                    f"version={data.get('version')!r})"
                )
            cfg = validate_config(
                NormConfig, {"method": data["method"], "clip": data["clip"]}, source="normaliser"
            )
            names = tuple(str(n) for n in data["names"])
            center = np.asarray(data["center"], dtype=np.float64)
            scale = np.asarray(data["scale"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"normaliser dict is malformed: {e!r}") from e
        if not (len(names) == len(center) == len(scale)):
            raise ConfigError(
                f"normaliser dict has {len(names)} names, {len(center)} centers, {len(scale)} scales"
            )
        if not (np.isfinite(center).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise ConfigError("normaliser dict has non-finite centers or non-positive scales")
        return cls(cfg.method, cfg.clip, names, center, scale)

    def fingerprint(self) -> str:
        """sha256 hex of the canonical JSON of :meth:`to_dict`."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canon.encode()).hexdigest()


# --------------------------------------------------------------------------- hand-off


def candles_fingerprint(data: pd.DataFrame) -> str:
    """sha256 hex of the candle arrays (``ts_ms`` as int64, OHLCV as float64, little-endian)."""
    h = hashlib.sha256()
    for col, dt in (
        ("ts_ms", "<i8"),
        ("open", "<f8"),
        ("high", "<f8"),
        ("low", "<f8"),
        ("close", "<f8"),
        ("volume", "<f8"),
    ):
        h.update(col.encode())
        h.update(np.ascontiguousarray(data[col].to_numpy(), dtype=dt).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class _Aligned:
    ts_ms: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    funding_rate: F64 | None
    symbol: str
    timeframe: str
    exchange: str


def _timeframe_of(candles: pd.DataFrame, ts: np.ndarray) -> str:
    tf = candles.attrs.get("timeframe")
    if tf:
        return str(tf)
    if len(ts) >= 2:
        return ms_to_timeframe(int(np.diff(ts).min()))
    raise DataError("timeframe unknown; set candles.attrs['timeframe'] (e.g. '1h')")


def _align(candles: pd.DataFrame, features: pd.DataFrame) -> _Aligned:
    """The candle rows that the feature rows belong to (same ``ts_ms``, same order)."""
    ts_c = candles["ts_ms"].to_numpy(dtype=np.int64)
    ts_f = features["ts_ms"].to_numpy(dtype=np.int64)
    start = int(np.searchsorted(ts_c, ts_f[0])) if len(ts_f) else 0
    stop = start + len(ts_f)
    if stop > len(ts_c) or not np.array_equal(ts_c[start:stop], ts_f):
        raise DataError(
            "the feature frame does not line up with the candles (its ts_ms are not a "
            "contiguous run of the candles' ts_ms); compute the features from these candles"
        )
    funding = None
    if "funding_rate" in candles.columns:
        funding = candles["funding_rate"].to_numpy(dtype=np.float64)[start:stop]
        if not np.isfinite(funding).all():
            raise DataError(
                "funding_rate holds NaN/inf; use 0.0 for bars without a funding payment"
            )

    def col(name: str) -> F64:
        return np.ascontiguousarray(candles[name].to_numpy(dtype=np.float64)[start:stop])

    return _Aligned(
        ts_ms=np.ascontiguousarray(ts_c[start:stop]),
        open=col("open"),
        high=col("high"),
        low=col("low"),
        close=col("close"),
        volume=col("volume"),
        funding_rate=None if funding is None else np.ascontiguousarray(funding),
        symbol=str(candles.attrs.get("symbol", "")),
        timeframe=_timeframe_of(candles, ts_c),
        exchange=str(candles.attrs.get("exchange", "")),
    )


def _market_data(
    al: _Aligned, x: F32, names: tuple[str, ...], rows: range, meta: dict[str, Any]
) -> MarketData:
    s = slice(rows.start, rows.stop)
    return MarketData(
        ts_ms=al.ts_ms[s],
        open=al.open[s],
        high=al.high[s],
        low=al.low[s],
        close=al.close[s],
        volume=al.volume[s],
        features=x[s],
        feature_names=names,
        funding_rate=None if al.funding_rate is None else al.funding_rate[s],
        symbol=al.symbol,
        timeframe=al.timeframe,
        exchange=al.exchange,
        meta={**meta, "row_start": rows.start, "row_stop": rows.stop},
    )


def make_market_data(
    candles: pd.DataFrame,
    features: pd.DataFrame,
    normaliser: Normaliser,
    *,
    split: str = "live",
    meta: Mapping[str, Any] | None = None,
) -> MarketData:
    """Join candles with their feature frame and normalise: the live/bundle replay path.

    Args:
        candles: the cleaned candles the features were computed from.
        features: output of :func:`~coinrl.pipeline.features.feature_engineering` on them;
            it must contain every column of ``normaliser.names``.
        normaliser: the normaliser saved with the model.
        split: name stored in ``meta["split"]``.
        meta: more provenance for ``MarketData.meta``.

    Returns:
        MarketData over the feature rows (warm-up rows excluded), features in the
        normaliser's column order.
    """
    missing = [n for n in normaliser.names if n not in features.columns]
    if missing:
        raise DataError(
            f"the feature frame lacks {missing}, which the normaliser was fitted on; compute the "
            "features with the FeatureSpec saved alongside this normaliser"
        )
    al = _align(candles, features)
    x = normaliser.transform(features[list(normaliser.names)].to_numpy(dtype=np.float64))
    info = {
        "split": split,
        "normaliser_fingerprint": normaliser.fingerprint(),
        "feature_spec_fingerprint": features.attrs.get("feature_spec_fingerprint", ""),
        "warmup_rows_dropped": features.attrs.get("warmup_rows_dropped"),
        **(dict(meta) if meta else {}),
    }
    return _market_data(al, x, normaliser.names, range(0, len(al.ts_ms)), info)


def market_data_from_spec(
    candles: pd.DataFrame,
    spec: FeatureSpec | Mapping[str, Any],
    normaliser: Normaliser,
    *,
    split: str = "live",
    meta: Mapping[str, Any] | None = None,
) -> MarketData:
    """Features with a saved spec, then :func:`make_market_data` with the saved normaliser.

    Give it at least ``spec.warmup_bars + 1`` candles; it returns one row per candle after the
    warm-up, identical (to float precision) to the rows training saw for the same bars.
    """
    spec = coerce_spec(spec)
    if spec.feature_names != normaliser.names:
        raise DataError(
            f"the spec's features {list(spec.feature_names)} differ from the normaliser's "
            f"{list(normaliser.names)}; load both from the same model bundle"
        )
    frame = feature_engineering(candles, spec)
    return make_market_data(candles, frame, normaliser, split=split, meta=meta)


@dataclass(frozen=True)
class FoldData:
    """One walk-forward fold as MarketData, normalised by a normaliser fitted on its train part.

    ``spec`` is the feature spec with its fitted entries refitted on the fold's train rows and
    ``raw_features`` the un-normalised features of all rows computed with it (the
    :class:`PreparedData`'s own when the spec has no fitted entries).
    """

    fold: Fold
    train: MarketData
    validation: MarketData
    test: MarketData
    normaliser: Normaliser
    spec: FeatureSpec
    raw_features: F64


@dataclass(frozen=True, eq=False)
class PreparedData:
    """Everything :func:`prepare_data_for_model` produces.

    Attributes:
        train, validation, test: the split parts, normalised with ``normaliser``.
        full: all feature rows (the three parts, the embargo rows between them), normalised
            with the same ``normaliser``; for plots and whole-span backtests.
        raw_features: un-normalised float64 features of ``full``'s rows, for per-fold refits.
        normaliser: fitted on the train part only.
        spec, split, norm: the configs used.
        folds: walk-forward folds (row ranges into ``full``); see :meth:`fold_data`.
        main_fold: the single split's row ranges into ``full``.
        data_fingerprint: sha256 of the input candle arrays.
        warmup_rows_dropped: leading candles dropped for the feature warm-up.
        candles: the input candles, kept when the spec has fitted entries so that
            :meth:`fold_data` can refit them on each fold's train rows.
    """

    train: MarketData
    validation: MarketData
    test: MarketData
    full: MarketData
    raw_features: F64
    normaliser: Normaliser
    spec: FeatureSpec
    split: SplitConfig
    norm: NormConfig
    folds: tuple[Fold, ...]
    main_fold: Fold
    data_fingerprint: str
    warmup_rows_dropped: int
    candles: pd.DataFrame | None = None

    def fold_data(self, i: int) -> FoldData:
        """Walk-forward fold ``i`` with its own normaliser fitted on that fold's train rows."""
        if not 0 <= i < len(self.folds):
            raise ConfigError(f"fold {i} does not exist; there are {len(self.folds)} folds")
        fold = self.folds[i]
        tr = fold.train
        spec, raw = self.spec, self.raw_features
        if spec.fitted_kinds and self.candles is not None:
            w = self.warmup_rows_dropped
            spec = fit_feature_spec(self.candles, spec, range(w + tr.start, w + tr.stop))
            raw = feature_engineering(self.candles, spec)[list(spec.feature_names)].to_numpy(
                dtype=np.float64
            )
        norm = Normaliser.fit(raw[tr.start : tr.stop], spec.feature_names, self.norm)
        x = norm.transform(raw)
        al = _aligned_of(self.full)
        base = {
            **self.full.meta,
            "fold": i,
            "normaliser_fingerprint": norm.fingerprint(),
            "feature_spec_fingerprint": spec.fingerprint(),
        }
        parts = {
            name: _market_data(al, x, self.full.feature_names, rows, {**base, "split": name})
            for name, rows in fold.parts().items()
        }
        return FoldData(fold, parts["train"], parts["validation"], parts["test"], norm, spec, raw)


def _aligned_of(md: MarketData) -> _Aligned:
    return _Aligned(
        md.ts_ms,
        md.open,
        md.high,
        md.low,
        md.close,
        md.volume,
        md.funding_rate,
        md.symbol,
        md.timeframe,
        md.exchange,
    )


def prepare_data_for_model(
    data: pd.DataFrame,
    spec: FeatureSpec | Mapping[str, Any] | None = None,
    split: SplitConfig | Mapping[str, Any] | None = None,
    norm: NormConfig | Mapping[str, Any] | None = None,
) -> PreparedData:
    """Cleaned candles -> features -> chronological split -> train-fitted normaliser -> MarketData.

    Args:
        data: cleaned candles (``ts_ms`` int64 UTC ms, OHLCV float64; ``attrs`` symbol/timeframe/
            exchange; an optional ``funding_rate`` column, a fraction per bar, is carried into
            ``MarketData.funding_rate``).
        spec: feature spec (default :func:`~coinrl.pipeline.features.default_feature_spec`).
        split: :class:`SplitConfig` (default 0.7/0.15/0.15, no embargo, no folds).
        norm: :class:`NormConfig` (default z-score clipped at 5).

    Returns:
        :class:`PreparedData`. Each part's ``meta`` holds ``split``, ``data_fingerprint``,
        ``feature_spec_fingerprint``, ``normaliser_fingerprint``, ``warmup_rows_dropped`` and
        its ``row_start``/``row_stop`` in the feature rows.

    Raises:
        ConfigError: invalid spec/split/norm.
        DataError: unusable candles or too few rows for the warm-up and the split.
    """
    spec = coerce_spec(spec)
    split_cfg = _coerce(SplitConfig, split)
    norm_cfg = _coerce(NormConfig, norm)
    if spec.fitted_kinds:
        spec = fit_spec_on_train(data, spec, split_cfg)
    frame = feature_engineering(data, spec)  # validates the candles too
    al = _align(data, frame)
    n = len(frame)
    main = split_bounds(n, split_cfg)
    folds = tuple(walk_forward_folds(n, split_cfg))
    names = spec.feature_names
    raw = frame[list(names)].to_numpy(dtype=np.float64)
    normaliser = Normaliser.fit(raw[main.train.start : main.train.stop], names, norm_cfg)
    x = normaliser.transform(raw)
    dfp = candles_fingerprint(data)
    warmup = int(frame.attrs["warmup_rows_dropped"])
    base = {
        "data_fingerprint": dfp,
        "feature_spec_fingerprint": spec.fingerprint(),
        "normaliser_fingerprint": normaliser.fingerprint(),
        "warmup_rows_dropped": warmup,
        "source": str(data.attrs.get("source", "")),
    }
    parts = {
        name: _market_data(al, x, names, rows, {**base, "split": name})
        for name, rows in main.parts().items()
    }
    full = _market_data(al, x, names, range(0, n), {**base, "split": "full"})
    logger.info(
        "prepared symbol=%s timeframe=%s rows=%d warmup=%d train=%d validation=%d test=%d "
        "embargo=%d folds=%d features=%d norm=%s",
        al.symbol,
        al.timeframe,
        n,
        warmup,
        len(main.train),
        len(main.validation),
        len(main.test),
        split_cfg.embargo_bars,
        len(folds),
        len(names),
        norm_cfg.method,
    )
    return PreparedData(
        train=parts["train"],
        validation=parts["validation"],
        test=parts["test"],
        full=full,
        raw_features=raw,
        normaliser=normaliser,
        spec=spec,
        split=split_cfg,
        norm=norm_cfg,
        folds=folds,
        main_fold=main,
        data_fingerprint=dfp,
        warmup_rows_dropped=warmup,
        candles=data if spec.fitted_kinds else None,
    )


def fit_spec_on_train(
    data: pd.DataFrame,
    spec: FeatureSpec | Mapping[str, Any] | None,
    split: SplitConfig | Mapping[str, Any] | None = None,
) -> FeatureSpec:
    """``spec`` with its fitted entries (``hmm_regime``) fitted on the TRAIN candle rows of the
    single split ``split`` (default :class:`SplitConfig`), as :func:`prepare_data_for_model`
    does; a spec without fitted entries comes back unchanged."""
    spec = coerce_spec(spec)
    split_cfg = _coerce(SplitConfig, split)
    if not spec.fitted_kinds:
        return spec
    check_candles(data, spec.required_columns)
    warmup = spec.warmup_bars
    n = len(data) - warmup
    if n <= 0:
        raise DataError(
            f"{len(data)} candles are too few: the feature spec needs {warmup} warm-up bars plus "
            "at least one more; load a longer history or use shorter windows"
        )
    tr = split_bounds(n, split_cfg).train
    fitted = fit_feature_spec(data, spec, range(warmup + tr.start, warmup + tr.stop))
    logger.info(
        "fitted feature entries %s on candle rows [%d, %d)",
        list(spec.fitted_kinds),
        warmup + tr.start,
        warmup + tr.stop,
    )
    return fitted


__all__ = [
    "Fold",
    "FoldData",
    "NormConfig",
    "Normaliser",
    "PreparedData",
    "SplitConfig",
    "candles_fingerprint",
    "fit_spec_on_train",
    "make_market_data",
    "market_data_from_spec",
    "prepare_data_for_model",
    "split_bounds",
    "walk_forward_folds",
]
