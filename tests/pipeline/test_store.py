"""Parquet store: lossless round trip, atomic writes, self-describing catalog."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import coinrl.pipeline.store as store
from coinrl.pipeline.errors import DataError
from coinrl.pipeline.store import (
    gap_summary,
    iter_catalog,
    load_data,
    merge_into_store,
    read_metadata,
    store_data,
)

HOUR = 3_600_000
T0 = 1_609_459_200_000  # 2021-01-01T00:00Z


def candles(n: int = 50, start: int = T0, seed: int = 1, missing: tuple[int, ...] = ()) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    df = pd.DataFrame(
        {
            "ts_ms": start + HOUR * np.arange(n, dtype=np.int64),
            "open": close * (1 + rng.normal(0, 1e-3, n)),
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": rng.uniform(0, 5, n),
        }
    )
    return df.drop(index=list(missing)).reset_index(drop=True)


def test_round_trip_is_lossless_in_values_dtypes_and_metadata(tmp_path: Path) -> None:
    df = candles()
    df["filled"] = np.arange(len(df)) % 7 == 0
    df["note"] = pd.Series(["x"] * len(df), dtype="str")
    df.loc[3, "volume"] = np.nan  # stored as is: the store does not clean
    df.attrs.update({"symbol": "BTC/USD", "exchange": "bitstamp", "timeframe": "1h", "source": Path("/a/b.csv")})
    path = store_data(df, tmp_path / "sub" / "btc.parquet", extra_meta={"derived_from": "unit test", "n": np.int64(3)})
    back = load_data(path)
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    assert back.attrs["symbol"] == "BTC/USD"
    assert back.attrs["exchange"] == "bitstamp"
    assert back.attrs["timeframe"] == "1h"
    assert back.attrs["format"] == "coinrl-parquet"
    meta = read_metadata(path)
    assert meta["rows"] == len(df)
    assert meta["first_ts_ms"] == T0
    assert meta["last_ts_ms"] == T0 + 49 * HOUR
    assert meta["derived_from"] == "unit test"
    assert meta["n"] == 3
    assert meta["source"] == "/a/b.csv"


def test_stored_file_is_world_readable_and_replacing_keeps_its_mode(tmp_path: Path) -> None:
    path = store_data(candles(), tmp_path / "a.parquet", timeframe="1h")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    os.chmod(path, 0o640)
    store_data(candles(seed=2), path, timeframe="1h")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_metadata_that_is_not_json_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="JSON-serialisable"):
        store_data(candles(), tmp_path / "a.parquet", timeframe="1h", extra_meta={"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_exception_mid_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = candles(seed=1)
    path = store_data(old, tmp_path / "btc.parquet", timeframe="1h")
    before = path.read_bytes()

    def half_write(table: pa.Table, where: str, **kwargs: object) -> None:
        Path(where).write_bytes(b"PAR1 half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(store.pq, "write_table", half_write)
    with pytest.raises(RuntimeError, match="disk full"):
        store_data(candles(seed=2), path, timeframe="1h")
    assert path.read_bytes() == before
    pd.testing.assert_frame_equal(load_data(path), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["btc.parquet"]


def test_writing_under_a_file_fails_and_leaves_everything_as_it_was(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):  # noqa: PT011 (FileExistsError or NotADirectoryError by OS)
        store_data(candles(), blocker / "btc.parquet", timeframe="1h")
    assert blocker.read_text() == "not a folder"
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_unsorted_or_undescribed_frames_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="strictly ascending"):
        store_data(candles().iloc[::-1], tmp_path / "a.parquet", timeframe="1h")
    with pytest.raises(DataError, match="timeframe unknown"):
        store_data(candles(), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"columns \['volume'\] missing"):
        store_data(candles().drop(columns="volume"), tmp_path / "a.parquet", timeframe="1h")
    assert list(tmp_path.iterdir()) == []


def test_load_data_errors_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "missing.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet"):
        load_data(junk)


def test_gap_summary_counts_places_and_missing_bars() -> None:
    ts = T0 + HOUR * np.array([0, 1, 2, 5, 6, 8])  # 2 missing after bar 2, 1 missing after bar 6
    assert gap_summary(ts, "1h") == (2, 2, T0 + 2 * HOUR)
    assert gap_summary(ts[:3], "1h") == (0, 0, None)
    assert gap_summary(ts[:1], "1h") == (0, 0, None)


def test_catalog_lists_stored_files_with_range_and_gaps(tmp_path: Path) -> None:
    store_data(candles(24), tmp_path / "bitstamp" / "btc.parquet", symbol="BTC/USD", exchange="bitstamp", timeframe="1h")
    store_data(
        candles(30, missing=(10, 11, 12, 20)), tmp_path / "binance" / "eth.parquet",
        symbol="ETH/USDT", exchange="binance", timeframe="1h",
    )
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "foreign.parquet")  # no coinrl metadata
    (tmp_path / "broken.parquet").write_bytes(b"garbage")
    (tmp_path / ".btc.parquet.tmp").write_bytes(b"leftover")
    entries = list(iter_catalog(tmp_path))
    assert [e.path.relative_to(tmp_path).as_posix() for e in entries] == ["binance/eth.parquet", "bitstamp/btc.parquet"]
    eth, btc = entries
    assert (btc.symbol, btc.exchange, btc.timeframe, btc.rows) == ("BTC/USD", "bitstamp", "1h", 24)
    assert (btc.first_ts_ms, btc.last_ts_ms, btc.n_gaps, btc.largest_gap_bars) == (T0, T0 + 23 * HOUR, 0, 0)
    assert (eth.rows, eth.first_ts_ms, eth.last_ts_ms) == (26, T0, T0 + 29 * HOUR)
    assert (eth.n_gaps, eth.largest_gap_bars) == (2, 3)
    assert eth.schema_version == store.SCHEMA_VERSION


# --------------------------------------------------------------------------- never replace a series


def _labelled(df: pd.DataFrame, symbol: str = "BTC/USDT", exchange: str = "binance") -> pd.DataFrame:
    df.attrs.update({"symbol": symbol, "exchange": exchange, "timeframe": "1h"})
    return df


def test_merge_of_the_same_market_keeps_every_bar_once(tmp_path: Path) -> None:
    full = candles(300)
    path = tmp_path / "btc.parquet"
    assert merge_into_store(_labelled(full.iloc[:200].copy()), path) == (path, 200)
    assert merge_into_store(_labelled(full.iloc[150:].copy()), path) == (path, 100)  # 50 shared, identical
    back = load_data(path)
    pd.testing.assert_frame_equal(back, full, check_like=False)
    assert read_metadata(path)["rows"] == 300
    assert merge_into_store(_labelled(full.iloc[10:20].copy()), path) == (path, 0)  # nothing new


def test_merge_refuses_overlapping_bars_that_differ_and_keeps_the_stored_file(tmp_path: Path) -> None:
    path = tmp_path / "btc.parquet"
    merge_into_store(_labelled(candles(300, seed=1)), path)
    before = path.read_bytes()
    other = _labelled(candles(200, start=T0 + 250 * HOUR, seed=2))  # shares 50 bars, other prices
    with pytest.raises(DataError, match=r"50 of these bars and 50 of them differ .*2021-01-11T10:00"):
        merge_into_store(other, path)
    assert path.read_bytes() == before


def test_merge_refuses_another_market_and_unlabelled_series(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    merge_into_store(_labelled(candles(100)), path)
    with pytest.raises(DataError, match="already holds BTC/USDT on binance 1h, not ETH/USDT"):
        merge_into_store(_labelled(candles(100), symbol="ETH/USDT"), path)
    # two exports without a symbol may be two markets: 3,000 rows are not replaced by 200
    unknown = tmp_path / "unknown.parquet"
    first = _labelled(candles(3000, seed=3), symbol="", exchange="")
    merge_into_store(first, unknown)
    with pytest.raises(DataError, match="unknown symbol"):
        merge_into_store(_labelled(candles(200, start=T0 + 5000 * HOUR, seed=4), symbol="", exchange=""), unknown)
    assert read_metadata(unknown)["rows"] == 3000
    # the same unlabelled file again is a no-op
    assert merge_into_store(_labelled(candles(3000, seed=3), symbol="", exchange=""), unknown) == (unknown, 0)
