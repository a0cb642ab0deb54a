"""Declarative, causal, scale-free features: a :class:`FeatureSpec` turns candles into a frame.

The spec is data (a frozen pydantic model): it is validated once, saved in the model bundle as a
dict/YAML, fingerprinted, and replayed unchanged in live trading, so training and live decisions
see identical feature columns.

Rules every feature kind obeys (and tests prove):

* **Causal**: row ``t`` uses bars ``<= t`` only (it is known at bar t's close). Indicators come
  from ``ta`` with ``fillna=False`` (``ta``'s ``fillna=True`` back-fills, i.e. looks ahead) or
  from trailing pandas ``rolling``/``ewm`` windows; nothing is centred or shifted backwards.
* **Scale-free**: ratios, log returns, oscillators, fractions of the close; never raw prices or
  raw volume, so a model trained at one price level works at another.
* **Warm-up**: each kind knows how many leading bars it needs (``warmup_bars``). For windowed
  features that is the window; for exponential ones (EMA, RSI, MACD, ATR) it is also enough bars
  for the weight of the series' arbitrary start to fall below ``EWM_DECAY_TOL``, so features
  computed live from the last ``spec.warmup_bars + 1`` candles match the training features.
  :func:`feature_engineering` drops the warm-up rows explicitly and records how many in
  ``frame.attrs["warmup_rows_dropped"]``.

``ta``'s ``AverageTrueRange`` loops over rows in Python (about 5 s per million bars); the ``atr``
kind uses the same Wilder recursion through ``pandas.ewm`` instead (tested equal to ``ta``).

Example:
    >>> from coinrl.pipeline.synthetic import gbm
    >>> spec = FeatureSpec.from_dict({"features": [{"kind": "rsi", "window": 14}]})
    >>> frame = feature_engineering(gbm(500, seed=0), spec)
    >>> list(frame.columns)
    ['ts_ms', 'rsi_14']
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import ta
import yaml
from pydantic import Field, field_validator, model_validator

from .config import FrozenModel, load_config, validate_config
from .errors import ConfigError, DataError
from .feature_base import Bars as _Bars
from .feature_base import FeatureKind as _Feature
from .feature_base import Window
from .hmm import HmmRegimeFeature

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

FEATURES_VERSION = 1
"""Bumped whenever a kind's computation changes; part of :meth:`FeatureSpec.fingerprint`."""

EWM_DECAY_TOL = 1e-4
"""Weight left on the series' start after an exponential feature's warm-up."""

CANDLE_COLUMNS = ("ts_ms", "open", "high", "low", "close", "volume")

_MS_PER_DAY = 86_400_000
_TWO_PI = 2.0 * math.pi

Horizon = Annotated[int, Field(ge=1, le=100_000)]


def decay_bars(alpha: float, tol: float = EWM_DECAY_TOL) -> int:
    """Bars after which an EWM with smoothing ``alpha`` keeps less than ``tol`` of its start."""
    if alpha >= 1.0:
        return 0
    return int(math.ceil(math.log(tol) / math.log(1.0 - alpha)))


def _unique(values: tuple[int, ...]) -> tuple[int, ...]:
    if len(set(values)) != len(values):
        raise ValueError(f"values must be unique, got {list(values)}")
    return values


def _num(x: float) -> str:
    """A float for a column name: 2.0 -> '2', 2.5 -> '2p5'."""
    return f"{x:g}".replace(".", "p").replace("-", "m")


class ReturnsFeature(_Feature):
    """Log returns of the close over ``horizons`` bars: ``ret_log_{h} = ln(c_t / c_{t-h})``."""

    kind: Literal["returns"] = "returns"
    horizons: tuple[Horizon, ...] = Field(default=(1, 4, 24), min_length=1)

    _v = field_validator("horizons")(_unique)

    def output_names(self) -> tuple[str, ...]:
        return tuple(f"ret_log_{h}" for h in self.horizons)

    def warmup(self) -> int:
        return max(self.horizons)

    def compute(self, bars: _Bars) -> dict[str, F64]:
        lc = bars.log_close
        out = {}
        for h in self.horizons:
            col = np.full(len(lc), np.nan)
            col[h:] = lc[h:] - lc[:-h]
            out[f"ret_log_{h}"] = col
        return out


