"""Parquet storage of cleaned candles: atomic writes, self-describing metadata, a catalog.

Every stored file carries its own description in the Parquet key-value metadata (symbol,
exchange, timeframe, schema version, first/last bar, gap summary), so the catalog is derived by
reading file footers; there is no second index to fall out of sync.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DataError
from .timeframes import timeframe_to_ms

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
OHLCV_COLUMNS = ("ts_ms", "open", "high", "low", "close", "volume")
_META_KEY = b"coinrl"


@dataclass(frozen=True)
class CatalogEntry:
    """What one stored file holds (read from its Parquet metadata)."""

    path: Path
    symbol: str
    exchange: str
    timeframe: str
    rows: int
    first_ts_ms: int | None
    last_ts_ms: int | None
    n_gaps: int
    largest_gap_bars: int
    schema_version: int


def atomic_write_bytes(path: str | Path, write: Any) -> None:
    """Write a file atomically: ``write(tmp_path)`` then fsync and rename over ``path``.

    A crash at any point leaves either the old file or the new one, never half of either.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600; keep the mode of the file being replaced, else 0644.
    mode = stat.S_IMODE(dest.stat().st_mode) if dest.is_file() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    raise DataError(
        f"cannot store metadata value {value!r} of type {type(value).__name__}; "
        "extra_meta and attrs must be JSON-serialisable (str, numbers, lists, dicts)"
    )


def gap_summary(ts_ms: np.ndarray, timeframe: str) -> tuple[int, int, int | None]:
    """Count missing-bar gaps in ascending open times.

    Returns:
        ``(n_gaps, largest_gap_bars, first_gap_ts_ms)``: number of places where one or more bars
        are missing, the most bars missing at one place, and the open time of the bar before
        the first gap (None when there is none).
    """
    if len(ts_ms) < 2:
        return 0, 0, None
    step = timeframe_to_ms(timeframe)
    d = np.diff(np.asarray(ts_ms, dtype=np.int64))
    gaps = d > step
    if not gaps.any():
        return 0, 0, None
    missing = d[gaps] // step - 1
    first = int(np.asarray(ts_ms)[:-1][gaps][0])
    return int(gaps.sum()), int(missing.max()), first


def _check_frame(df: pd.DataFrame) -> None:
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"cannot store: columns {missing} missing; expected {list(OHLCV_COLUMNS)} "
            "(run read_ohlcv/preprocess_data first)"
        )
    ts = df["ts_ms"].to_numpy()
    if len(ts) > 1 and not bool(np.all(np.diff(ts) > 0)):
        raise DataError("cannot store: ts_ms is not strictly ascending; run preprocess_data first")


