"""Download candles (and perpetual funding) from any ccxt exchange, resumably.

Design (one job: get closed bars from an exchange into a stored file, exactly once each):

* Pages are fetched with the exchange's per-request limit (Binance: 1000), paced by ccxt's rate
  limiter; temporary failures are retried with capped, jittered exponential backoff and any
  ``Retry-After`` honoured (:mod:`.exchange_client`); permanent ones fail fast with a clear
  error from :mod:`.errors`.
* Each page is written atomically as a part file ``<filename>.parts/<first ts_ms>.parquet``
  next to a ``manifest.json`` naming the request. A killed run (even ``kill -9``) leaves only
  whole part files; a re-run continues after the newest stored bar (parts and an existing final
  file), so the final result equals an uninterrupted download row for row.
* When every page is in, parts (plus the reused rows of an existing file) are consolidated into
  ``filename`` with :func:`~coinrl.pipeline.store.store_data` (temp file + rename) and the parts
  folder is removed. No half-written file is ever visible under ``filename``.
* Only CLOSED bars are stored: a bar opening at ``t`` is kept when ``t + timeframe <= now``,
  with "now" read from the exchange (``fetch_time``) at the start of the run.
* For perpetual swaps (``BTC/USDT:USDT``) the funding history is stored the same way beside the
  candles as ``<stem>.funding.parquet`` (``ts_ms`` funding time, ``funding_rate`` fraction).

Concurrent runs writing the same ``filename`` are not supported.
"""

from __future__ import annotations