class SmaRatioFeature(_Feature):
    """Close over its simple moving average minus one: ``sma_ratio_{w} = c / SMA_w - 1`` (ta)."""

    kind: Literal["sma_ratio"] = "sma_ratio"
    windows: tuple[Window, ...] = Field(default=(10, 50), min_length=1)

    _v = field_validator("windows")(_unique)

    def output_names(self) -> tuple[str, ...]:
        return tuple(f"sma_ratio_{w}" for w in self.windows)

    def warmup(self) -> int:
        return max(self.windows) - 1

    def compute(self, bars: _Bars) -> dict[str, F64]:
        out = {}
        for w in self.windows:
            sma = ta.trend.SMAIndicator(bars.close_s, window=w, fillna=False).sma_indicator()
            out[f"sma_ratio_{w}"] = bars.close / sma.to_numpy(dtype=np.float64) - 1.0
        return out


class EmaRatioFeature(_Feature):
    """Close over its exponential moving average (span ``w``) minus one: ``ema_ratio_{w}`` (ta)."""

    kind: Literal["ema_ratio"] = "ema_ratio"
    windows: tuple[Window, ...] = Field(default=(12, 26), min_length=1)

    _v = field_validator("windows")(_unique)

    def output_names(self) -> tuple[str, ...]:
        return tuple(f"ema_ratio_{w}" for w in self.windows)

    def warmup(self) -> int:
        return max(max(w - 1, decay_bars(2.0 / (w + 1))) for w in self.windows)

    def compute(self, bars: _Bars) -> dict[str, F64]:
        out = {}
        for w in self.windows:
            ema = ta.trend.EMAIndicator(bars.close_s, window=w, fillna=False).ema_indicator()
            out[f"ema_ratio_{w}"] = bars.close / ema.to_numpy(dtype=np.float64) - 1.0
        return out


class RsiFeature(_Feature):
    """Wilder's RSI as a fraction in [0, 1]: ``rsi_{w}`` (ta; a flat-since-start window gives 0.5)."""

    kind: Literal["rsi"] = "rsi"
    window: Window = 14

    def output_names(self) -> tuple[str, ...]:
        return (f"rsi_{self.window}",)

    def warmup(self) -> int:
        return max(self.window, decay_bars(1.0 / self.window))

    def compute(self, bars: _Bars) -> dict[str, F64]:
        rsi = ta.momentum.RSIIndicator(bars.close_s, window=self.window, fillna=False).rsi()
        val = rsi.to_numpy(dtype=np.float64) / 100.0
        # ta returns 100 when there was no down move; when there was no move at all it is 50.
        moves = (
            bars.close_s.diff()
            .abs()
            .ewm(alpha=1.0 / self.window, min_periods=self.window, adjust=False)
            .mean()
            .to_numpy()
        )
        val = np.where(moves == 0.0, 0.5, val)
        return {f"rsi_{self.window}": val}


class MacdFeature(_Feature):
    """MACD line, signal line and histogram divided by the close (ta).

    Columns ``macd_{f}_{s}_{g}``, ``macd_signal_{f}_{s}_{g}``, ``macd_hist_{f}_{s}_{g}``.
    """

    kind: Literal["macd"] = "macd"
    fast: Window = 12
    slow: Window = 26
    signal: Window = 9

    @model_validator(mode="after")
    def _fast_below_slow(self) -> MacdFeature:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be shorter than slow ({self.slow})")
        return self

    @property
    def _tag(self) -> str:
        return f"{self.fast}_{self.slow}_{self.signal}"

    def output_names(self) -> tuple[str, ...]:
        t = self._tag
        return (f"macd_{t}", f"macd_signal_{t}", f"macd_hist_{t}")

    def warmup(self) -> int:
        slow = max(self.slow - 1, decay_bars(2.0 / (self.slow + 1)))
        return slow + max(self.signal - 1, decay_bars(2.0 / (self.signal + 1)))

    def compute(self, bars: _Bars) -> dict[str, F64]:
        m = ta.trend.MACD(
            bars.close_s,
            window_slow=self.slow,
            window_fast=self.fast,
            window_sign=self.signal,
            fillna=False,
        )
        c = bars.close
        t = self._tag
        return {
            f"macd_{t}": m.macd().to_numpy(dtype=np.float64) / c,
            f"macd_signal_{t}": m.macd_signal().to_numpy(dtype=np.float64) / c,
            f"macd_hist_{t}": m.macd_diff().to_numpy(dtype=np.float64) / c,
        }