def store_data(
    data: pd.DataFrame,
    filename: str | Path,
    *,
    symbol: str | None = None,
    exchange: str | None = None,
    timeframe: str | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Write cleaned candles to Parquet atomically (temp file + rename).

    Args:
        data: frame with ``ts_ms`` (int64 UTC ms, ascending, unique) and float OHLCV columns;
            extra columns are kept. Missing ``symbol``/``exchange``/``timeframe`` are taken
            from ``data.attrs``.
        filename: destination ``.parquet`` path; parent folders are created.
        extra_meta: more JSON-serialisable provenance to keep in the file's metadata.

    Returns:
        The path written.
    """
    _check_frame(data)
    attrs = dict(data.attrs)
    symbol = symbol or attrs.get("symbol") or ""
    exchange = exchange or attrs.get("exchange") or ""
    timeframe = timeframe or attrs.get("timeframe")
    if not timeframe:
        raise DataError("cannot store: timeframe unknown; pass timeframe='1h' (or set data.attrs)")
    ts = data["ts_ms"].to_numpy(dtype=np.int64)
    n_gaps, largest, first_gap = gap_summary(ts, timeframe)
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "symbol": symbol,
        "exchange": exchange,
        "timeframe": timeframe,
        "rows": len(data),
        "first_ts_ms": int(ts[0]) if len(ts) else None,
        "last_ts_ms": int(ts[-1]) if len(ts) else None,
        "n_gaps": n_gaps,
        "largest_gap_bars": largest,
        "first_gap_ts_ms": first_gap,
        "source": str(attrs.get("source", "")),
        "format": attrs.get("format", ""),
    }
    if extra_meta:
        meta.update(extra_meta)
    frame = data.reset_index(drop=True).copy()
    frame.attrs = {}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    kv = dict(table.schema.metadata or {})
    kv[_META_KEY] = json.dumps(meta, sort_keys=True, default=_json_default).encode()
    table = table.replace_schema_metadata(kv)
    atomic_write_bytes(filename, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    logger.info(
        "stored symbol=%s exchange=%s timeframe=%s rows=%d gaps=%d path=%s",
        symbol, exchange, timeframe, len(data), n_gaps, filename,
    )
    return Path(filename)


def merge_into_store(
    data: pd.DataFrame,
    filename: str | Path,
    *,
    symbol: str | None = None,
    exchange: str | None = None,
    timeframe: str | None = None,
) -> tuple[Path, int]:
    """Store candles without ever replacing a stored series with a different one.

    A new file is written as :func:`store_data` does. An existing one is merged with
    ``data`` only when both are the same market (symbol, exchange and timeframe recorded in
    the file equal those of ``data``) and every bar they share is identical (OHLCV, bit for
    bit); the union of their bars is then stored. A series whose symbol is unknown is never
    merged into an existing file (two unlabelled exports may be two markets), except as an
    identical re-ingest, which changes nothing.

    Args:
        data: cleaned candles (``ts_ms`` ascending and unique, OHLCV).
        filename: the stored Parquet file.
        symbol, exchange, timeframe: of ``data``; default its ``attrs``.

    Returns:
        ``(path, new bars)``: bars of ``data`` the file did not hold before (0 when the file
        already held them all and was left as it was).

    Raises:
        DataError: the file holds another market, or bars that differ from ``data``'s.
    """
    dest = Path(filename)
    attrs = dict(data.attrs)
    symbol = symbol or attrs.get("symbol") or ""
    exchange = exchange or attrs.get("exchange") or ""
    timeframe = timeframe or attrs.get("timeframe") or ""
    if not dest.exists():
        return store_data(data, dest, symbol=symbol, exchange=exchange, timeframe=timeframe), len(data)
    _check_frame(data)
    meta = read_metadata(dest)
    hint = "pass --symbol/--exchange to store it under its own name, or --out another folder"
    stored_as = (meta.get("symbol", ""), meta.get("exchange", ""), meta.get("timeframe", ""))
    if not meta or stored_as != (symbol, exchange, timeframe):
        raise DataError(
            f"{dest} already holds {stored_as[0] or 'an unknown symbol'} on "
            f"{stored_as[1] or 'an unknown exchange'} {stored_as[2] or '?'}, not "
            f"{symbol or 'an unknown symbol'} on {exchange or 'an unknown exchange'} {timeframe}; "
            f"it is not replaced: {hint}"
        )
    old = load_data(dest)
    old_ts = old["ts_ms"].to_numpy(dtype=np.int64)
    new_ts = data["ts_ms"].to_numpy(dtype=np.int64)
    _, i_old, i_new = np.intersect1d(old_ts, new_ts, assume_unique=True, return_indices=True)
    cols = list(OHLCV_COLUMNS[1:])
    a = old[cols].to_numpy(dtype=np.float64)[i_old]
    b = data[cols].to_numpy(dtype=np.float64)[i_new]
    differ = np.flatnonzero((a != b).any(axis=1))
    if len(differ):
        k = int(differ[0])
        col = cols[int(np.flatnonzero(a[k] != b[k])[0])]
        ts = pd.Timestamp(int(old_ts[i_old[k]]), unit="ms", tz="UTC").isoformat()
        raise DataError(
            f"{dest} holds {len(i_old):,} of these bars and {len(differ):,} of them differ (first at "
            f"{ts}: stored {col}={float(a[k][cols.index(col)])!r}, new {col}={float(b[k][cols.index(col)])!r}); "
            f"a stored series is never replaced by another: {hint}"
        )
    fresh = np.setdiff1d(new_ts, old_ts, assume_unique=True)
    if len(fresh) == 0:
        logger.info("merge: %s already holds all %d bars; unchanged", dest, len(data))
        return dest, 0
    if not symbol:
        raise DataError(
            f"{dest} holds a series of unknown symbol and these candles add {len(fresh):,} bars "
            f"to it; unlabelled exports may be different markets, so they are not merged: {hint}"
        )
    keep = list(OHLCV_COLUMNS) + [c for c in old.columns if c in data.columns and c not in OHLCV_COLUMNS]
    add = data.loc[np.isin(new_ts, fresh), keep]
    merged = pd.concat([old[keep], add], ignore_index=True).sort_values("ts_ms", kind="stable")
    merged = merged.reset_index(drop=True)
    merged.attrs = {"source": attrs.get("source", ""), "format": attrs.get("format", "")}
    store_data(merged, dest, symbol=symbol, exchange=exchange, timeframe=timeframe)
    logger.info("merge: %s gained %d bars (now %d)", dest, len(fresh), len(merged))
    return dest, len(fresh)


def read_metadata(filename: str | Path) -> dict[str, Any]:
    """The coinrl metadata of a stored Parquet file ({} for a foreign Parquet file)."""
    try:
        schema = pq.read_schema(filename)
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{filename} is not a readable Parquet file: {e}") from e
    raw = (schema.metadata or {}).get(_META_KEY)
    return json.loads(raw) if raw else {}


def load_data(filename: str | Path) -> pd.DataFrame:
    """Read a file written by :func:`store_data`; ``attrs`` carries its metadata."""
    p = Path(filename)
    if not p.is_file():
        raise DataError(f"{p} does not exist; store data there first (coinrl data ingest/fetch)")
    meta = read_metadata(p)
    try:
        df = pq.read_table(p).to_pandas()
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{p} is not a readable Parquet file: {e}") from e
    _check_frame(df)
    df.attrs.update({k: meta[k] for k in ("symbol", "exchange", "timeframe") if k in meta})
    df.attrs["source"] = str(p)
    df.attrs["format"] = "coinrl-parquet"
    return df


def iter_catalog(directory: str | Path) -> Iterator[CatalogEntry]:
    """Every coinrl Parquet file under ``directory`` (recursively), sorted by path."""
    for p in sorted(Path(directory).rglob("*.parquet")):
        if p.name.startswith("."):
            continue
        try:
            meta = read_metadata(p)
        except DataError:
            logger.warning("skipping unreadable parquet path=%s", p)
            continue
        if not meta:
            continue
        yield CatalogEntry(
            path=p,
            symbol=meta.get("symbol", ""),
            exchange=meta.get("exchange", ""),
            timeframe=meta.get("timeframe", ""),
            rows=int(meta.get("rows", 0)),
            first_ts_ms=meta.get("first_ts_ms"),
            last_ts_ms=meta.get("last_ts_ms"),
            n_gaps=int(meta.get("n_gaps", 0)),
            largest_gap_bars=int(meta.get("largest_gap_bars", 0)),
            schema_version=int(meta.get("schema_version", 0)),
        )
