"""Cleaning raw candles: sort, dedupe, drop bad rows, find (and optionally fill) gaps.

:func:`preprocess_data` turns a raw OHLCV frame (as :func:`~coinrl.pipeline.formats.parse_ohlcv`
returns it) into the frame every later stage assumes: ``ts_ms`` strictly ascending and unique,
prices positive and consistent, volume non-negative. Every decision follows an explicit policy
in :class:`CleanConfig`, and everything it did is counted in a :class:`CleanReport` kept in
``df.attrs["clean_report"]``; nothing is changed silently. All work is vectorised numpy/pandas.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import field_validator

from .config import FrozenModel
from .errors import ConfigError, DataError
from .store import gap_summary
from .timeframes import ms_to_timeframe, timeframe_to_ms

logger = logging.getLogger(__name__)

PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")
OHLCV_COLUMNS = ("ts_ms", *VALUE_COLUMNS)
FILLED_COLUMN = "filled"
_TIME_COLUMNS = ("date", "timestamp")

INVALID_REASONS = (
    "not_finite",
    "non_positive_price",
    "high_below_open_close",
    "low_above_open_close",
    "high_below_low",
    "negative_volume",
)
"""Why a row is invalid (a row can have several reasons)."""


class CleanConfig(FrozenModel):
    """Policies for :func:`preprocess_data`.

    Attributes:
        duplicates: rows sharing a ``ts_ms`` with different values: ``"error"`` raises,
            ``"first"``/``"last"`` keep the one that comes first/last in the input. Rows that are
            identical copies are always dropped (and counted).
        gaps: missing bars: ``"report"`` keeps them missing and reports them, ``"error"`` raises,
            ``"ffill"`` inserts flat candles at the previous close with volume 0 and marks them
            in a boolean ``filled`` column.
        invalid: rows with NaN/inf, non-positive prices, ``high < max(open, close)``,
            ``low > min(open, close)``, ``high < low`` or negative volume: ``"error"`` raises,
            ``"drop"`` drops them.
        timeframe: bar length like ``"1h"``; inferred from the most common spacing when None.
        drop_incomplete_last: drop the last bar when it has not closed yet (its open time plus
            one timeframe is in the future), e.g. right after a fetch.
    """

    duplicates: Literal["error", "first", "last"] = "last"
    gaps: Literal["report", "error", "ffill"] = "report"
    invalid: Literal["error", "drop"] = "drop"
    timeframe: str | None = None
    drop_incomplete_last: bool = False

    @field_validator("timeframe")
    @classmethod
    def _known_timeframe(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            timeframe_to_ms(v)
        except ConfigError as e:  # pydantic only turns ValueError into a field error
            raise ValueError(str(e)) from e
        return v.strip()


@dataclass(frozen=True)
class CleanReport:
    """What :func:`preprocess_data` found and did. Counts are rows unless named otherwise.

    Attributes:
        rows_in: rows given.
        rows_out: rows returned (including inserted ``filled`` bars).
        reversed: the input was in descending time order (newest first) and was flipped.
        n_unsorted_fixed: rows that came after a later bar (after any flip) and were moved.
        n_duplicates_identical: exact copies of another row (same ``ts_ms`` and OHLCV), dropped.
        n_duplicates_conflicting: rows sharing a ``ts_ms`` with different values, dropped
            by the ``duplicates`` policy.
        n_invalid: invalid rows by reason (a row may count under several reasons).
        n_invalid_rows: rows dropped as invalid.
        n_gaps: places where one or more bars are missing (before any fill).
        largest_gap_bars: most bars missing at one place.
        first_gap_ts_ms: open time of the bar before the first gap (None when no gap).
        n_filled: flat bars inserted by ``gaps="ffill"``.
        dropped_incomplete_last: the last bar was dropped as not yet closed.
        timeframe: the bar length used (given or inferred); None when it could not be known.
    """

    rows_in: int
    rows_out: int
    reversed: bool
    n_unsorted_fixed: int
    n_duplicates_identical: int
    n_duplicates_conflicting: int
    n_invalid: Mapping[str, int] = field(default_factory=dict)
    n_invalid_rows: int = 0
    n_gaps: int = 0
    largest_gap_bars: int = 0
    first_gap_ts_ms: int | None = None
    n_filled: int = 0
    dropped_incomplete_last: bool = False
    timeframe: str | None = None

    @property
    def changed(self) -> bool:
        """True when rows were dropped, moved or inserted (beyond flipping a reversed file)."""
        return bool(
            self.n_unsorted_fixed
            or self.n_duplicates_identical
            or self.n_duplicates_conflicting
            or self.n_invalid_rows
            or self.n_filled
            or self.dropped_incomplete_last
        )

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-serialisable dict (for ``df.attrs``, Parquet metadata, W&B)."""
        d = asdict(self)
        d["n_invalid"] = dict(self.n_invalid)
        return d

    def summary(self) -> str:
        """One line for logs and the CLI."""
        parts = [f"rows {self.rows_in}->{self.rows_out}", f"timeframe={self.timeframe}"]
        if self.reversed:
            parts.append("reversed")
        if self.n_unsorted_fixed:
            parts.append(f"unsorted_fixed={self.n_unsorted_fixed}")
        if self.n_duplicates_identical or self.n_duplicates_conflicting:
            parts.append(
                f"duplicates identical={self.n_duplicates_identical} "
                f"conflicting={self.n_duplicates_conflicting}"
            )
        if self.n_invalid_rows:
            reasons = ",".join(f"{k}={v}" for k, v in self.n_invalid.items() if v)
            parts.append(f"invalid_dropped={self.n_invalid_rows} ({reasons})")
        parts.append(f"gaps={self.n_gaps} (largest {self.largest_gap_bars} bars)")
        if self.n_filled:
            parts.append(f"filled={self.n_filled}")
        if self.dropped_incomplete_last:
            parts.append("dropped_incomplete_last")
        return " | ".join(parts)