class BollingerFeature(_Feature):
    """Bollinger %b and bandwidth (ta bands, population std).

    ``bb_pctb_{w}_{dev} = (c - lower) / (upper - lower)`` (0.5 when the bands collapse on a flat
    window) and ``bb_width_{w}_{dev} = (upper - lower) / middle`` (a fraction).
    """

    kind: Literal["bollinger"] = "bollinger"
    window: Window = 20
    dev: float = Field(default=2.0, gt=0.0, le=10.0)

    def output_names(self) -> tuple[str, ...]:
        t = f"{self.window}_{_num(self.dev)}"
        return (f"bb_pctb_{t}", f"bb_width_{t}")

    def warmup(self) -> int:
        return self.window - 1

    def compute(self, bars: _Bars) -> dict[str, F64]:
        bb = ta.volatility.BollingerBands(
            bars.close_s, window=self.window, window_dev=self.dev, fillna=False
        )
        hi = bb.bollinger_hband().to_numpy(dtype=np.float64)
        lo = bb.bollinger_lband().to_numpy(dtype=np.float64)
        mid = bb.bollinger_mavg().to_numpy(dtype=np.float64)
        # A window of equal closes has zero spread, but pandas' running variance leaves a
        # rounding residue (~1e-8 of the price); detect flat windows exactly instead.
        roll = bars.close_s.rolling(self.window, min_periods=self.window)
        flat = (roll.max() == roll.min()).to_numpy()
        width = np.where(flat, 0.0, hi - lo)
        safe = np.where(width > 0.0, width, 1.0)
        pctb = np.where(
            width > 0.0, (bars.close - lo) / safe, np.where(np.isnan(width), np.nan, 0.5)
        )
        pb, pw = self.output_names()
        return {pb: pctb, pw: width / mid}


class AtrFeature(_Feature):
    """Wilder's average true range as a fraction of the close: ``atr_{w}``.

    Same recursion as ``ta.volatility.AverageTrueRange`` (seeded with the mean true range of
    the first ``w`` bars, then ``atr_t = ((w - 1) atr_{t-1} + tr_t) / w``), computed with
    ``pandas.ewm`` because ``ta``'s per-row Python loop takes seconds per million bars.
    """

    kind: Literal["atr"] = "atr"
    window: Window = 14

    def output_names(self) -> tuple[str, ...]:
        return (f"atr_{self.window}",)

    def warmup(self) -> int:
        return self.window - 1 + decay_bars(1.0 / self.window)

    def compute(self, bars: _Bars) -> dict[str, F64]:
        return {
            f"atr_{self.window}": wilder_atr(bars.high, bars.low, bars.close, self.window)
            / bars.close
        }


def wilder_atr(high: F64, low: F64, close: F64, window: int) -> F64:
    """Wilder's ATR in price units, equal to ``ta.volatility.AverageTrueRange`` (fillna=False).

    The true range of bar 0 is ``high - low`` (no previous close). Rows before ``window - 1``
    are NaN (``ta`` puts zeros there).

    Args:
        high, low, close: prices (float64, same length).
        window: smoothing window in bars (>= 1).

    Returns:
        ATR per bar (float64, price units).
    """
    n = len(close)
    prev = np.empty(n)
    prev[0] = np.nan
    prev[1:] = close[:-1]
    tr = np.fmax(high - low, np.fmax(np.abs(high - prev), np.abs(low - prev)))
    x = np.full(n, np.nan)
    if n >= window:
        x[window - 1] = tr[:window].mean()
        x[window:] = tr[window:]
    return pd.Series(x).ewm(alpha=1.0 / window, adjust=False).mean().to_numpy(dtype=np.float64)


