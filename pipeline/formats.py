"""Readers of exchange OHLCV exports, with format detection.

:func:`parse_ohlcv` reads one file into the raw schema every later step expects::

    ts_ms   int64    bar OPEN time, UTC epoch milliseconds
    open    float64  quote currency
    high    float64
    low     float64
    close   float64
    volume  float64  BASE units

in file order, without cleaning, with ``attrs`` = ``format``, ``symbol`` (ccxt style,
``"BTC/USD"``; ``""`` when unknown), ``timeframe`` (from the most common spacing),
``exchange`` (``""`` when unknown) and ``source``. :func:`read_ohlcv` adds
:func:`~coinrl.pipeline.clean.preprocess_data`.

The readers live in :data:`KNOWN_FORMATS` (name → detector + parser). Detection sniffs the
first bytes and lines. CSVs are read by pyarrow's typed C++ reader with vectorised
``strptime`` for date strings (about 1.5–2 M rows/s including cleaning); only when that fails
is the file re-read with pandas' C parser, to name the first bad line and column. No per-row
Python anywhere.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from .clean import CleanConfig, datetimes_to_ms, infer_timeframe, preprocess_data
from .errors import DataError, UnknownFormatError
from .store import load_data

logger = logging.getLogger(__name__)

VALUE_COLUMNS = ("open", "high", "low", "close", "volume")
_SNIFF_BYTES = 8192
_SNIFF_LINES = 5

_QUOTES = (
    "FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USDP", "DAI", "USD", "EUR", "GBP", "JPY", "AUD",
    "CAD", "CHF", "TRY", "BRL", "KRW", "BTC", "XBT", "ETH", "BNB",
)
_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}
_EXCHANGES = frozenset({
    "binance", "binanceus", "bitfinex", "bitflyer", "bitmex", "bitstamp", "bittrex", "bybit",
    "coinbase", "coinbasepro", "deribit", "gateio", "gdax", "gemini", "hitbtc", "huobi", "kraken",
    "kucoin", "okx", "okex", "poloniex",
})
_TF_WORDS = {"minute": "1m", "hour": "1h", "hourly": "1h", "d": "1d", "day": "1d", "daily": "1d"}
_TF_RE = re.compile(r"^\d+[smhdw]$")

_DATE_LAYOUTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"), "%Y-%m-%d %H:%M:%S"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z?$"), "%Y-%m-%dT%H:%M:%S"),
    (re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$"), "%Y-%m-%d %H:%M"),
    (re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}-[AP]M$"), "%Y-%m-%d %I-%p"),
    (re.compile(r"^\d{4}-\d{2}-\d{2} \d{1,2}:\d{2}:\d{2} [AP]M$"), "%Y-%m-%d %I:%M:%S %p"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}$"), "%Y-%m-%d"),
)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Sniff:
    """The start of a file, as detectors see it.

    Attributes:
        path: the file.
        head: its first 8 KiB.
        lines: its first few text lines (no line ends; empty for a binary file).
    """

    path: Path
    head: bytes
    lines: tuple[str, ...]


@dataclass
class Parsed:
    """What a parser hands back: raw columns plus what it learnt about the market."""

    ts_ms: npt.NDArray[np.int64]
    values: dict[str, npt.NDArray[np.float64]]
    symbol: str = ""
    exchange: str = ""
    timeframe_hint: str | None = None
    extra_attrs: dict[str, Any] = field(default_factory=dict)
    extra_columns: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OhlcvFormat:
    """One known file format: a detector over the file's start and a parser."""

    name: str
    description: str
    detect: Callable[[Sniff], bool]
    parse: Callable[[Path, Sniff], Parsed]


# --------------------------------------------------------------------------- helpers


def split_symbol(raw: str) -> str:
    """A pair written any common way as a ccxt symbol: ``BTCUSD``, ``btc_usd``, ``XBTUSD`` → ``BTC/USD``.

    Returns ``""`` when the pair cannot be split with confidence.
    """
    s = raw.strip().upper()
    if not s:
        return ""
    parts = re.split(r"[/_\-:]", s)
    if len(parts) >= 2 and parts[0] and parts[1]:
        base, quote = parts[0], parts[1]
    elif len(s) == 8 and s[0] == "X" and s[4] in "XZ":  # Kraken's legacy XXBTZUSD
        base, quote = s[1:4], s[5:]
    else:
        # Longest quote first, but not at the cost of a base under 3 letters (XBTUSD is not XB/TUSD).
        fits = [q for q in _QUOTES if s.endswith(q) and len(s) > len(q)]
        if not fits:
            return ""
        quote = next((q for q in fits if len(s) - len(q) >= 3), fits[0])
        base = s[: -len(quote)]
    if not (base.isalnum() and quote.isalnum()):
        return ""
    return f"{_ALIASES.get(base, base)}/{_ALIASES.get(quote, quote)}"


