"""The packaged sample: small, two years of clean hourly BTC/USD, reproducible from the source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coinrl.pipeline.clean import CleanConfig, preprocess_data
from coinrl.pipeline.sample import _main, build_sample, load_sample, sample_path
from coinrl.pipeline.store import read_metadata

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
HOUR = 3_600_000


def _bitstamp() -> Path:
    p = SHARED_DATA / "btc_usd_1h_bitstamp.csv"
    if not p.is_file():
        pytest.skip(f"real data {p} not available")
    return p


def test_sample_file_is_at_most_1_mb() -> None:
    size = sample_path().stat().st_size
    assert 100_000 < size <= 1_000_000, size


def test_sample_is_two_years_of_hourly_btc_usd_ascending_and_unique() -> None:
    df = load_sample()
    assert (df.attrs["symbol"], df.attrs["exchange"], df.attrs["timeframe"]) == ("BTC/USD", "bitstamp", "1h")
    assert list(df.columns) == ["ts_ms", "open", "high", "low", "close", "volume"]
    assert df["ts_ms"].dtype == np.int64
    ts = df["ts_ms"].to_numpy()
    assert len(df) == 2 * 8760
    assert bool(np.all(np.diff(ts) == HOUR))  # ascending, unique, no gaps
    span_days = (ts[-1] + HOUR - ts[0]) / 86_400_000
    assert span_days == pytest.approx(730)


def test_sample_has_no_invalid_rows_and_sane_prices() -> None:
    df = load_sample()
    out = preprocess_data(df, CleanConfig(invalid="error", duplicates="error", gaps="error"))
    assert out.attrs["clean_report"]["rows_out"] == len(df)
    assert df["close"].between(1_000, 200_000).all()
    # Volume is in BTC: an hour of Bitstamp BTC/USD trades is tens to hundreds of coins, not millions.
    assert df["volume"].median() < 1_000
    assert df["volume"].max() < 50_000


def test_sample_metadata_names_its_source() -> None:
    meta = read_metadata(sample_path())
    assert meta["derived_from"] == "CryptoDataDownload Bitstamp BTC/USD 1h export"
    assert meta["source"] == "btc_usd_1h_bitstamp.csv"  # a file name, no local path
    assert meta["n_volume_swapped_in_source"] > 0


def test_rebuilding_from_the_source_reproduces_the_packaged_sample(tmp_path: Path) -> None:
    out = build_sample(_bitstamp(), tmp_path / "s.parquet", years=2.0)
    rebuilt = pd.read_parquet(out)
    pd.testing.assert_frame_equal(rebuilt, pd.read_parquet(sample_path()), check_exact=True)


def test_build_sample_keeps_the_last_years_of_bars(tmp_path: Path) -> None:
    src = _bitstamp()
    assert _main([str(src), "--years", "0.25", "--out", str(tmp_path / "q.parquet")]) == 0
    df = pd.read_parquet(tmp_path / "q.parquet")
    assert len(df) == 8760 // 4
    assert int(df["ts_ms"].iloc[-1]) == int(load_sample()["ts_ms"].iloc[-1])
