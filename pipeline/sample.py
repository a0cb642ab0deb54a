"""The packaged sample: two years of hourly BTC/USD candles from Bitstamp, cleaned.

It lets every example, test and quick start run without a download. The file
``pipeline/data/btc_usd_1h_sample.parquet`` is built by :func:`build_sample` from the
CryptoDataDownload Bitstamp export (see ``pipeline/data/README.md``)::

    python -m coinrl.pipeline.sample /path/to/btc_usd_1h_bitstamp.csv
"""

from __future__ import annotations

import argparse
import logging
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .formats import read_ohlcv
from .store import load_data, store_data
from .timeframes import MS_PER_YEAR, timeframe_to_ms

logger = logging.getLogger(__name__)

SAMPLE_FILENAME = "btc_usd_1h_sample.parquet"
SAMPLE_SYMBOL = "BTC/USD"
SAMPLE_EXCHANGE = "bitstamp"
SAMPLE_TIMEFRAME = "1h"
MAX_SAMPLE_BYTES = 1_000_000


def sample_path() -> Path:
    """Where the packaged sample lives (inside the installed ``coinrl.pipeline`` package)."""
    return Path(__file__).resolve().parent / "data" / SAMPLE_FILENAME


def build_sample(src: Path, out: Path, years: float = 2.0) -> Path:
    """Build the packaged sample from the CryptoDataDownload Bitstamp BTC/USD 1h export.

    Reads ``src`` with :func:`~coinrl.pipeline.formats.read_ohlcv` (default cleaning: flips
    the newest-first file, fixes Bitstamp's swapped volume columns to base units, reports
    gaps), keeps the last ``years`` × 365 days of hourly bars, and stores them with
    :func:`~coinrl.pipeline.store.store_data` (zstd Parquet with provenance metadata).

    Args:
        src: path of ``btc_usd_1h_bitstamp.csv``.
        out: destination ``.parquet`` path.
        years: length of the kept window in 365-day years (> 0).

    Returns:
        The path written.

    Raises:
        DataError: the source is not hourly BTC/USD, or the file would exceed 1 MB.
    """
    if not years > 0:
        raise DataError(f"years must be > 0, got {years}")
    src = Path(src)
    df = read_ohlcv(src)
    if df.attrs.get("timeframe") != SAMPLE_TIMEFRAME or df.attrs.get("symbol") != SAMPLE_SYMBOL:
        raise DataError(
            f"{src.name} holds {df.attrs.get('symbol')} {df.attrs.get('timeframe')} bars; the sample "
            f"is built from the {SAMPLE_SYMBOL} {SAMPLE_TIMEFRAME} Bitstamp export"
        )
    step = timeframe_to_ms(SAMPLE_TIMEFRAME)
    last = int(df["ts_ms"].iloc[-1])
    cutoff = last + step - int(round(years * MS_PER_YEAR))
    window = df.loc[df["ts_ms"] >= cutoff].reset_index(drop=True)
    window.attrs = dict(df.attrs)
    window.attrs["source"] = src.name  # no local path in a packaged file
    report = dict(df.attrs.get("clean_report", {}))
    path = store_data(
        window,
        out,
        symbol=SAMPLE_SYMBOL,
        exchange=SAMPLE_EXCHANGE,
        timeframe=SAMPLE_TIMEFRAME,
        extra_meta={
            "derived_from": "CryptoDataDownload Bitstamp BTC/USD 1h export",
            "source_file": src.name,
            "source_url": "https://www.cryptodatadownload.com/data/bitstamp/",
            "window_years": years,
            "source_rows": int(report.get("rows_in", len(df))),
            "n_volume_swapped_in_source": int(df.attrs.get("n_volume_swapped", 0)),
            "clean_report_of_source": report,
            "built_by": "python -m coinrl.pipeline.sample",
        },
    )
    size = path.stat().st_size
    logger.info(
        "built sample path=%s rows=%d bytes=%d from_ts_ms=%d to_ts_ms=%d",
        path, len(window), size, int(window["ts_ms"].iloc[0]), last,
    )
    if size > MAX_SAMPLE_BYTES:
        raise DataError(
            f"sample {path} is {size} bytes, over the {MAX_SAMPLE_BYTES}-byte budget; pass fewer years"
        )
    return path


def load_sample() -> pd.DataFrame:
    """The packaged hourly BTC/USD sample (Bitstamp, about two years, cleaned).

    Returns:
        ``ts_ms`` (int64 UTC ms, ascending, unique), float64 ``open, high, low, close`` (USD)
        and ``volume`` (BTC); ``attrs`` symbol ``"BTC/USD"``, exchange ``"bitstamp"``,
        timeframe ``"1h"``.

    Example:
        >>> df = load_sample()
        >>> df.attrs["symbol"], df.attrs["timeframe"]
        ('BTC/USD', '1h')
    """
    res = resources.files(__package__ or "coinrl.pipeline").joinpath("data", SAMPLE_FILENAME)
    if not res.is_file():
        raise DataError(
            f"the packaged sample {SAMPLE_FILENAME} is missing from coinrl.pipeline/data; rebuild "
            "it with python -m coinrl.pipeline.sample /path/to/btc_usd_1h_bitstamp.csv"
        )
    with resources.as_file(res) as p:
        df = load_data(p)
    df.attrs.setdefault("symbol", SAMPLE_SYMBOL)
    df.attrs.setdefault("exchange", SAMPLE_EXCHANGE)
    df.attrs.setdefault("timeframe", SAMPLE_TIMEFRAME)
    return df


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coinrl.pipeline.sample",
        description="Rebuild the packaged BTC/USD 1h sample from the CryptoDataDownload Bitstamp CSV.",
    )
    parser.add_argument("src", type=Path, help="path of btc_usd_1h_bitstamp.csv")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"destination (default: the packaged {SAMPLE_FILENAME})"
    )
    parser.add_argument("--years", type=float, default=2.0, help="years of bars to keep (default 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or Path(__file__).resolve().parent / "data" / SAMPLE_FILENAME
    path = build_sample(args.src, out, years=args.years)
    df = load_data(path)
    ts = df["ts_ms"].to_numpy(dtype=np.int64)
    logger.info(
        "sample written path=%s rows=%d bytes=%d first=%s last=%s",
        path, len(df), path.stat().st_size,
        pd.Timestamp(int(ts[0]), unit="ms", tz="UTC"), pd.Timestamp(int(ts[-1]), unit="ms", tz="UTC"),
    )
    return 0


__all__ = ["build_sample", "load_sample", "sample_path"]


if __name__ == "__main__":
    raise SystemExit(_main())