def _name_hints(path: Path) -> tuple[str, str, str | None]:
    """(symbol, exchange, timeframe) guessed from names like ``btc_usd_1h_bitstamp.csv``,
    ``Bitstamp_BTCUSD_1h.csv``, ``BTCUSDT-1h-2024-01.csv`` or ``ETH_BTC-5m.feather``."""
    tokens = [t for t in re.split(r"[_\-\s.]+", path.stem) if t]
    tf: str | None = None
    exchange = ""
    words: list[str] = []
    for t in tokens:
        low = t.lower()
        if tf is None and _TF_RE.match(low):
            tf = low
        elif tf is None and low in _TF_WORDS:
            tf = _TF_WORDS[low]
        elif not exchange and low in _EXCHANGES:
            exchange = low
        elif t.isalpha():
            words.append(t)
    symbol = ""
    if len(words) == 2 and all(2 <= len(w) <= 6 for w in words) and words[1].upper() in _QUOTES:
        symbol = split_symbol(f"{words[0]}/{words[1]}")
    elif len(words) >= 1:
        symbol = split_symbol(words[0])
    return symbol, exchange, tf


def _epoch_to_ms(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Epoch numbers in s, ms, µs or ns (decided per row by magnitude) to ms."""
    v = np.asarray(values, dtype=np.int64)
    out = np.where(v < 100_000_000_000, v * 1000, v)  # < 1e11: seconds (until year 5138)
    out = np.where(v >= 100_000_000_000_000_000, v // 1_000_000, out)  # >= 1e17: ns
    out = np.where((v >= 100_000_000_000_000) & (v < 100_000_000_000_000_000), v // 1000, out)
    return out.astype(np.int64)


def _line_error(name: str, line: int, col: str, value: Any, expected: str) -> DataError:
    return DataError(f"{name} line {line}, column {col!r}: got {value!r}; expected {expected}")


def _numbers(
    df: pd.DataFrame, cols: dict[str, str], name: str, first_line: int
) -> dict[str, npt.NDArray[np.float64]]:
    """Columns as float64; a cell that is not a number is a DataError naming its line.

    Args:
        cols: output name → column label in ``df``.
        first_line: 1-based file line number of ``df``'s first row.
    """
    out: dict[str, npt.NDArray[np.float64]] = {}
    for key, col in cols.items():
        s = df[col]
        if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
            out[key] = s.to_numpy(dtype=np.float64, na_value=np.nan)
            continue
        num = pd.to_numeric(s, errors="coerce")
        bad = (num.isna() & s.notna()).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _line_error(name, first_line + i, str(col), s.iloc[i], "a number")
        out[key] = num.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _epochs(df: pd.DataFrame, col: str, name: str, first_line: int) -> npt.NDArray[np.int64]:
    """An integer epoch column (s/ms/µs, per row) as int64 ms."""
    s = df[col]
    if pd.api.types.is_integer_dtype(s.dtype):
        return _epoch_to_ms(s.to_numpy(dtype=np.int64))
    num = pd.to_numeric(s, errors="coerce")
    arr = num.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(arr) | (arr != np.round(arr))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _line_error(name, first_line + i, col, s.iloc[i], "a whole epoch time (s, ms or µs)")
    return _epoch_to_ms(arr.astype(np.int64))


def _date_layout(first: str, name: str, col: str, line: int) -> str:
    for pattern, layout in _DATE_LAYOUTS:
        if pattern.match(first.strip()):
            return layout
    raise _line_error(
        name, line, col, first,
        "a UTC date like 2022-03-01 00:00:00, 2022-03-01 00:00, 2019-10-17 09-AM or 2022-03-01",
    )


def _dates(
    values: pa.Array | pa.ChunkedArray, name: str, col: str, first_line: int
) -> npt.NDArray[np.int64]:
    """UTC date strings to int64 ms (pyarrow's vectorised strptime; layout from the first value)."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = pc.utf8_trim_whitespace(arr.cast(pa.string()))
    first = arr[0].as_py() if len(arr) and arr[0].is_valid else ""
    layout = _date_layout(first or "", name, col, first_line)
    if layout.endswith("%S") and "T" in layout:
        arr = pc.utf8_rtrim(arr, characters="Z")
    parsed = pc.strptime(arr, format=layout, unit="ms", error_is_null=True)
    if parsed.null_count:
        i = int(np.flatnonzero(parsed.is_null().to_numpy(zero_copy_only=False))[0])
        raise _line_error(name, first_line + i, col, values[i].as_py(), f"a UTC date laid out as {layout}")
    return np.asarray(parsed.cast(pa.int64()).to_numpy(), dtype=np.int64)


class _SlowPath(Exception):
    """The fast reader hit something it cannot explain well; re-read with pandas for the message."""


_ARROW_TYPES = {"epoch": pa.int64(), "date": pa.string(), "float": pa.float64()}


def _load_columns(
    path: Path,
    kinds: dict[str, str],
    *,
    skip_rows: int = 0,
    names: list[str] | None = None,
) -> dict[str, npt.NDArray[Any]]:
    """Read the CSV columns named in ``kinds`` as numpy: epochs → int64 ms, dates → int64 ms,
    floats → float64 (empty cells NaN).

    The fast path is pyarrow's C++ CSV reader (single-threaded, typed). When it fails, the
    file is re-read with pandas' C parser only to find and report the first bad line and column.

    Args:
        kinds: column label → ``"epoch"`` (s/ms/µs integers), ``"date"`` (UTC strings) or
            ``"float"``.
        skip_rows: lines before the header (or before the data when ``names`` is given).
        names: the column names of a header-less file (all of its columns).
    """
    first_line = skip_rows + (1 if names else 2)
    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(
                skip_rows=skip_rows, column_names=names, use_threads=False
            ),
            convert_options=pcsv.ConvertOptions(
                include_columns=list(kinds),
                column_types={c: _ARROW_TYPES[k] for c, k in kinds.items()},
            ),
        )
        if table.num_rows == 0:
            raise DataError(f"{path.name} has no data rows")
        out: dict[str, npt.NDArray[Any]] = {}
        for c, k in kinds.items():
            col = table.column(c)
            if k == "float":
                out[c] = np.asarray(col.to_numpy(), dtype=np.float64)
            elif col.null_count:
                raise _SlowPath
            elif k == "epoch":
                out[c] = _epoch_to_ms(col.to_numpy())
            else:
                out[c] = _dates(col, path.name, c, first_line)
        return out
    except (pa.ArrowInvalid, KeyError, _SlowPath):
        logger.debug("fast CSV read failed source=%s; re-reading with pandas", path.name)
    df = _read_csv(
        path, skiprows=skip_rows, header=None if names else "infer", names=names,
        usecols=list(kinds), dtype={c: str for c, k in kinds.items() if k == "date"},
    )
    if len(df) == 0:
        raise DataError(f"{path.name} has no data rows")
    out = {}
    for c, k in kinds.items():
        if k == "float":
            out[c] = _numbers(df, {c: c}, path.name, first_line)[c]
        elif k == "epoch":
            out[c] = _epochs(df, c, path.name, first_line)
        else:
            if df[c].isna().any():
                i = int(np.flatnonzero(df[c].isna().to_numpy())[0])
                raise _line_error(path.name, first_line + i, c, "", "a UTC date")
            out[c] = _dates(pa.array(df[c].astype(str), type=pa.string()), path.name, c, first_line)
    return out


def _read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path, engine="c", **kwargs)
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path.name} is empty; expected a CSV of OHLCV rows") from e
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path.name} could not be parsed as CSV: {e}") from e