class VolatilityFeature(_Feature):
    """Rolling standard deviation (ddof=1) of 1-bar log returns: ``volatility_{w}`` (per bar)."""

    kind: Literal["volatility"] = "volatility"
    windows: tuple[Window, ...] = Field(default=(24,), min_length=1)

    _v = field_validator("windows")(_unique)

    def output_names(self) -> tuple[str, ...]:
        return tuple(f"volatility_{w}" for w in self.windows)

    def warmup(self) -> int:
        return max(self.windows)

    def compute(self, bars: _Bars) -> dict[str, F64]:
        r = pd.Series(bars.log_ret_1)
        return {
            f"volatility_{w}": r.rolling(w, min_periods=w).std().to_numpy(dtype=np.float64)
            for w in self.windows
        }


class VolumeFeature(_Feature):
    """Bar volume relative to its rolling mean: ``volume_ratio_{w} = ln(1 + v / mean_w) - ln 2``.

    0 when the bar trades its usual volume, about ``-0.69`` for a zero-volume bar, growing like
    ``ln(v / mean)`` for busy bars. A window with zero total volume counts as usual (0).
    """

    kind: Literal["volume"] = "volume"
    windows: tuple[Window, ...] = Field(default=(24,), min_length=1)

    _v = field_validator("windows")(_unique)

    def output_names(self) -> tuple[str, ...]:
        return tuple(f"volume_ratio_{w}" for w in self.windows)

    def warmup(self) -> int:
        return max(self.windows) - 1

    def compute(self, bars: _Bars) -> dict[str, F64]:
        v = bars.volume
        vs = pd.Series(v)
        out = {}
        for w in self.windows:
            mean = vs.rolling(w, min_periods=w).mean().to_numpy(dtype=np.float64)
            ratio = np.where(mean > 0.0, v / np.where(mean > 0.0, mean, 1.0), 1.0)
            ratio = np.where(np.isnan(mean), np.nan, ratio)
            out[f"volume_ratio_{w}"] = np.log1p(ratio) - math.log(2.0)
        return out


