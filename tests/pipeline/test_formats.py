"""Readers: every format to one schema, detection, the real exports' quirks, bad inputs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coinrl.pipeline.errors import DataError, UnknownFormatError
from coinrl.pipeline.formats import (
    KNOWN_FORMATS,
    detect_format,
    parse_ohlcv,
    read_ohlcv,
    split_symbol,
)
from coinrl.pipeline.store import store_data

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CSVS = ("btc_usd_1h_bitstamp.csv", "btc_usd_1h_coinbase.csv", "btc_usd_1h_bitfinex.csv")
SCHEMA = {
    "ts_ms": np.dtype("int64"),
    "open": np.dtype("float64"),
    "high": np.dtype("float64"),
    "low": np.dtype("float64"),
    "close": np.dtype("float64"),
    "volume": np.dtype("float64"),
}
ATTR_KEYS = {"format", "symbol", "timeframe", "exchange", "source"}
HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00Z


def _shared(name: str) -> Path:
    p = SHARED_DATA / name
    if not p.is_file():
        pytest.skip(f"real data {p} not available")
    return p


# Three hourly bars, as Binance's public data lists them (12 columns, no header).
_BINANCE_ROWS = [
    (T0, "42283.58", "42554.57", "42261.02", "42475.23", "1271.68108", T0 + HOUR - 1, "5.4e7", 47134, "682.9", "2.9e7", "0"),
    (T0 + HOUR, "42475.23", "42775.00", "42431.65", "42613.56", "1196.37856", T0 + 2 * HOUR - 1, "5.1e7", 50396, "712.5", "3.0e7", "0"),
    (T0 + 2 * HOUR, "42613.57", "42638.41", "42500.00", "42581.10", "685.21058", T0 + 3 * HOUR - 1, "2.9e7", 31645, "303.1", "1.3e7", "0"),
]


def _write_binance(path: Path, unit: str = "ms", header: bool = False) -> Path:
    mult = 1000 if unit == "us" else 1
    lines = []
    if header:
        lines.append(
            "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
            "taker_buy_volume,taker_buy_quote_volume,ignore"
        )
    for r in _BINANCE_ROWS:
        lines.append(",".join(str(x) for x in (r[0] * mult, *r[1:6], r[6] * mult, *r[7:])))
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_kraken(path: Path) -> Path:
    s0 = T0 // 1000
    path.write_text(
        f"{s0},42283.5,42554.5,42261.0,42475.2,12.5,310\n"
        f"{s0 + 3600},42475.2,42775.0,42431.6,42613.5,8.25,204\n"
        f"{s0 + 7200},42613.5,42638.4,42500.0,42581.1,3.125,99\n"
    )
    return path


def _stored(path: Path) -> Path:
    df = pd.DataFrame(
        {
            "ts_ms": T0 + HOUR * np.arange(3, dtype=np.int64),
            "open": [1.0, 2.0, 3.0], "high": [2.5, 3.5, 3.5], "low": [0.5, 1.5, 2.5],
            "close": [2.0, 3.0, 3.0], "volume": [10.0, 0.0, 5.5],
        }
    )
    return store_data(df, path, symbol="ETH/USDT", exchange="binance", timeframe="1h")


@pytest.fixture(params=["bitstamp", "coinbase", "bitfinex", "feather", "binance-ms", "binance-us", "binance-header", "kraken", "coinrl-parquet"])
def any_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    kind = request.param
    if kind in ("bitstamp", "coinbase", "bitfinex"):
        return _shared(f"btc_usd_1h_{kind}.csv"), "cryptodatadownload"
    if kind == "feather":
        return _shared("ETH_BTC-5m.feather"), "feather"
    if kind == "binance-ms":
        return _write_binance(tmp_path / "BTCUSDT-1h-2024-01.csv"), "binance"
    if kind == "binance-us":
        return _write_binance(tmp_path / "BTCUSDT-1h-2025-01.csv", unit="us"), "binance"
    if kind == "binance-header":
        return _write_binance(tmp_path / "BTCUSDT-1h-2024-02.csv", header=True), "binance"
    if kind == "kraken":
        return _write_kraken(tmp_path / "XBTUSD_60.csv"), "kraken"
    return _stored(tmp_path / "eth.parquet"), "coinrl-parquet"


def test_every_format_parses_to_the_same_schema(any_file: tuple[Path, str]) -> None:
    path, fmt = any_file
    raw = parse_ohlcv(path)
    assert dict(raw.dtypes) == SCHEMA
    assert list(raw.columns) == list(SCHEMA)
    assert ATTR_KEYS <= set(raw.attrs)
    assert raw.attrs["format"] == fmt == detect_format(path)
    assert raw.attrs["source"] == str(path)
    assert raw.attrs["timeframe"] in ("1h", "5m")
    assert "/" in raw.attrs["symbol"]
    # Every timestamp is a plausible epoch in ms (2010..2100), not s or µs.
    assert raw["ts_ms"].between(1_262_304_000_000, 4_102_444_800_000).all()
    clean = read_ohlcv(path)
    assert dict(clean.dtypes) == SCHEMA
    assert bool(np.all(np.diff(clean["ts_ms"].to_numpy()) > 0))
    assert isinstance(clean.attrs["clean_report"], dict)


def test_binance_microsecond_files_give_the_same_bars_as_millisecond_files(tmp_path: Path) -> None:
    ms = parse_ohlcv(_write_binance(tmp_path / "BTCUSDT-1h-2024-01.csv"))
    us = parse_ohlcv(_write_binance(tmp_path / "BTCUSDT-1h-2025-01.csv", unit="us"))
    pd.testing.assert_frame_equal(ms, us, check_like=False)
    assert ms["ts_ms"].tolist() == [T0, T0 + HOUR, T0 + 2 * HOUR]
    assert ms.attrs["symbol"] == "BTC/USDT"
    assert ms.attrs["exchange"] == "binance"
    assert ms["volume"].tolist() == [1271.68108, 1196.37856, 685.21058]


def test_kraken_seconds_become_ms_and_xbt_becomes_btc(tmp_path: Path) -> None:
    raw = parse_ohlcv(_write_kraken(tmp_path / "XBTUSD_60.csv"))
    assert raw["ts_ms"].tolist() == [T0, T0 + HOUR, T0 + 2 * HOUR]
    assert raw.attrs["symbol"] == "BTC/USD"
    assert raw.attrs["exchange"] == "kraken"
    assert raw.attrs["timeframe"] == "1h"
    assert raw["volume"].tolist() == [12.5, 8.25, 3.125]  # column 6, not the trade count


def test_feather_keeps_its_dates_and_names_the_pair() -> None:
    path = _shared("ETH_BTC-5m.feather")
    raw = parse_ohlcv(path)
    ref = pd.read_feather(path)
    expected = (ref["date"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    assert raw["ts_ms"].tolist() == expected.tolist()
    np.testing.assert_array_equal(raw["close"].to_numpy(), ref["close"].to_numpy())
    assert (raw.attrs["symbol"], raw.attrs["timeframe"]) == ("ETH/BTC", "5m")


def test_stored_parquet_reads_back_unchanged(tmp_path: Path) -> None:
    path = _stored(tmp_path / "eth.parquet")
    df = read_ohlcv(path)
    assert df["close"].tolist() == [2.0, 3.0, 3.0]
    assert (df.attrs["symbol"], df.attrs["exchange"], df.attrs["timeframe"]) == ("ETH/USDT", "binance", "1h")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("BTC/USD", "BTC/USD"), ("BTCUSD", "BTC/USD"), ("btc_usd", "BTC/USD"), ("XBTUSD", "BTC/USD"),
        ("XXBTZUSD", "BTC/USD"), ("ETHUSDT", "ETH/USDT"), ("ETH-BTC", "ETH/BTC"), ("SOLFDUSD", "SOL/FDUSD"),
        ("???", ""), ("", ""),
    ],
)
def test_split_symbol_writes_ccxt_symbols(raw: str, expected: str) -> None:
    assert split_symbol(raw) == expected


# --------------------------------------------------------------------------- the real exports


def test_real_exports_are_newest_first_and_come_out_ascending() -> None:
    for name in CSVS:
        raw = parse_ohlcv(_shared(name))
        assert raw["ts_ms"].iloc[0] > raw["ts_ms"].iloc[-1], name  # file order kept by parse
        df = read_ohlcv(_shared(name))
        assert df.attrs["clean_report"]["reversed"] is True
        assert df["ts_ms"].is_monotonic_increasing
        assert df["ts_ms"].is_unique
        assert (df.attrs["symbol"], df.attrs["timeframe"]) == ("BTC/USD", "1h")
        assert df.attrs["exchange"] == name.split("_")[-1].removesuffix(".csv")


def test_the_three_btc_usd_exports_agree_where_they_overlap() -> None:
    frames = {n: read_ohlcv(_shared(n)) for n in CSVS}
    names = list(frames)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            m = frames[a].merge(frames[b], on="ts_ms", suffixes=("_a", "_b"))
            assert len(m) > 5000, (a, b, len(m))
            # Bars where both exchanges traded: a flat zero-volume bar is the vendor's placeholder
            # for an outage (the Coinbase export has a 15 h one on 2018-08-10), not a price.
            traded = (m["volume_a"] > 0) & (m["volume_b"] > 0)
            rel = (m["close_a"] / m["close_b"] - 1).abs()[traded]
            worst = pd.Timestamp(int(m.loc[rel.idxmax(), "ts_ms"]), unit="ms", tz="UTC")
            msg = (
                f"{a} vs {b}: {int(traded.sum())} traded bars, max rel diff {rel.max():.4%} at {worst}, "
                f"median {rel.median():.5%}, {int((rel > 0.01).sum())} bars over 1%"
            )
            assert rel.median() < 0.001, msg  # aligned to the same hour
            assert (rel <= 0.01).mean() >= 0.9995, msg  # all but flash-crash hours within 1%
            assert rel.max() < 0.025, msg
            # An hour's shift would be visible: the median at +-1h is several times larger.
            for shift in (-HOUR, HOUR):
                s = frames[a].assign(ts_ms=frames[a]["ts_ms"] + shift).merge(frames[b], on="ts_ms")
                assert (s["close_x"] / s["close_y"] - 1).abs().median() > 2 * rel.median(), msg


def test_bitstamp_volume_swap_is_detected_and_every_row_is_base_volume() -> None:
    path = _shared("btc_usd_1h_bitstamp.csv")
    src = pd.read_csv(path)  # independent reading of the file, newest first like parse_ohlcv
    raw = parse_ohlcv(path)
    a, b = src["volume"].to_numpy(), src["Volume USD"].to_numpy()
    close = raw["close"].to_numpy()
    vol = raw["volume"].to_numpy()
    quote = np.where(vol == a, b, a)  # the other column is the quote volume
    traded = vol > 0
    ratio = vol[traded] * close[traded] / quote[traded]
    assert 0.8 < ratio.min() <= ratio.max() < 1.25, (ratio.min(), ratio.max())
    # The old rows really were swapped (USD in "volume") and were fixed.
    swapped = a > b
    assert raw.attrs["n_volume_swapped"] == int(swapped.sum()) > 10_000
    ts = raw["ts_ms"].to_numpy()
    old = ts == pd.Timestamp("2018-05-15 06:00", tz="UTC").value // 10**6
    new = ts == pd.Timestamp("2022-03-01 00:00", tz="UTC").value // 10**6
    assert vol[old].tolist() == [559.93]  # "Volume USD" column of that row (volume said 4906603.14)
    assert vol[new].tolist() == [52.05632]


def test_coinbase_am_pm_hours(tmp_path: Path) -> None:
    p = tmp_path / "Coinbase_BTCUSD_1h.csv"
    hours = ["12-AM", "01-AM", "11-AM", "12-PM", "01-PM", "11-PM"]
    rows = [f"2020-01-01 {h},BTCUSD,100,101,99,100,1.0,100.0" for h in reversed(hours)]
    p.write_text(
        "Timestamps are UTC timezone,https://www.CryptoDataDownload.com\n"
        "date,symbol,open,high,low,close,volume_btc,volume\n" + "\n".join(rows) + "\n"
    )
    raw = parse_ohlcv(p)
    day = pd.Timestamp("2020-01-01", tz="UTC").value // 10**6
    assert [(t - day) // HOUR for t in raw["ts_ms"]][::-1] == [0, 1, 11, 12, 13, 23]
    assert (raw.attrs["symbol"], raw.attrs["exchange"]) == ("BTC/USD", "coinbase")
    assert raw["volume"].tolist() == [1.0] * 6  # volume_btc is base, volume is USD


def test_coinbase_real_file_noon_and_midnight() -> None:
    raw = parse_ohlcv(_shared("btc_usd_1h_coinbase.csv"))
    last_three = raw["ts_ms"].iloc[-3:].tolist()  # file ends 01-PM, 12-PM, 11-AM on 2017-07-01
    base = pd.Timestamp("2017-07-01", tz="UTC").value // 10**6
    assert [(t - base) // HOUR for t in last_three] == [13, 12, 11]
    first = raw["ts_ms"].iloc[0]  # 2019-10-17 09-AM
    assert first == pd.Timestamp("2019-10-17 09:00", tz="UTC").value // 10**6
    assert ((raw["ts_ms"] % (24 * HOUR)) == 0).sum() > 800  # 12-AM rows are midnight


def test_parse_and_clean_is_fast() -> None:
    for name in CSVS:
        path = _shared(name)
        best = min(_timed(lambda p=path: read_ohlcv(p)) for _ in range(5))
        rows = len(read_ohlcv(path))
        assert best < 0.1, f"{name}: {rows} rows in {best * 1000:.1f} ms"


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# --------------------------------------------------------------------------- bad inputs


def test_empty_file_is_a_data_error(tmp_path: Path) -> None:
    for content in ("", "\n  \n"):
        p = tmp_path / "empty.csv"
        p.write_text(content)
        with pytest.raises(DataError, match="empty.csv is empty"):
            parse_ohlcv(p)


def test_header_without_rows_is_a_data_error(tmp_path: Path) -> None:
    p = tmp_path / "btc_usd_1h_bitstamp.csv"
    p.write_text("unix,date,symbol,open,high,low,close,volume,Volume USD\n")
    with pytest.raises(DataError, match="no data rows"):
        parse_ohlcv(p)


def test_missing_columns_are_listed(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("date,open,high,low,close\n2020-01-01 00:00:00,1,2,0.5,1.5\n")
    with pytest.raises(DataError, match=r"lacks \['volume'\]"):
        parse_ohlcv(p)
    q = tmp_path / "y.csv"
    q.write_text("unix,date,symbol,open,high,low,volume\n1577836800,2020-01-01,BTC/USD,1,2,0.5,3\n")
    with pytest.raises(UnknownFormatError):
        parse_ohlcv(q)  # no 'close': nothing recognises it
    with pytest.raises(DataError, match=r"lacks \['close'\]") as info:
        parse_ohlcv(q, fmt="cryptodatadownload")
    assert not isinstance(info.value, UnknownFormatError)


def test_a_cell_that_is_not_a_number_names_its_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "btc_usd_1h_bitstamp.csv"
    p.write_text(
        "unix,date,symbol,open,high,low,close,volume,Volume USD\n"
        "1646092800,2022-03-01 00:00:00,BTC/USD,1,2,0.5,1.5,1,1.5\n"
        "1646089200,2022-02-28 23:00:00,BTC/USD,1,2,0.5,abc,1,1.5\n"
    )
    with pytest.raises(DataError, match=r"line 3, column 'close': got 'abc'; expected a number"):
        parse_ohlcv(p)
    b = _write_binance(tmp_path / "BTCUSDT-1h-2024-01.csv")
    lines = b.read_text().splitlines()
    lines[1] = lines[1].replace("42775.00", "4277x.00")
    b.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 2, column 'high'"):
        parse_ohlcv(b)


def test_an_unparsable_date_names_its_line(tmp_path: Path) -> None:
    p = tmp_path / "Coinbase_BTCUSD_1h.csv"
    p.write_text(
        "date,symbol,open,high,low,close,volume_btc,volume\n"
        "2020-01-01 01-AM,BTCUSD,100,101,99,100,1.0,100.0\n"
        "2020-01-01 13-PM,BTCUSD,100,101,99,100,1.0,100.0\n"
    )
    with pytest.raises(DataError, match=r"line 3, column 'date'"):
        parse_ohlcv(p)


def test_unknown_format_lists_the_known_ones(tmp_path: Path) -> None:
    p = tmp_path / "mystery.csv"
    p.write_text("a;b;c\n1;2;3\n")
    with pytest.raises(UnknownFormatError) as info:
        parse_ohlcv(p)
    msg = str(info.value)
    for name in KNOWN_FORMATS:
        assert name in msg
    assert "fmt=" in msg
    assert "mystery.csv" in msg
    with pytest.raises(UnknownFormatError, match="format 'csv' is unknown"):
        parse_ohlcv(_write_kraken(tmp_path / "XBTUSD_60.csv"), fmt="csv")


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        parse_ohlcv(tmp_path / "nope.csv")


def test_fmt_names_a_format_regardless_of_the_file_name(tmp_path: Path) -> None:
    p = _write_kraken(tmp_path / "prices.txt")
    assert parse_ohlcv(p, fmt="kraken")["ts_ms"].tolist() == [T0, T0 + HOUR, T0 + 2 * HOUR]
    assert parse_ohlcv(p).attrs["format"] == "kraken"