def _fields(line: str) -> list[str]:
    return [f.strip().strip('"') for f in line.split(",")]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- CryptoDataDownload

_CDD_TIME_EPOCH = ("unix", "unix timestamp", "timestamp")
_CDD_TIME_DATE = ("date", "datetime", "time")


def _cdd_header_index(lines: tuple[str, ...], strict: bool = True) -> int | None:
    """Index of the header line among the first three: strict needs open, close and a time
    column; loose (for an explicitly named format) takes any line naming one OHLC column."""
    for i, line in enumerate(lines[:3]):
        cols = {c.lower() for c in _fields(line)}
        if strict and {"open", "close"} <= cols and cols & {*_CDD_TIME_EPOCH, *_CDD_TIME_DATE}:
            return i
        if not strict and cols & {"open", "high", "low", "close"}:
            return i
    return None


def _detect_cdd(s: Sniff) -> bool:
    if s.lines and "cryptodatadownload" in s.lines[0].lower():
        return True
    return _cdd_header_index(s.lines) is not None


def _cdd_volume_role(label: str, base: str, quote: str) -> str:
    """'base', 'quote' or '' (unknown) for a CryptoDataDownload volume column label."""
    low = label.strip().lower()
    if low in ("volumefrom", "volume from"):
        return "base"
    if low in ("volumeto", "volume to"):
        return "quote"
    unit = re.sub(r"^volume[\s_]*", "", low).upper()
    unit = _ALIASES.get(unit, unit)
    if unit and unit == base:
        return "base"
    if unit and unit == quote:
        return "quote"
    return ""