class TimeFeature(_Feature):
    """Sin/cos encodings of the bar's open time: ``hour_sin/cos`` (time of day, UTC) and
    ``dow_sin/cos`` (day of week, Monday 00:00 = angle 0)."""

    kind: Literal["time"] = "time"
    components: tuple[Literal["hour", "dow"], ...] = Field(default=("hour", "dow"), min_length=1)

    @field_validator("components")
    @classmethod
    def _uniq(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"components must be unique, got {list(v)}")
        return v

    def output_names(self) -> tuple[str, ...]:
        return tuple(f"{c}_{f}" for c in self.components for f in ("sin", "cos"))

    def warmup(self) -> int:
        return 0

    def compute(self, bars: _Bars) -> dict[str, F64]:
        ts = bars.ts_ms
        day_frac = (ts % _MS_PER_DAY).astype(np.float64) / _MS_PER_DAY
        out = {}
        for c in self.components:
            if c == "hour":
                ang = _TWO_PI * day_frac
            else:  # 1970-01-01 was a Thursday: +3 makes Monday 0.
                ang = _TWO_PI * (((ts // _MS_PER_DAY) + 3) % 7 + day_frac) / 7.0
            out[f"{c}_sin"] = np.sin(ang)
            out[f"{c}_cos"] = np.cos(ang)
        return out


class ColumnFeature(_Feature):
    """Pass an existing numeric column through unchanged (e.g. ``signal`` of a synthetic market).

    The column must already be causal (its row t known at bar t's close) and scale-free; raw
    OHLCV columns are refused. The output column keeps the input's name.
    """

    kind: Literal["column"] = "column"
    name: str = Field(min_length=1, max_length=100)
    warmup_bars: int = Field(default=0, ge=0, le=100_000)

    RESERVED: ClassVar[frozenset[str]] = frozenset(CANDLE_COLUMNS)

    @field_validator("name")
    @classmethod
    def _not_raw(cls, v: str) -> str:
        if v in cls.RESERVED:
            raise ValueError(
                f"{v!r} is a raw candle column (price/volume level, not scale-free); use the "
                "returns, sma_ratio, atr or volume kinds instead"
            )
        return v

    def output_names(self) -> tuple[str, ...]:
        return (self.name,)

    def warmup(self) -> int:
        return self.warmup_bars

    def compute(self, bars: _Bars) -> dict[str, F64]:
        if self.name not in bars.frame.columns:
            raise DataError(
                f"feature kind 'column' needs column {self.name!r}, which the candle frame lacks "
                f"(columns: {list(bars.frame.columns)}); add it or remove the entry from the spec"
            )
        try:
            return {self.name: bars.frame[self.name].to_numpy(dtype=np.float64)}
        except (TypeError, ValueError) as e:
            raise DataError(f"column {self.name!r} is not numeric: {e}") from e


FeatureEntry = Annotated[
    ReturnsFeature
    | SmaRatioFeature
    | EmaRatioFeature
    | RsiFeature
    | MacdFeature
    | BollingerFeature
    | AtrFeature
    | VolatilityFeature
    | VolumeFeature
    | TimeFeature
    | ColumnFeature
    | HmmRegimeFeature,
    Field(discriminator="kind"),
]

FEATURE_KINDS: dict[str, type[_Feature]] = {
    "returns": ReturnsFeature,
    "sma_ratio": SmaRatioFeature,
    "ema_ratio": EmaRatioFeature,
    "rsi": RsiFeature,
    "macd": MacdFeature,
    "bollinger": BollingerFeature,
    "atr": AtrFeature,
    "volatility": VolatilityFeature,
    "volume": VolumeFeature,
    "time": TimeFeature,
    "column": ColumnFeature,
    "hmm_regime": HmmRegimeFeature,
}
"""The registry of feature kinds, keyed by the ``kind`` tag used in YAML."""


class FeatureSpec(FrozenModel):
    """An ordered list of feature entries; the output columns follow this order.

    Example (YAML)::

        features:
          - {kind: returns, horizons: [1, 4, 24]}
          - {kind: rsi, window: 14}
          - {kind: column, name: signal}
    """

    features: tuple[FeatureEntry, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> FeatureSpec:
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.features):
            for name in entry.output_names():
                if name in seen:
                    raise ValueError(
                        f"feature column {name!r} is produced by entries {seen[name]} and {i}; "
                        "remove the duplicate"
                    )
                seen[name] = i
        return self

    @property
    def feature_names(self) -> tuple[str, ...]:
        """All output column names, in order."""
        return tuple(n for e in self.features for n in e.output_names())

    @property
    def warmup_bars(self) -> int:
        """Leading bars :func:`feature_engineering` drops (the largest entry warm-up)."""
        return max(e.warmup() for e in self.features)

    @property
    def fitted_kinds(self) -> tuple[str, ...]:
        """Kinds of the entries with parameters fitted on training rows (``hmm_regime``)."""
        return tuple(e.kind for e in self.features if isinstance(e, HmmRegimeFeature))

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Candle columns the spec reads: OHLCV plus any ``column`` entries."""
        extra = tuple(e.name for e in self.features if isinstance(e, ColumnFeature))
        return CANDLE_COLUMNS + extra

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict with every default spelled out (round-trips through :meth:`from_dict`)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> FeatureSpec:
        """Validate a dict; problems raise :class:`ConfigError` with field paths."""
        return validate_config(cls, dict(data), source=source)

    def to_yaml(self) -> str:
        """YAML text of :meth:`to_dict`."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<yaml>") -> FeatureSpec:
        """Parse YAML text (use :meth:`load` for a file)."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{source} must hold a mapping with a 'features' list")
        return cls.from_dict(data, source=source)

    @classmethod
    def load(cls, path: str | Path) -> FeatureSpec:
        """Load and validate a YAML file."""
        return load_config(cls, path)

    def fingerprint(self) -> str:
        """sha256 hex of the canonical JSON of the spec (defaults included) and FEATURES_VERSION.

        Equal specs, however they were written, have equal fingerprints.
        """
        payload = {"features_version": FEATURES_VERSION, "spec": self.to_dict()}
        canon = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canon.encode()).hexdigest()


def default_feature_spec() -> FeatureSpec:
    """The default spec: returns, SMA/EMA ratios, RSI, MACD, Bollinger, ATR, volatility,
    volume and time encodings (20 columns, warm-up 162 bars)."""
    return FeatureSpec(
        features=(
            ReturnsFeature(horizons=(1, 4, 24)),
            SmaRatioFeature(windows=(10, 50)),
            EmaRatioFeature(windows=(12, 26)),
            RsiFeature(window=14),
            MacdFeature(fast=12, slow=26, signal=9),
            BollingerFeature(window=20, dev=2.0),
            AtrFeature(window=14),
            VolatilityFeature(windows=(24,)),
            VolumeFeature(windows=(24,)),
            TimeFeature(),
        )
    )


def coerce_spec(spec: FeatureSpec | Mapping[str, Any] | None) -> FeatureSpec:
    """``None`` -> the default spec; a mapping is validated; a spec is returned as is."""
    if spec is None:
        return default_feature_spec()
    if isinstance(spec, FeatureSpec):
        return spec
    if isinstance(spec, Mapping):
        return FeatureSpec.from_dict(spec)
    raise ConfigError(f"spec must be a FeatureSpec, a mapping or None, got {type(spec).__name__}")


def _first_ts(ts: np.ndarray, bad: np.ndarray) -> str:
    i = int(np.argmax(bad))
    return str(pd.Timestamp(int(ts[i]), unit="ms", tz="UTC"))


def check_candles(data: pd.DataFrame, required: tuple[str, ...] = CANDLE_COLUMNS) -> None:
    """Raise :class:`DataError` unless ``data`` is a usable cleaned-candle frame.

    Checks the columns, ``ts_ms`` integer and strictly ascending, prices finite and > 0,
    volume finite and >= 0.
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"candles must be a pandas DataFrame, got {type(data).__name__}")
    missing = [c for c in required if c not in data.columns]
    if missing:
        raise DataError(
            f"candle frame lacks columns {missing}; expected {list(required)} "
            "(read with read_ohlcv and clean with preprocess_data first)"
        )
    ts_col = data["ts_ms"]
    if not pd.api.types.is_integer_dtype(ts_col.dtype):
        raise DataError(f"ts_ms must be int64 UTC epoch milliseconds, got dtype {ts_col.dtype}")
    ts = ts_col.to_numpy(dtype=np.int64)
    if len(ts) > 1:
        bad = np.diff(ts) <= 0
        if bad.any():
            raise DataError(
                f"ts_ms is not strictly ascending ({int(bad.sum())} places, first after "
                f"{_first_ts(ts[:-1], bad)}); run preprocess_data to sort and dedupe"
            )
    for col in ("open", "high", "low", "close"):
        x = data[col].to_numpy(dtype=np.float64)
        bad = ~(np.isfinite(x) & (x > 0))
        if bad.any():
            raise DataError(
                f"{col} has {int(bad.sum())} non-positive or non-finite values (first at "
                f"{_first_ts(ts, bad)}); run preprocess_data to drop or fill bad rows"
            )
    v = data["volume"].to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(v) & (v >= 0))
    if bad.any():
        raise DataError(
            f"volume has {int(bad.sum())} negative or non-finite values (first at "
            f"{_first_ts(ts, bad)}); run preprocess_data to fix them"
        )