import difflib
import json
import logging
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from .config import FrozenModel, validate_config
from .errors import BadSymbol, CoinrlError, ConfigError, DataError, ExchangeError
from .exchange_client import call_exchange, create_exchange
from .store import OHLCV_COLUMNS, atomic_write_bytes, load_data, read_metadata, store_data
from .timeframes import timeframe_to_ms

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""``progress(rows_done, rows_expected)``: called after every stored page."""

FUNDING_COLUMNS = ("ts_ms", "funding_rate")
_FUNDING_META_KEY = b"coinrl.funding"
_MANIFEST = "manifest.json"
_DEFAULT_PAGE_LIMIT = 1000
_SECONDS_LOOKALIKE = (1_000_000_000, 100_000_000_000)  # epoch seconds 2001..5138 vs ms 1970..1973


# -- small helpers --------------------------------------------------------------------------------
def to_ms(value: int | str | datetime, name: str = "time") -> int:
    """A time as int UTC epoch milliseconds.

    Args:
        value: epoch ms (int), an ISO string (no offset means UTC: ``"2024-01-01"``,
            ``"2024-01-01T12:00Z"``) or a timezone-aware ``datetime``.
        name: the argument's name, for error messages.

    Raises:
        ConfigError: a naive datetime, an unparsable string, or an int that looks like seconds.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name}={value!r}: expected epoch ms, an ISO string or a datetime")
    if isinstance(value, int | np.integer):
        v = int(value)
        if _SECONDS_LOOKALIKE[0] <= v < _SECONDS_LOOKALIKE[1]:
            raise ConfigError(
                f"{name}={v} looks like epoch SECONDS; pass milliseconds ({v * 1000})"
            )
        if v < 0:
            raise ConfigError(f"{name}={v} is negative; pass UTC epoch milliseconds >= 0")
        return v
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigError(
                f"{name}={value!r} is a naive datetime; pass an aware one "
                "(datetime(..., tzinfo=UTC)) or epoch ms"
            )
        return int(value.timestamp() * 1000)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return to_ms(int(text), name)
        try:
            ts = pd.Timestamp(text)
        except ValueError as e:
            raise ConfigError(f"{name}={value!r} is not an ISO time like 2024-01-01T00:00Z") from e
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        return int(ts.value // 1_000_000)
    raise ConfigError(f"{name}={value!r}: expected epoch ms, an ISO string or a datetime")


def funding_path(filename: str | Path) -> Path:
    """Where the funding history of candles stored at ``filename`` lives (``<stem>.funding.parquet``)."""
    p = Path(filename)
    return p.with_name(f"{p.stem}.funding.parquet")


def _parts_dir(filename: Path) -> Path:
    return filename.with_name(f"{filename.name}.parts")


def _iso(ts_ms: int) -> str:
    return pd.Timestamp(ts_ms, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")


def _write_table(path: Path, table: pa.Table) -> None:
    atomic_write_bytes(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


# -- resolving symbol, timeframe and page size ---------------------------------------------------
def _resolve_market(client: Any, symbol: str) -> dict[str, Any]:
    markets: dict[str, Any] = client.markets or {}
    if symbol in markets:
        return dict(markets[symbol])
    by_id = getattr(client, "markets_by_id", None) or {}
    if symbol in by_id and by_id[symbol]:
        return dict(by_id[symbol][0])
    candidates = list(markets)
    close = difflib.get_close_matches(symbol, candidates, n=5, cutoff=0.5)
    if not close:
        head = symbol.split("/")[0].upper()
        close = [s for s in candidates if s.startswith(head + "/")][:5]
    raise BadSymbol(
        f"{client.id} does not list symbol {symbol!r}; close matches: {close or 'none'} "
        f"({len(candidates)} markets; use the ccxt unified form BASE/QUOTE or BASE/QUOTE:SETTLE)"
    )


def _check_timeframe(client: Any, interval: str) -> None:
    if not client.has.get("fetchOHLCV"):
        raise BadSymbol(f"{client.id} does not provide candles (fetchOHLCV); pick another exchange")
    supported = list((client.timeframes or {}).keys())
    if supported and interval not in supported:
        raise BadSymbol(
            f"{client.id} does not support timeframe {interval!r}; supported: {supported}"
        )


def _feature_limit(client: Any, market: Mapping[str, Any], method: str) -> int | None:
    features = getattr(client, "features", None) or {}
    node = features.get(market.get("type") or "spot") or {}
    if isinstance(node, dict) and method not in node:
        node = node.get(market.get("subType") or "linear") or {}
    entry = node.get(method) if isinstance(node, dict) else None
    limit = entry.get("limit") if isinstance(entry, dict) else None
    return int(limit) if limit else None


# -- part files -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Series:
    """How one downloaded series is stored (candles or funding)."""

    kind: str  # "candles" | "funding"
    columns: tuple[str, ...]
    final: Path
    parts: Path

    def schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field("ts_ms", pa.int64())] + [pa.field(c, pa.float64()) for c in self.columns[1:]]
        )


def _prepare_parts(series: _Series, manifest: dict[str, Any]) -> None:
    """Create the parts folder for ``manifest``; drop stale temp files and foreign parts."""
    parts = series.parts
    mpath = parts / _MANIFEST
    if parts.is_dir():
        for tmp in parts.glob(".*.tmp"):  # a write killed before its rename
            tmp.unlink(missing_ok=True)
        old: dict[str, Any] | None = None
        try:
            old = json.loads(mpath.read_text(encoding="utf-8")) if mpath.is_file() else None
        except (OSError, ValueError):
            old = None
        if old != manifest:
            logger.warning(
                "discarding parts of another download path=%s had=%s want=%s", parts, old, manifest
            )
            shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    if not mpath.is_file():
        data = json.dumps(manifest, sort_keys=True).encode()
        atomic_write_bytes(mpath, lambda tmp: Path(tmp).write_bytes(data))


def _read_parts(series: _Series) -> pd.DataFrame:
    files = sorted(p for p in series.parts.glob("*.parquet") if not p.name.startswith("."))
    frames = []
    for p in files:
        try:
            frames.append(pq.read_table(p).to_pandas())
        except (OSError, pa.ArrowInvalid) as e:
            raise DataError(
                f"part file {p} is unreadable ({e}); delete the folder {series.parts} and re-run"
            ) from e
    if not frames:
        return _empty(series.columns)
    return pd.concat(frames, ignore_index=True)


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {c: np.empty(0, np.int64 if c == "ts_ms" else np.float64) for c in columns}
    )


def _write_part(series: _Series, frame: pd.DataFrame) -> None:
    first = int(frame["ts_ms"].iloc[0])
    table = pa.Table.from_pandas(
        frame.reset_index(drop=True), schema=series.schema(), preserve_index=False
    )
    _write_table(series.parts / f"{first:020d}.parquet", table)