def ts_to_iso(ts_ms: int) -> str:
    """``ts_ms`` as an ISO-8601 UTC string (``2021-03-28T01:00:00Z``), for messages."""
    return pd.Timestamp(int(ts_ms), unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def infer_timeframe(ts_ms: npt.ArrayLike) -> str | None:
    """The timeframe of bars from their most common spacing.

    Args:
        ts_ms: bar open times (int64 UTC ms) in any order; duplicates are ignored.

    Returns:
        A ccxt-style timeframe like ``"1h"``: the most common spacing, or the greatest common
        divisor of the spacings when that occurs in at least 5% of the steps and the mode is a
        multiple of it (heavily gapped data). None when fewer than two distinct times are given
        or the spacing is not a whole number of seconds.
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    if len(ts) < 2:
        return None
    d = np.abs(np.diff(ts))
    d = d[d > 0]
    if len(d) == 0:
        return None
    values, counts = np.unique(d, return_counts=True)
    step = int(values[np.argmax(counts)])
    if np.any(d % step):
        # Some spacings are not multiples of the most common one. With many missing bars the
        # mode can be a multiple of the true bar (2h gaps outnumbering 1h steps): then the
        # common divisor is the bar length, provided it occurs itself. A divisor that occurs
        # in under 5% of steps means a few bars off the grid: keep the mode, and the caller
        # reports those bars.
        g = int(np.gcd.reduce(d))
        if float(np.mean(d == g)) >= 0.05:
            step = g
    try:
        return ms_to_timeframe(step)
    except ConfigError:
        return None


def _name(df: pd.DataFrame) -> str:
    src = df.attrs.get("source")
    return Path(str(src)).name if src else "data"


def datetimes_to_ms(values: pd.Series | pd.DatetimeIndex, what: str) -> npt.NDArray[np.int64]:
    """Tz-aware datetimes to int64 UTC epoch ms; naive or unparsed values are a DataError.

    Args:
        values: tz-aware datetimes (any unit, any timezone).
        what: how to name them in an error message (``"btc.csv column 'date'"``).
    """
    dtype = values.dtype
    if not isinstance(dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(dtype):
            raise DataError(
                f"{what} holds naive datetimes; coinrl needs UTC: localise them first, "
                "e.g. df['date'] = df['date'].dt.tz_localize('UTC')"
            )
        raise DataError(
            f"{what} has dtype {dtype}, expected tz-aware datetimes; parse them first, "
            "e.g. pd.to_datetime(df['date'], utc=True)"
        )
    idx = pd.DatetimeIndex(values)
    if idx.hasnans:
        raise DataError(f"{what} has {int(np.asarray(idx.isna()).sum())} missing datetimes (NaT)")
    return np.asarray(idx.tz_convert("UTC").as_unit("ms").asi8, dtype=np.int64)


def _extract_ts(df: pd.DataFrame, name: str) -> tuple[npt.NDArray[np.int64], str | None]:
    """The bar open times as int64 ms, and the name of the datetime column they came from."""
    if "ts_ms" in df.columns:
        s = df["ts_ms"]
        if pd.api.types.is_integer_dtype(s.dtype):
            return s.to_numpy(dtype=np.int64), None
        if pd.api.types.is_float_dtype(s.dtype):
            arr = s.to_numpy(dtype=np.float64)
            if np.isfinite(arr).all() and (arr == np.round(arr)).all():
                return arr.astype(np.int64), None
            bad = int(np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))[0])
            raise DataError(
                f"{name}: ts_ms must be whole int64 UTC epoch milliseconds; row {bad} has {arr[bad]!r}"
            )
        if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(s.dtype):
            return datetimes_to_ms(s, f"{name} column 'ts_ms'"), None
        raise DataError(
            f"{name}: ts_ms has dtype {s.dtype}; expected int64 UTC epoch milliseconds"
        )
    for col in _TIME_COLUMNS:
        if col in df.columns:
            return datetimes_to_ms(df[col], f"{name} column {col!r}"), col
    if isinstance(df.index, pd.DatetimeIndex):
        return datetimes_to_ms(pd.Series(df.index), f"{name} index"), None
    raise DataError(
        f"{name} has no time column: expected 'ts_ms' (int64 UTC epoch ms, bar open time), "
        f"a tz-aware 'date'/'timestamp' column or a tz-aware DatetimeIndex; got columns {list(df.columns)}"
    )


def _as_float(df: pd.DataFrame, col: str, name: str) -> npt.NDArray[np.float64]:
    s = df[col]
    if not (pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)):
        raise DataError(
            f"{name}: column {col!r} has dtype {s.dtype}; expected numbers "
            "(parse the file with coinrl.pipeline.formats.parse_ohlcv)"
        )
    if s.dtype == np.float64:
        return s.to_numpy()
    return s.to_numpy(dtype=np.float64, na_value=np.nan)


def _invalid_masks(v: dict[str, npt.NDArray[np.float64]]) -> dict[str, npt.NDArray[np.bool_]]:
    o, h, lo, c, vol = (v[k] for k in VALUE_COLUMNS)
    with np.errstate(invalid="ignore"):
        return {
            "not_finite": ~(
                np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & np.isfinite(vol)
            ),
            "non_positive_price": (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0),
            "high_below_open_close": h < np.maximum(o, c),
            "low_above_open_close": lo > np.minimum(o, c),
            "high_below_low": h < lo,
            "negative_volume": vol < 0,
        }


def preprocess_data(
    raw_data: pd.DataFrame,
    config: CleanConfig | None = None,
    *,
    now_ms: int | None = None,
) -> pd.DataFrame:
    """Clean raw candles into ascending, unique, valid bars, by explicit policies.

    Steps: read the bar open time (``ts_ms``, or a tz-aware ``date``/``timestamp`` column or
    DatetimeIndex, converted to int64 UTC ms); flip a newest-first input; drop or reject
    invalid rows; drop identical duplicates and resolve conflicting ones; sort; check that bars
    lie on the timeframe's grid; report, reject or forward-fill gaps.

    Args:
        raw_data: frame with ``ts_ms`` (int64 UTC epoch ms, bar open time) and float
            ``open, high, low, close`` (quote currency) and ``volume`` (base units). Extra
            columns are kept (NaN in inserted bars). ``attrs`` are carried over.
        config: cleaning policies; defaults to ``CleanConfig()``.
        now_ms: current time in UTC ms for ``drop_incomplete_last`` (wall clock when None).

    Returns:
        A new frame with a RangeIndex, ``ts_ms`` int64 strictly ascending, float64 OHLCV, a
        boolean ``filled`` column when ``gaps="ffill"`` (or when the input had one), and
        ``attrs["timeframe"]`` and ``attrs["clean_report"]`` (``CleanReport.to_dict()``).

    Raises:
        DataError: empty input, missing or non-numeric columns, naive datetimes, bars off the
            timeframe's grid, or an ``"error"`` policy that tripped.

    Example:
        >>> df = preprocess_data(raw, CleanConfig(gaps="ffill"))  # doctest: +SKIP
        >>> df.attrs["clean_report"]["n_filled"]  # doctest: +SKIP
    """
    cfg = config or CleanConfig()
    if not isinstance(raw_data, pd.DataFrame):
        raise DataError(f"preprocess_data needs a pandas DataFrame, got {type(raw_data).__name__}")
    name = _name(raw_data)
    if len(raw_data) == 0:
        raise DataError(f"{name} is empty: no rows to clean; check the file or the download range")
    ts, time_col = _extract_ts(raw_data, name)
    missing = [c for c in VALUE_COLUMNS if c not in raw_data.columns]
    if missing:
        raise DataError(
            f"{name} lacks columns {missing}; expected {list(OHLCV_COLUMNS)} "
            "(prices in quote currency, volume in base units)"
        )
    vals = {c: _as_float(raw_data, c, name) for c in VALUE_COLUMNS}
    n = len(ts)

    # Orientation: a newest-first export is flipped, not counted as n rows out of order.
    d = np.diff(ts)
    was_reversed = bool((d < 0).sum() > (d > 0).sum())
    ts_o = ts[::-1] if was_reversed else ts
    n_unsorted = int((ts_o[1:] < np.maximum.accumulate(ts_o)[:-1]).sum()) if n > 1 else 0

    # Invalid rows.
    masks = _invalid_masks(vals)
    invalid = np.zeros(n, dtype=bool)
    for m in masks.values():
        invalid |= m
    n_invalid = {k: int(m.sum()) for k, m in masks.items()}
    n_invalid_rows = int(invalid.sum())
    if n_invalid_rows and cfg.invalid == "error":
        i = int(np.flatnonzero(invalid)[0])
        why = ", ".join(k for k, m in masks.items() if m[i])
        raise DataError(
            f"{name} has {n_invalid_rows} invalid rows (first at {ts_to_iso(ts[i])}: {why}; "
            f"counts {', '.join(f'{k}={v}' for k, v in n_invalid.items() if v)}); "
            "pass invalid='drop' to drop them, or fix the file"
        )

    # Sort the valid rows by (time, input position): stable, so first/last mean input order.
    idx = np.flatnonzero(~invalid)
    idx = idx[np.argsort(ts[idx], kind="stable")]
    keep_policy: Literal["first", "last"] = "first" if cfg.duplicates == "error" else cfg.duplicates
    ts_s = ts[idx]
    n_dup_identical = n_dup_conflicting = 0
    if len(ts_s) > 1 and bool((ts_s[1:] == ts_s[:-1]).any()):
        key = pd.DataFrame({"ts_ms": ts_s, **{c: vals[c][idx] for c in VALUE_COLUMNS}})
        ident = key.duplicated(keep=keep_policy).to_numpy()
        n_dup_identical = int(ident.sum())
        idx, ts_s = idx[~ident], ts_s[~ident]
        conflict = pd.Series(ts_s).duplicated(keep=keep_policy).to_numpy()
        n_dup_conflicting = int(conflict.sum())
        if n_dup_conflicting and cfg.duplicates == "error":
            first = int(ts_s[conflict][0])
            raise DataError(
                f"{name} has {n_dup_conflicting} conflicting duplicate bars (same ts_ms, different "
                f"values; first at {ts_to_iso(first)}); pass duplicates='last' or 'first' to keep "
                "one of them, or fix the file"
            )
        idx, ts_s = idx[~conflict], ts_s[~conflict]
    if len(idx) == 0:
        raise DataError(
            f"{name}: all {n} rows are invalid ({', '.join(f'{k}={v}' for k, v in n_invalid.items() if v)}); "
            "nothing is left to use"
        )

    # Timeframe and grid.
    tf = cfg.timeframe or infer_timeframe(ts_s) or raw_data.attrs.get("timeframe") or None
    step = timeframe_to_ms(tf) if tf else None
    if step is not None and len(ts_s) > 1:
        off = (np.diff(ts_s) % step) != 0
        if off.any():
            first = int(ts_s[1:][off][0])
            raise DataError(
                f"{name} has {int(off.sum())} bars off the {tf} grid (first at {ts_to_iso(first)}); "
                f"the data is not {tf} bars: pass the right timeframe (timeframe='...') or resample"
            )

    dropped_last = False
    if cfg.drop_incomplete_last and step is not None:
        now = int(time.time() * 1000) if now_ms is None else int(now_ms)
        if int(ts_s[-1]) + step > now:
            idx, ts_s = idx[:-1], ts_s[:-1]
            dropped_last = True
            if len(idx) == 0:
                raise DataError(f"{name}: its only bar has not closed yet; nothing is left to use")

    n_gaps, largest, first_gap = gap_summary(ts_s, tf) if tf else (0, 0, None)
    if n_gaps and cfg.gaps == "error" and step is not None and first_gap is not None:
        n_missing = int(((np.diff(ts_s) // step) - 1).sum())
        raise DataError(
            f"{name} has {n_gaps} gaps ({n_missing} missing {tf} bars, largest {largest}; first "
            f"after the bar at {ts_to_iso(first_gap)}); pass gaps='ffill' to insert flat bars or "
            "gaps='report' to keep them"
        )

    extras = [c for c in raw_data.columns if c not in OHLCV_COLUMNS and c != time_col]
    columns: dict[str, Any] = {"ts_ms": ts_s, **{c: vals[c][idx] for c in VALUE_COLUMNS}}
    columns.update({c: raw_data[c].to_numpy()[idx] for c in extras})
    out = pd.DataFrame(columns, copy=False)
    if FILLED_COLUMN in out.columns:
        out[FILLED_COLUMN] = out[FILLED_COLUMN].to_numpy(dtype=bool, na_value=False)

    n_filled = 0
    if n_gaps and cfg.gaps == "ffill" and step is not None:
        out = _forward_fill(out, step, extras)
        n_filled = len(out) - len(ts_s)
    elif cfg.gaps == "ffill" and FILLED_COLUMN not in out.columns:
        out[FILLED_COLUMN] = np.zeros(len(out), dtype=bool)

    report = CleanReport(
        rows_in=n,
        rows_out=len(out),
        reversed=was_reversed,
        n_unsorted_fixed=n_unsorted,
        n_duplicates_identical=n_dup_identical,
        n_duplicates_conflicting=n_dup_conflicting,
        n_invalid=n_invalid,
        n_invalid_rows=n_invalid_rows,
        n_gaps=n_gaps,
        largest_gap_bars=largest,
        first_gap_ts_ms=first_gap,
        n_filled=n_filled,
        dropped_incomplete_last=dropped_last,
        timeframe=tf,
    )
    out.attrs = {**raw_data.attrs, "timeframe": tf, "clean_report": report.to_dict()}
    level = logging.WARNING if report.changed or (n_gaps and cfg.gaps == "report") else logging.INFO
    logger.log(
        level,
        "cleaned source=%s symbol=%s %s",
        name, raw_data.attrs.get("symbol", ""), report.summary(),
    )
    return out


def _forward_fill(out: pd.DataFrame, step: int, extras: list[str]) -> pd.DataFrame:
    """Insert flat bars (OHLC = previous close, volume 0, ``filled=True``) into every gap."""
    ts = out["ts_ms"].to_numpy()
    grid = np.arange(ts[0], ts[-1] + step, step, dtype=np.int64)
    real = np.zeros(len(grid), dtype=bool)
    real[(ts - ts[0]) // step] = True
    src = np.cumsum(real) - 1  # the last real bar at or before each grid point
    filled = ~real
    close = out["close"].to_numpy()
    full = pd.DataFrame({"ts_ms": grid}, copy=False)
    for c in PRICE_COLUMNS:
        full[c] = np.where(filled, close[src], out[c].to_numpy()[src])
    full["volume"] = np.where(filled, 0.0, out["volume"].to_numpy()[src])
    for c in extras:
        if c == FILLED_COLUMN:
            continue
        full[c] = out[c].iloc[src].reset_index(drop=True).where(pd.Series(~filled))
    prior = out[FILLED_COLUMN].to_numpy(dtype=bool)[src] if FILLED_COLUMN in out.columns else False
    full[FILLED_COLUMN] = filled | prior
    return full


__all__ = [
    "INVALID_REASONS",
    "CleanConfig",
    "CleanReport",
    "datetimes_to_ms",
    "infer_timeframe",
    "preprocess_data",
    "ts_to_iso",
]