def _parse_cdd(path: Path, sniff: Sniff) -> Parsed:
    name = path.name
    h = _cdd_header_index(sniff.lines)
    if h is None:
        h = _cdd_header_index(sniff.lines, strict=False)
    if h is None:
        raise DataError(
            f"{name}: no CryptoDataDownload header found in its first lines; expected one like "
            "'unix,date,symbol,open,high,low,close,Volume BTC,Volume USD'"
        )
    header = _fields(sniff.lines[h])
    lower = {c.lower(): c for c in header}
    missing = [c for c in ("open", "high", "low", "close") if c not in lower]
    vol_labels = [c for c in header if c.lower().startswith("volume")]
    if not vol_labels:
        missing.append("volume")
    if missing:
        raise DataError(
            f"{name} line {h + 1}: header lacks {missing}; expected a CryptoDataDownload header like "
            f"'unix,date,symbol,open,high,low,close,Volume BTC,Volume USD' (got {header})"
        )
    row1 = _fields(sniff.lines[h + 1]) if len(sniff.lines) > h + 1 else []
    first_row = dict(zip([c.lower() for c in header], row1, strict=False))
    epoch_col = next(
        (lower[c] for c in _CDD_TIME_EPOCH if c in lower and _is_number(first_row.get(c, "0"))), None
    )
    date_col = next((lower[c] for c in (*_CDD_TIME_DATE, *_CDD_TIME_EPOCH) if c in lower), None)
    prices = {c: lower[c] for c in ("open", "high", "low", "close")}
    kinds = {c: "float" for c in (*prices.values(), *vol_labels)}
    if epoch_col is not None:
        time_col, time_kind = epoch_col, "epoch"
    elif date_col is not None:
        time_col, time_kind = date_col, "date"
    else:
        raise DataError(f"{name} line {h + 1}: header has no 'unix' or 'date' column (got {header})")
    cols = _load_columns(path, {time_col: time_kind, **kinds}, skip_rows=h)
    ts = cols[time_col]

    # Symbol: from the first data row's symbol column, else from the file name.
    symbol, exchange, tf_hint = _name_hints(path)
    symbol = split_symbol(first_row.get("symbol", "")) or symbol
    base, quote = symbol.split("/") if symbol else ("", "")

    vals = {k: cols[c] for k, c in prices.items()}
    vals["volume"], extra = _cdd_base_volume(
        {c: cols[c] for c in vol_labels}, vals["close"], base, quote, name, ts
    )
    return Parsed(ts, vals, symbol=symbol, exchange=exchange, timeframe_hint=tf_hint, extra_attrs=extra)