def _normalise(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    out = frame[list(columns)].copy()
    out["ts_ms"] = out["ts_ms"].astype(np.int64)
    for c in columns[1:]:
        out[c] = out[c].astype(np.float64)
    out = out.sort_values("ts_ms", kind="stable").drop_duplicates("ts_ms", keep="last")
    return out.reset_index(drop=True)


# -- parsing exchange answers -------------------------------------------------------------------------
def _parse_ohlcv(rows: Any, what: str) -> pd.DataFrame:
    if not isinstance(rows, list) or any(not isinstance(r, list | tuple) or len(r) < 6 for r in rows):
        raise ExchangeError(
            f"{what}: the exchange answered something that is not a list of candles "
            f"(got {str(rows)[:120]!r}); retry later or report the exchange's API change"
        )
    ts_raw = [r[0] for r in rows]
    if any(not isinstance(t, int | np.integer) or isinstance(t, bool) for t in ts_raw):
        raise ExchangeError(f"{what}: a candle without an integer open time (got {rows[:2]!r})")
    try:
        values = np.array(
            [[np.nan if v is None else float(v) for v in r[1:6]] for r in rows], dtype=np.float64
        ).reshape(len(rows), 5)
    except (TypeError, ValueError) as e:
        raise ExchangeError(f"{what}: a candle with a non-numeric price or volume: {e}") from e
    frame = pd.DataFrame(values, columns=list(OHLCV_COLUMNS[1:]))
    frame.insert(0, "ts_ms", np.asarray(ts_raw, dtype=np.int64))
    n_nan = int(frame[list(OHLCV_COLUMNS[1:5])].isna().any(axis=1).sum())
    if n_nan:
        logger.warning("%s: %d candles with missing prices (kept as NaN)", what, n_nan)
    return _normalise(frame, OHLCV_COLUMNS)


def _parse_funding(records: Any, what: str) -> pd.DataFrame:
    if not isinstance(records, list) or any(not isinstance(r, dict) for r in records):
        raise ExchangeError(
            f"{what}: the exchange answered something that is not a funding history "
            f"(got {str(records)[:120]!r})"
        )
    ts, rate = [], []
    for r in records:
        t, f = r.get("timestamp"), r.get("fundingRate")
        if not isinstance(t, int) or isinstance(t, bool) or f is None:
            raise ExchangeError(f"{what}: a funding record without time or rate: {str(r)[:200]}")
        ts.append(t)
        rate.append(float(f))
    frame = pd.DataFrame({
        "ts_ms": np.asarray(ts, dtype=np.int64),
        "funding_rate": np.asarray(rate, dtype=np.float64),
    })
    return _normalise(frame, FUNDING_COLUMNS)


# -- the page loops ------------------------------------------------------------------------------------
def _download_candles(
    client: Any,
    symbol: str,
    interval: str,
    series: _Series,
    since_ms: int,
    last_open_ms: int,
    page_limit: int,
    max_retries: int,
    progress: Progress | None,
    done_rows: int,
    expected_rows: int,
) -> int:
    """Fetch pages from ``since_ms`` until bar ``last_open_ms``; each page becomes a part file."""
    tf_ms = timeframe_to_ms(interval)
    pages = 0
    while since_ms <= last_open_ms:
        what = f"fetch_ohlcv {symbol} {interval} since={since_ms} ({_iso(since_ms)})"
        rows = call_exchange(
            partial(client.fetch_ohlcv, symbol, interval, since=since_ms, limit=page_limit),
            what, client=client, max_retries=max_retries,
        )
        page = _parse_ohlcv(rows, what)
        pages += 1
        ts = page["ts_ms"].to_numpy()
        if len(ts) and int(ts.max()) < since_ms:
            raise ExchangeError(
                f"{what}: the exchange ignored 'since' (newest bar {_iso(int(ts.max()))}); "
                "it cannot be paginated this way"
            )
        keep = page[(ts >= since_ms) & (ts <= last_open_ms)]
        if len(keep):
            _write_part(series, keep)
            done_rows += len(keep)
            since_ms = int(keep["ts_ms"].iloc[-1]) + tf_ms
            logger.debug("page symbol=%s rows=%d next=%s", symbol, len(keep), _iso(since_ms))
            if progress is not None:
                progress(done_rows, max(expected_rows, done_rows))
        if not len(keep) or (len(ts) and int(ts.max()) > last_open_ms):
            break  # no more data, or reached bars that are not closed / past the end
    logger.info("candles downloaded symbol=%s timeframe=%s pages=%d", symbol, interval, pages)
    return done_rows


def _download_funding(
    client: Any,
    symbol: str,
    series: _Series,
    since_ms: int,
    end_ms: int,
    page_limit: int,
    max_retries: int,
) -> None:
    """Fetch funding events with ``since_ms <= ts_ms < end_ms``; each page becomes a part file."""
    pages = 0
    while since_ms < end_ms:
        what = f"fetch_funding_rate_history {symbol} since={since_ms} ({_iso(since_ms)})"
        recs = call_exchange(
            partial(client.fetch_funding_rate_history, symbol, since=since_ms, limit=page_limit),
            what, client=client, max_retries=max_retries,
        )
        page = _parse_funding(recs, what)
        pages += 1
        ts = page["ts_ms"].to_numpy()
        keep = page[(ts >= since_ms) & (ts < end_ms)]
        if len(keep):
            _write_part(series, keep)
            since_ms = int(keep["ts_ms"].iloc[-1]) + 1
        if not len(keep) or (len(ts) and int(ts.max()) >= end_ms):
            break
    logger.info("funding downloaded symbol=%s pages=%d", symbol, pages)


# -- the shared download routine ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Result:
    candles: pd.DataFrame
    rows_before: int


def _existing_prefix(
    path: Path, meta_want: Mapping[str, str], start_ms: int, columns: Sequence[str], kind: str
) -> pd.DataFrame | None:
    """Rows of an existing final file usable as the start of this download, else None."""
    if not path.is_file():
        return None
    if kind == "candles":
        meta = read_metadata(path)
        frame = load_data(path) if meta else None
    else:
        meta, frame = _read_funding_file(path)
    if frame is None or any(meta.get(k) != v for k, v in meta_want.items()):
        logger.warning("existing file is for another download; it will be replaced path=%s", path)
        return None
    first = int(frame["ts_ms"].iloc[0]) if len(frame) else None
    requested = meta.get("requested_start_ms")
    covers = (requested is not None and int(requested) <= start_ms) or (
        first is not None and first <= start_ms
    )
    if not covers:
        logger.warning(
            "existing file starts after the requested start; downloading again path=%s", path
        )
        return None
    out = _normalise(frame, columns)
    return out[out["ts_ms"] >= start_ms].reset_index(drop=True)


def _run_download(
    symbol: str,
    interval: str,
    start_ms: int,
    filename: Path,
    *,
    exchange: str,
    end_ms: int | None,
    exchange_url: str | None,
    exchange_options: Mapping[str, Any] | None,
    max_retries: int,
    progress: Progress | None,
    page_limit: int | None,
    require_existing: bool,
) -> _Result:
    tf_ms = timeframe_to_ms(interval)
    if end_ms is not None and end_ms < start_ms:
        raise ConfigError(f"end_time {_iso(end_ms)} is before start_time {_iso(start_ms)}")
    if page_limit is not None and page_limit <= 0:
        raise ConfigError(f"page_limit={page_limit} must be > 0")
    if filename.is_dir():
        raise ConfigError(f"{filename} is a folder; pass the path of a .parquet file")
    rows_before = 0
    if require_existing:
        meta = read_metadata(filename)
        if not meta:
            raise DataError(f"{filename} was not written by coinrl (no metadata); fetch it again")
        rows_before = int(meta.get("rows", 0))

    client = create_exchange(exchange, exchange_url=exchange_url, config=exchange_options)
    call_exchange(client.load_markets, f"load_markets {exchange}", client=client,
                  max_retries=max_retries)
    market = _resolve_market(client, symbol)
    unified = str(market["symbol"])
    _check_timeframe(client, interval)
    if require_existing:
        stored = (meta.get("symbol"), meta.get("timeframe"), meta.get("exchange"))
        if stored != (unified, interval, exchange):
            raise DataError(
                f"{filename} holds symbol={stored[0]} timeframe={stored[1]} exchange={stored[2]}, "
                f"not {unified} {interval} {exchange}; update it with its own settings or "
                "fetch into a new file"
            )
    if client.has.get("fetchTime"):
        now_ms = int(call_exchange(client.fetch_time, "fetch_time", client=client,
                                   max_retries=max_retries))
    else:
        now_ms = int(client.milliseconds())
    last_open_ms = now_ms - tf_ms  # a bar opening at t is closed when t + tf <= now
    if end_ms is not None:
        last_open_ms = min(last_open_ms, end_ms)

    ident = {"symbol": unified, "exchange": exchange, "timeframe": interval}
    candles = _Series("candles", OHLCV_COLUMNS, filename, _parts_dir(filename))
    prefix = _existing_prefix(filename, ident, start_ms, OHLCV_COLUMNS, "candles")
    _prepare_parts(candles, {**ident, "start_ms": start_ms, "kind": "candles"})
    stored_parts = _read_parts(candles)
    have = pd.concat([f for f in (prefix, stored_parts) if f is not None and len(f)] or
                     [_empty(OHLCV_COLUMNS)], ignore_index=True)
    since = max(start_ms, int(have["ts_ms"].max()) + tf_ms) if len(have) else start_ms
    expected = max(0, (last_open_ms - start_ms) // tf_ms + 1)
    if since > start_ms:
        logger.info("resuming symbol=%s from=%s rows_stored=%d", unified, _iso(since), len(have))
    limit = page_limit or _feature_limit(client, market, "fetchOHLCV") or _DEFAULT_PAGE_LIMIT
    _download_candles(client, unified, interval, candles, since, last_open_ms, limit,
                      max_retries, progress, len(have), expected)

    new_parts = _read_parts(candles)
    frame = _consolidate(prefix, new_parts, OHLCV_COLUMNS, start_ms, last_open_ms)
    if not len(frame):
        shutil.rmtree(candles.parts, ignore_errors=True)
        raise DataError(
            f"{exchange} has no closed {interval} candles for {unified} between "
            f"{_iso(start_ms)} and {_iso(last_open_ms)}; check start_time/end_time"
        )
    if prefix is None or len(new_parts) or len(frame) != len(prefix):
        frame.attrs.update(ident)
        store_data(frame, filename, symbol=unified, exchange=exchange, timeframe=interval,
                   extra_meta={"requested_start_ms": start_ms, "fetched_at_ms": now_ms})
    else:
        logger.info("no new candles symbol=%s path=%s", unified, filename)
    shutil.rmtree(candles.parts, ignore_errors=True)

    if market.get("swap") and client.has.get("fetchFundingRateHistory"):
        cover_end = int(frame["ts_ms"].iloc[-1]) + tf_ms
        _fetch_funding_series(client, market, ident, filename, int(frame["ts_ms"].iloc[0]),
                              cover_end, max_retries)
    elif market.get("swap"):
        logger.warning("%s has no funding history API; skipped symbol=%s", exchange, unified)

    frame = frame.reset_index(drop=True)
    frame.attrs.update(ident)
    if progress is not None:
        progress(len(frame), len(frame))
    return _Result(frame, rows_before)


def _consolidate(
    prefix: pd.DataFrame | None,
    parts: pd.DataFrame,
    columns: Sequence[str],
    start_ms: int,
    last_ms: int,
) -> pd.DataFrame:
    frames = [f for f in (prefix, parts) if f is not None and len(f)]
    if not frames:
        return _empty(columns)
    out = _normalise(pd.concat(frames, ignore_index=True), columns)
    ts = out["ts_ms"].to_numpy()
    return out[(ts >= start_ms) & (ts <= last_ms)].reset_index(drop=True)


def _fetch_funding_series(
    client: Any,
    market: Mapping[str, Any],
    ident: Mapping[str, str],
    filename: Path,
    first_ms: int,
    cover_end_ms: int,
    max_retries: int,
) -> None:
    fpath = funding_path(filename)
    series = _Series("funding", FUNDING_COLUMNS, fpath, _parts_dir(fpath))
    want = {"symbol": ident["symbol"], "exchange": ident["exchange"]}
    prefix = _existing_prefix(fpath, want, first_ms, FUNDING_COLUMNS, "funding")
    _prepare_parts(series, {**want, "start_ms": first_ms, "kind": "funding"})
    stored = _read_parts(series)
    have = [f for f in (prefix, stored) if f is not None and len(f)]
    since = first_ms
    if have:
        since = max(first_ms, int(pd.concat(have)["ts_ms"].max()) + 1)
    limit = _feature_limit(client, market, "fetchFundingRateHistory") or _DEFAULT_PAGE_LIMIT
    _download_funding(client, str(market["symbol"]), series, since, cover_end_ms, limit,
                      max_retries)
    new_parts = _read_parts(series)
    frame = _consolidate(prefix, new_parts, FUNDING_COLUMNS, first_ms, cover_end_ms - 1)
    if prefix is None or len(new_parts) or len(frame) != len(prefix):
        _store_funding(frame, fpath, {**want, "requested_start_ms": first_ms})
    shutil.rmtree(series.parts, ignore_errors=True)


def _store_funding(frame: pd.DataFrame, path: Path, meta: Mapping[str, Any]) -> None:
    table = pa.Table.from_pandas(
        _normalise(frame, FUNDING_COLUMNS), schema=_Series("f", FUNDING_COLUMNS, path, path).schema(),
        preserve_index=False,
    )
    ts = frame["ts_ms"].to_numpy()
    full = {
        **meta,
        "kind": "funding",
        "schema_version": 1,
        "rows": len(frame),
        "first_ts_ms": int(ts[0]) if len(ts) else None,
        "last_ts_ms": int(ts[-1]) if len(ts) else None,
    }
    kv = dict(table.schema.metadata or {})
    kv[_FUNDING_META_KEY] = json.dumps(full, sort_keys=True).encode()
    _write_table(path, table.replace_schema_metadata(kv))
    logger.info("stored funding symbol=%s rows=%d path=%s", meta.get("symbol"), len(frame), path)


def _read_funding_file(path: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{path} is not a readable Parquet file: {e}") from e
    raw = (table.schema.metadata or {}).get(_FUNDING_META_KEY)
    meta: dict[str, Any] = json.loads(raw) if raw else {}
    frame = table.to_pandas()
    missing = [c for c in FUNDING_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path} is not a funding file: columns {missing} missing")
    return meta, frame


# -- public API -------------------------------------------------------------------------------------
def fetch_data(
    symbol: str,
    interval: str,
    start_time: int | str | datetime,
    filename: str | Path,
    *,
    exchange: str = "binance",
    end_time: int | str | datetime | None = None,
    exchange_url: str | None = None,
    exchange_options: Mapping[str, Any] | None = None,
    max_retries: int = 5,
    progress: Progress | None = None,
    page_limit: int | None = None,
) -> pd.DataFrame:
    """Download closed OHLCV candles through ccxt and store them, resumably.

    Args:
        symbol: ccxt unified symbol (``"BTC/USDT"``; perpetual: ``"BTC/USDT:USDT"``) or the
            exchange's market id.
        interval: ccxt timeframe (``"1h"``); must be one the exchange supports.
        start_time: first bar open time: UTC epoch ms, ISO string (UTC if no offset) or an aware
            datetime.
        filename: destination Parquet file. Pages go to ``<filename>.parts/`` until done.
        exchange: any ccxt exchange id.
        end_time: last bar open time to include (inclusive), same forms as ``start_time``;
            default: the newest closed bar.
        exchange_url: send every API request to this base URL (the emulator, a proxy).
        exchange_options: extra ccxt constructor settings (``{"timeout": 5000}``).
        max_retries: retries per request for temporary failures (429, 5xx, timeouts, drops).
        progress: ``progress(rows_done, rows_expected)`` after every page.
        page_limit: candles per request; default: the exchange's limit per ccxt (binance 1000).

    Returns:
        The stored frame: ``ts_ms`` (int64 UTC ms of bar open, ascending) and float64 ``open,
        high, low, close, volume`` (volume in base units); ``attrs`` has symbol/exchange/timeframe.

    Raises:
        ConfigError: bad arguments (unknown exchange, malformed time or timeframe).
        BadSymbol: the exchange does not list the symbol or the timeframe (with suggestions).
        TemporaryExchangeError: still failing after ``max_retries``; re-run to resume.
        ExchangeError: a permanent exchange failure or an undecodable answer.
        DataError: no closed candles in the range.

    Example:
        >>> df = fetch_data("BTC/USDT", "1h", "2024-01-01", "data/btc_1h.parquet")  # doctest: +SKIP
    """
    path = Path(filename)
    start_ms = to_ms(start_time, "start_time")
    end_ms = to_ms(end_time, "end_time") if end_time is not None else None
    timeframe_to_ms(interval)  # malformed timeframe: ConfigError before any request
    result = _run_download(
        symbol, interval, start_ms, path, exchange=exchange, end_ms=end_ms,
        exchange_url=exchange_url, exchange_options=exchange_options, max_retries=max_retries,
        progress=progress, page_limit=page_limit, require_existing=False,
    )
    logger.info(
        "fetched symbol=%s exchange=%s timeframe=%s rows=%d path=%s",
        result.candles.attrs.get("symbol"), exchange, interval, len(result.candles), path,
    )
    return result.candles


def update_data(
    symbol: str,
    interval: str,
    filename: str | Path,
    *,
    exchange: str | None = None,
    exchange_url: str | None = None,
    exchange_options: Mapping[str, Any] | None = None,
    max_retries: int = 5,
    progress: Progress | None = None,
    page_limit: int | None = None,
) -> int:
    """Append the candles closed since the last stored one to ``filename`` (atomic rewrite).

    Idempotent: with nothing new the file is left untouched and 0 is returned. A perpetual's
    funding file is brought up to date too.

    Args:
        symbol, interval: must match what the file holds.
        filename: a file written by :func:`fetch_data` (or :func:`store_data` with metadata).
        exchange: ccxt id; default: the one recorded in the file.
        exchange_url, exchange_options, max_retries, progress, page_limit: as in
            :func:`fetch_data`.

    Returns:
        Number of new rows stored.

    Raises:
        DataError: the file is missing, or holds another symbol/timeframe/exchange.
    """
    path = Path(filename)
    if not path.is_file():
        raise DataError(f"{path} does not exist; download it first with fetch_data")
    meta = read_metadata(path)
    exchange_id = exchange or str(meta.get("exchange") or "binance")
    if meta.get("timeframe") != interval:
        raise DataError(
            f"{path} holds timeframe {meta.get('timeframe')!r}, not {interval!r}; "
            "update it with its own timeframe or fetch into a new file"
        )
    start_ms = meta.get("requested_start_ms")
    if start_ms is None:
        start_ms = meta.get("first_ts_ms")
    if start_ms is None:
        raise DataError(f"{path} is empty; fetch it again with fetch_data")
    result = _run_download(
        symbol, interval, int(start_ms), path, exchange=exchange_id, end_ms=None,
        exchange_url=exchange_url, exchange_options=exchange_options, max_retries=max_retries,
        progress=progress, page_limit=page_limit, require_existing=True,
    )
    added = len(result.candles) - result.rows_before
    logger.info("updated symbol=%s timeframe=%s new_rows=%d path=%s", symbol, interval, added, path)
    return added


def load_funding(filename: str | Path) -> pd.DataFrame:
    """Load a funding history stored by :func:`fetch_data`.

    Args:
        filename: the ``<stem>.funding.parquet`` file, or the candles file it sits beside.

    Returns:
        ``ts_ms`` (int64 UTC ms funding time, ascending) and ``funding_rate`` (float64 fraction
        of position notional; positive: longs pay shorts); ``attrs`` has symbol and exchange.
    """
    p = Path(filename)
    if not p.name.endswith(".funding.parquet"):
        p = funding_path(p)
    if not p.is_file():
        raise DataError(
            f"{p} does not exist; funding is downloaded for perpetual symbols (BTC/USDT:USDT)"
        )
    meta, frame = _read_funding_file(p)
    out = _normalise(frame, FUNDING_COLUMNS)
    out.attrs.update({k: meta[k] for k in ("symbol", "exchange") if k in meta})
    out.attrs["source"] = str(p)
    return out


def align_funding(
    candles: pd.DataFrame, funding: pd.DataFrame, timeframe: str | None = None
) -> pd.DataFrame:
    """Candles with a ``funding_rate`` column: the funding charged during each bar.

    A funding event at ``f`` is charged in the bar with ``open <= f < open + timeframe``; bars
    with none get 0.0, a bar with several gets their sum. Events outside every bar are ignored.

    Args:
        candles: frame with ``ts_ms`` (bar open, ascending).
        funding: frame with ``ts_ms`` (funding time) and ``funding_rate`` (fraction).
        timeframe: bar length; default ``candles.attrs["timeframe"]``.

    Returns:
        A copy of ``candles`` with ``funding_rate`` (float64).
    """
    tf = timeframe or candles.attrs.get("timeframe")
    if not tf:
        raise DataError("align_funding: timeframe unknown; pass timeframe='1h'")
    tf_ms = timeframe_to_ms(str(tf))
    for name, frame, cols in (("candles", candles, ("ts_ms",)),
                              ("funding", funding, FUNDING_COLUMNS)):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise DataError(f"align_funding: {name} lack columns {missing}")
    bar_ts = candles["ts_ms"].to_numpy(dtype=np.int64)
    f_ts = funding["ts_ms"].to_numpy(dtype=np.int64)
    f_rate = funding["funding_rate"].to_numpy(dtype=np.float64)
    idx: npt.NDArray[np.intp] = np.searchsorted(bar_ts, f_ts, side="right") - 1
    valid = idx >= 0
    valid[valid] &= f_ts[valid] < bar_ts[idx[valid]] + tf_ms
    out = candles.copy()
    charged = np.zeros(len(bar_ts), dtype=np.float64)
    np.add.at(charged, idx[valid], f_rate[valid])
    out["funding_rate"] = charged
    if int((~valid).sum()):
        logger.debug("align_funding: %d funding events outside the bars", int((~valid).sum()))
    return out


class UpdateJob(FrozenModel):
    """One file to keep up to date (``coinrl data update``)."""

    symbol: str
    interval: str
    filename: Path
    exchange: str | None = None
    exchange_url: str | None = None
    exchange_options: dict[str, Any] | None = None
    max_retries: int = Field(default=5, ge=0)


def schedule_updates(
    jobs: Sequence[UpdateJob | Mapping[str, Any]],
    every: str,
    *,
    max_runs: int | None = None,
    stop_event: threading.Event | None = None,
    run_now: bool = True,
    on_run: Callable[[int, dict[str, int]], None] | None = None,
) -> None:
    """Run :func:`update_data` for every job on a fixed interval (blocks; APScheduler).

    A failing job is logged and does not stop the others or later runs. Runs never overlap
    (``max_instances=1``) and missed runs collapse into one (``coalesce``).

    Args:
        jobs: :class:`UpdateJob` or mappings with its fields.
        every: interval as a timeframe string (``"1h"``, ``"15m"``, ``"1s"``).
        max_runs: stop after this many runs (default: run until ``stop_event`` or Ctrl-C).
        stop_event: set it to stop after the current run.
        run_now: run once immediately instead of waiting ``every`` first.
        on_run: ``on_run(run_number, {filename: new_rows or -1 on error})`` after each run.
    """
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    parsed = [
        j if isinstance(j, UpdateJob) else validate_config(UpdateJob, dict(j), f"jobs[{i}]")
        for i, j in enumerate(jobs)
    ]
    if not parsed:
        raise ConfigError("schedule_updates needs at least one job")
    if max_runs is not None and max_runs <= 0:
        raise ConfigError(f"max_runs={max_runs} must be > 0")
    every_s = timeframe_to_ms(every) / 1000.0
    scheduler = BlockingScheduler(timezone=UTC)
    runs = 0
    finished = threading.Event()

    def run_all() -> None:
        nonlocal runs
        results: dict[str, int] = {}
        for job in parsed:
            try:
                results[str(job.filename)] = update_data(
                    job.symbol, job.interval, job.filename, exchange=job.exchange,
                    exchange_url=job.exchange_url, exchange_options=job.exchange_options,
                    max_retries=job.max_retries,
                )
            except CoinrlError as e:
                results[str(job.filename)] = -1
                logger.error("update failed symbol=%s path=%s error=%s", job.symbol,
                             job.filename, e)
        runs += 1
        logger.info("update run=%d results=%s", runs, results)
        if on_run is not None:
            on_run(runs, results)
        if (max_runs is not None and runs >= max_runs) or (stop_event and stop_event.is_set()):
            finished.set()
            scheduler.shutdown(wait=False)

    kwargs: dict[str, Any] = {"next_run_time": datetime.now(UTC)} if run_now else {}
    scheduler.add_job(
        run_all, IntervalTrigger(seconds=every_s), id="coinrl-update", coalesce=True,
        max_instances=1, misfire_grace_time=max(1, int(every_s)), **kwargs,
    )
    if stop_event is not None:
        def watch() -> None:
            while not finished.is_set():
                if stop_event.wait(0.2):
                    finished.set()
                    if scheduler.running:
                        scheduler.shutdown(wait=False)
                    return

        threading.Thread(target=watch, name="coinrl-update-stop", daemon=True).start()
    logger.info("scheduling updates jobs=%d every=%s", len(parsed), every)
    try:
        scheduler.start()
    finally:
        finished.set()


__all__ = [
    "FUNDING_COLUMNS",
    "UpdateJob",
    "align_funding",
    "fetch_data",
    "funding_path",
    "load_funding",
    "schedule_updates",
    "to_ms",
    "update_data",
]