def feature_engineering(
    data: pd.DataFrame, spec: FeatureSpec | Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Compute the spec's features from cleaned candles.

    Args:
        data: cleaned candles: ``ts_ms`` (int64 UTC ms bar open time, strictly ascending) and
            float ``open, high, low, close`` (quote currency) and ``volume`` (base units), plus
            any columns named by ``column`` entries. ``attrs`` may hold symbol/timeframe/exchange.
        spec: a :class:`FeatureSpec`, a dict of one, or None for :func:`default_feature_spec`.

    Returns:
        A frame with ``ts_ms`` and one float64 column per feature (``spec.feature_names`` in
        order), without the first ``spec.warmup_bars`` rows, index reset. Row ``i`` belongs to
        the candle with the same ``ts_ms`` and uses candles up to it only. ``attrs`` carries
        the input's symbol/timeframe/exchange plus ``warmup_rows_dropped`` and
        ``feature_spec_fingerprint``. No NaN or inf remains.

    Raises:
        ConfigError: the spec is invalid.
        DataError: the candles are unusable, too short for the warm-up, lack a ``column``
            entry's column, or a feature is NaN/inf after the warm-up (the message names it).
    """
    spec = coerce_spec(spec)
    check_candles(data, spec.required_columns)
    warmup = spec.warmup_bars
    n = len(data)
    if n <= warmup:
        raise DataError(
            f"{n} candles are too few: the feature spec needs {warmup} warm-up bars plus at "
            "least one more; load a longer history or use shorter windows"
        )
    bars = _Bars(data)
    out: dict[str, np.ndarray] = {"ts_ms": bars.ts_ms[warmup:]}
    ts_kept = bars.ts_ms[warmup:]
    for entry in spec.features:
        cols = entry.compute(bars)
        for name in entry.output_names():
            col = np.asarray(cols[name], dtype=np.float64)[warmup:]
            bad = ~np.isfinite(col)
            if bad.any():
                raise DataError(
                    f"feature {name!r} (kind {entry.kind!r}) has {int(bad.sum())} NaN/inf values "
                    f"after the {warmup}-bar warm-up, first at {_first_ts(ts_kept, bad)}; check "
                    "the input for that stretch (flat or missing data) or the entry's parameters"
                )
            out[name] = col
    frame = pd.DataFrame(out)
    attrs = data.attrs
    frame.attrs.update({k: attrs[k] for k in ("symbol", "timeframe", "exchange") if k in attrs})
    frame.attrs["warmup_rows_dropped"] = warmup
    frame.attrs["feature_spec_fingerprint"] = spec.fingerprint()
    logger.debug(
        "features symbol=%s timeframe=%s rows=%d features=%d warmup_rows_dropped=%d",
        attrs.get("symbol", "?"),
        attrs.get("timeframe", "?"),
        len(frame),
        len(spec.feature_names),
        warmup,
    )
    return frame


def fit_feature_spec(
    data: pd.DataFrame, spec: FeatureSpec | Mapping[str, Any] | None, train_rows: range
) -> FeatureSpec:
    """The spec with every fitted entry (``hmm_regime``) fitted on the candle rows ``train_rows``.

    Only candles before ``train_rows.stop`` are passed to the fit, so nothing after the
    training rows can reach the fitted parameters. Existing ``fitted`` values are replaced.
    A spec without fitted entries comes back unchanged.

    Args:
        data: cleaned candles (as for :func:`feature_engineering`).
        spec: the spec (or a dict of one, or None for the default).
        train_rows: candle row indices (NOT feature rows: add the warm-up) of the training part.

    Raises:
        DataError: bad candles, an empty range, or a fit that failed (the message says why).
    """
    spec = coerce_spec(spec)
    if not spec.fitted_kinds:
        return spec
    check_candles(data, spec.required_columns)
    if not 0 <= train_rows.start < train_rows.stop <= len(data):
        raise DataError(f"train_rows {train_rows} is empty or outside the {len(data)} candles")
    bars = _Bars(data.iloc[: train_rows.stop])
    entries = tuple(
        e.fit(bars, train_rows) if isinstance(e, HmmRegimeFeature) else e for e in spec.features
    )
    return spec.model_copy(update={"features": entries})


__all__ = [
    "EWM_DECAY_TOL",
    "FEATURES_VERSION",
    "FEATURE_KINDS",
    "AtrFeature",
    "BollingerFeature",
    "ColumnFeature",
    "EmaRatioFeature",
    "FeatureEntry",
    "FeatureSpec",
    "HmmRegimeFeature",
    "MacdFeature",
    "ReturnsFeature",
    "RsiFeature",
    "SmaRatioFeature",
    "TimeFeature",
    "VolatilityFeature",
    "VolumeFeature",
    "check_candles",
    "coerce_spec",
    "decay_bars",
    "default_feature_spec",
    "feature_engineering",
    "fit_feature_spec",
    "wilder_atr",
]