def _cdd_base_volume(
    vols: dict[str, npt.NDArray[np.float64]],
    close: npt.NDArray[np.float64],
    base: str,
    quote: str,
    name: str,
    ts_ms: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.float64], dict[str, Any]]:
    """Base volume from CryptoDataDownload's volume columns, fixing per-row swaps.

    With a base and a quote column, each row should satisfy ``base × close ≈ quote`` (up to the
    gap between VWAP and close). Bitstamp's export swaps the two columns for part of its
    history; a row is swapped when the labelled reading is off by more than 2× and the swapped
    reading fits better. Those rows are counted in ``attrs["n_volume_swapped"]``.
    """
    labels = list(vols)
    roles = {c: _cdd_volume_role(c, base, quote) for c in labels}
    if len(labels) == 1:
        (col,) = labels
        if roles[col] == "quote":
            logger.warning(
                "only a quote volume column source=%s column=%s; base volume = quote / close", name, col
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                return vols[col] / close, {"volume_from_quote": True}
        return vols[col], {}
    base_col = next((c for c in labels if roles[c] == "base"), None)
    quote_col = next((c for c in labels if roles[c] == "quote"), None)
    rest = [c for c in labels if c not in (base_col, quote_col)]
    if base_col is None:
        base_col = rest.pop(0)
    if quote_col is None and rest:
        quote_col = rest.pop(0)
    if quote_col is None:
        return vols[base_col], {}
    b, q = vols[base_col], vols[quote_col]
    with np.errstate(divide="ignore", invalid="ignore"):
        err_lab = np.abs(np.log(b * close / q))
        err_swap = np.abs(np.log(q * close / b))
    swapped = np.isfinite(err_swap) & (err_swap < err_lab) & (~np.isfinite(err_lab) | (err_lab > np.log(2.0)))
    n_swapped = int(swapped.sum())
    if n_swapped:
        t = ts_ms[swapped]
        logger.warning(
            "volume columns swapped in rows source=%s rows=%d base_column=%r quote_column=%r "
            "from_ts_ms=%d to_ts_ms=%d; using the base reading for each row",
            name, n_swapped, base_col, quote_col, int(t.min()), int(t.max()),
        )
    return np.where(swapped, q, b), {"n_volume_swapped": n_swapped}


# --------------------------------------------------------------------------- Binance, Kraken

_BINANCE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
    "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)


def _first_fields(s: Sniff) -> list[str]:
    return _fields(s.lines[0]) if s.lines else []


def _detect_binance(s: Sniff) -> bool:
    f = _first_fields(s)
    if len(f) != 12:
        return False
    if f[0].lower() == "open_time":
        return True
    return all(_is_number(x) for x in f) and f[0].isdigit() and len(f[0]) >= 12


def _parse_binance(path: Path, sniff: Sniff) -> Parsed:
    has_header = not _first_fields(sniff)[0].isdigit()
    kinds = {"open_time": "epoch", **{c: "float" for c in VALUE_COLUMNS}}
    cols = _load_columns(path, kinds, skip_rows=1 if has_header else 0, names=list(_BINANCE_COLUMNS))
    symbol, _, tf = _name_hints(path)
    return Parsed(
        cols["open_time"],  # ms, or µs in newer files: converted per row by magnitude
        {c: cols[c] for c in VALUE_COLUMNS}, symbol=symbol, exchange="binance", timeframe_hint=tf,
    )


def _detect_kraken(s: Sniff) -> bool:
    f = _first_fields(s)
    return len(f) == 7 and all(_is_number(x) for x in f) and f[0].isdigit() and len(f[0]) <= 11


def _parse_kraken(path: Path, sniff: Sniff) -> Parsed:
    kinds = {"time": "epoch", **{c: "float" for c in VALUE_COLUMNS}}
    cols = _load_columns(path, kinds, names=["time", *VALUE_COLUMNS, "trades"])  # time in s
    ts, vals = cols["time"], {c: cols[c] for c in VALUE_COLUMNS}
    symbol, _, tf = _name_hints(path)
    m = re.search(r"_(\d+)$", path.stem)  # Kraken names files PAIR_<minutes>.csv
    if m and tf is None:
        minutes = int(m.group(1))
        tf = f"{minutes // 1440}d" if minutes % 1440 == 0 else f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"
    return Parsed(ts, vals, symbol=symbol, exchange="kraken", timeframe_hint=tf)


# --------------------------------------------------------------------------- binary formats


def _detect_feather(s: Sniff) -> bool:
    return s.head[:6] == b"ARROW1" or s.head[:4] == b"FEA1"


def _parse_feather(path: Path, sniff: Sniff) -> Parsed:
    try:
        df = pd.read_feather(path)
    except (OSError, pa.ArrowException, ValueError) as e:
        raise DataError(f"{path.name} is not a readable feather file: {e}") from e
    missing = [c for c in ("date", *VALUE_COLUMNS) if c not in df.columns]
    if missing:
        raise DataError(
            f"{path.name} lacks columns {missing}; expected date (tz-aware), open, high, low, "
            f"close, volume (got {list(df.columns)})"
        )
    if len(df) == 0:
        raise DataError(f"{path.name} has no rows")
    ts = datetimes_to_ms(df["date"], f"{path.name} column 'date'")
    vals = _numbers(df, {c: c for c in VALUE_COLUMNS}, path.name, 1)
    symbol, exchange, tf = _name_hints(path)
    return Parsed(ts, vals, symbol=symbol, exchange=exchange, timeframe_hint=tf)


def _detect_parquet(s: Sniff) -> bool:
    return s.head[:4] == b"PAR1"


def _parse_coinrl_parquet(path: Path, sniff: Sniff) -> Parsed:
    df = load_data(path)
    if len(df) == 0:
        raise DataError(f"{path.name} has no rows")
    vals = _numbers(df, {c: c for c in VALUE_COLUMNS}, path.name, 1)
    extra_cols = {"filled": df["filled"].to_numpy(dtype=bool)} if "filled" in df.columns else {}
    return Parsed(
        df["ts_ms"].to_numpy(dtype=np.int64), vals,
        symbol=str(df.attrs.get("symbol", "")), exchange=str(df.attrs.get("exchange", "")),
        timeframe_hint=df.attrs.get("timeframe"), extra_columns=extra_cols,
    )


KNOWN_FORMATS: dict[str, OhlcvFormat] = {
    f.name: f
    for f in (
        OhlcvFormat(
            "cryptodatadownload",
            "CryptoDataDownload CSV (unix/date, symbol, open, high, low, close, volume columns; newest first)",
            _detect_cdd, _parse_cdd,
        ),
        OhlcvFormat(
            "binance",
            "Binance public-data kline CSV (12 columns, no header; open time in ms or µs)",
            _detect_binance, _parse_binance,
        ),
        OhlcvFormat(
            "kraken",
            "Kraken OHLCVT CSV (7 columns, no header: time in s, open, high, low, close, volume, trades)",
            _detect_kraken, _parse_kraken,
        ),
        OhlcvFormat(
            "feather",
            "feather file (freqtrade style) with columns date (tz-aware), open, high, low, close, volume",
            _detect_feather, _parse_feather,
        ),
        OhlcvFormat(
            "coinrl-parquet",
            "Parquet written by coinrl.pipeline.store.store_data",
            _detect_parquet, _parse_coinrl_parquet,
        ),
    )
}
"""Format name → detector and parser. Detection tries them in this order."""


def _known_list() -> str:
    return "; ".join(f"{f.name} ({f.description})" for f in KNOWN_FORMATS.values())


# --------------------------------------------------------------------------- public API


def _sniff(path: Path) -> Sniff:
    if not path.exists():
        raise DataError(f"{path} does not exist; pass the path of an OHLCV file")
    if not path.is_file():
        raise DataError(f"{path} is not a file; pass the path of an OHLCV file")
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if not head.strip():
        raise DataError(f"{path.name} is empty; expected OHLCV data (one of: {', '.join(KNOWN_FORMATS)})")
    lines: tuple[str, ...] = ()
    if b"\x00" not in head:
        text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
        lines = tuple(line.rstrip("\r") for line in text.split("\n")[:_SNIFF_LINES])
    return Sniff(path=path, head=head, lines=lines)


def detect_format(path: str | Path) -> str:
    """Name of the :data:`KNOWN_FORMATS` entry that recognises the file.

    Raises:
        DataError: the file is missing or empty.
        UnknownFormatError: no known format recognises it (the message lists them).
    """
    sniff = _sniff(Path(path))
    return _detect(sniff)


def _detect(sniff: Sniff) -> str:
    for f in KNOWN_FORMATS.values():
        if f.detect(sniff):
            return f.name
    first = sniff.lines[0][:80] if sniff.lines else repr(sniff.head[:16])
    raise UnknownFormatError(
        f"{sniff.path.name} is not a known OHLCV format (it starts with {first!r}). Known formats: "
        f"{_known_list()}. If it is one of these, name it: fmt='<name>' (CLI: --format <name>)"
    )


def parse_ohlcv(path: str | Path, fmt: str = "auto") -> pd.DataFrame:
    """Read one OHLCV file as is (file order, no cleaning) into the raw coinrl schema.

    Args:
        path: an exchange export or a stored coinrl Parquet file.
        fmt: a :data:`KNOWN_FORMATS` name, or ``"auto"`` to detect from the file's start.

    Returns:
        Columns ``ts_ms`` (int64 UTC epoch ms, bar open time), ``open, high, low, close``
        (float64, quote currency), ``volume`` (float64, base units), plus ``filled`` for stored
        files that have it. ``attrs``: ``format``, ``symbol`` (``"BTC/USD"``; ``""`` when
        unknown), ``timeframe`` (modal spacing, e.g. ``"1h"``), ``exchange`` (``""`` when
        unknown), ``source`` (the path), and ``n_volume_swapped`` for CryptoDataDownload files.

    Raises:
        UnknownFormatError: ``fmt`` is not a known name, or detection found no match.
        DataError: the file is missing, empty, lacks columns or has a cell that is not a number
            (the message names the line and column).

    Example:
        >>> raw = parse_ohlcv("btc_usd_1h_bitstamp.csv")  # doctest: +SKIP
        >>> raw.attrs["symbol"], raw.attrs["timeframe"]  # doctest: +SKIP
        ('BTC/USD', '1h')
    """
    p = Path(path)
    if fmt != "auto" and fmt not in KNOWN_FORMATS:
        raise UnknownFormatError(
            f"format {fmt!r} is unknown; pass fmt='auto' or one of: {', '.join(KNOWN_FORMATS)} "
            f"({_known_list()})"
        )
    sniff = _sniff(p)
    name = _detect(sniff) if fmt == "auto" else fmt
    parsed = KNOWN_FORMATS[name].parse(p, sniff)
    columns: dict[str, Any] = {"ts_ms": np.asarray(parsed.ts_ms, dtype=np.int64)}
    columns.update({c: np.asarray(parsed.values[c], dtype=np.float64) for c in VALUE_COLUMNS})
    columns.update(parsed.extra_columns)
    frame = pd.DataFrame(columns, copy=False)
    tf = infer_timeframe(frame["ts_ms"].to_numpy()) or parsed.timeframe_hint
    if parsed.timeframe_hint and tf != parsed.timeframe_hint:
        logger.warning(
            "timeframe from data differs from the file name source=%s inferred=%s name=%s",
            p.name, tf, parsed.timeframe_hint,
        )
    attrs: dict[Hashable, Any] = {
        "format": name,
        "symbol": parsed.symbol,
        "timeframe": tf,
        "exchange": parsed.exchange,
        "source": str(p),
    }
    attrs.update(parsed.extra_attrs)
    frame.attrs = attrs
    logger.info(
        "parsed source=%s format=%s symbol=%s exchange=%s timeframe=%s rows=%d",
        p.name, name, parsed.symbol, parsed.exchange, tf, len(frame),
    )
    return frame


def read_ohlcv(
    path: str | Path, fmt: str = "auto", clean: CleanConfig | None = None
) -> pd.DataFrame:
    """Read and clean one OHLCV file: :func:`parse_ohlcv` then :func:`preprocess_data`.

    Args:
        path: an exchange export or a stored coinrl Parquet file.
        fmt: a :data:`KNOWN_FORMATS` name, or ``"auto"``.
        clean: cleaning policies; ``CleanConfig()`` defaults when None.

    Returns:
        Ascending, unique ``ts_ms`` with float64 OHLCV (volume in base units), ``attrs`` as
        :func:`parse_ohlcv` plus ``clean_report`` (a plain dict of :class:`CleanReport`).

    Example:
        >>> df = read_ohlcv("btc_usd_1h_bitstamp.csv")  # doctest: +SKIP
        >>> df.attrs["clean_report"]["reversed"]  # doctest: +SKIP
        True
    """
    return preprocess_data(parse_ohlcv(path, fmt), clean)


__all__ = [
    "KNOWN_FORMATS",
    "OhlcvFormat",
    "Parsed",
    "Sniff",
    "detect_format",
    "parse_ohlcv",
    "read_ohlcv",
    "split_symbol",
]
