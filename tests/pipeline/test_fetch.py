"""fetch_data/update_data over the REAL ccxt client, real HTTP, against the local emulator.

Proves: pagination by the exchange's limit, lossless round trip, closed bars only, resume after
an interruption (also a real ``kill -9``) to the identical frame, retries of temporary faults
only (honouring Retry-After and the rate limiter), clear errors for permanent ones, no half
written files, funding download and alignment, idempotent updates, and the update scheduler.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coinrl.live.emulator import EmulatorServer, FixedClock
from coinrl.pipeline.errors import (
    BadSymbol,
    ConfigError,
    DataError,
    ExchangeError,
    TemporaryExchangeError,
)
from coinrl.pipeline.exchange_client import create_exchange, override_api_urls
from coinrl.pipeline.fetch import (
    UpdateJob,
    align_funding,
    fetch_data,
    funding_path,
    load_funding,
    schedule_updates,
    to_ms,
    update_data,
)
from coinrl.pipeline.store import load_data, read_metadata

HOUR_MS = 3_600_000
COLS = ["ts_ms", "open", "high", "low", "close", "volume"]


@pytest.fixture
def small_emulator(candle_factory, funding_factory):
    """2,501 hourly bars (2,500 closed + 1 in progress), spot and perpetual."""
    spot = candle_factory(2501, seed=11)
    perp = candle_factory(2501, seed=12)
    with EmulatorServer(
        {"BTC/USDT": spot, "BTC/USDT:USDT": perp},
        funding={"BTC/USDT:USDT": funding_factory(perp)},
    ) as emu:
        emu.spot, emu.perp = spot, perp  # type: ignore[attr-defined]
        yield emu


def _closed(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.iloc[:-1][COLS].reset_index(drop=True)
    out.attrs = {}
    return out


def _fetch(emu: EmulatorServer, path: Path, symbol: str = "BTC/USDT", **kw) -> pd.DataFrame:
    src = emu.spot if symbol == "BTC/USDT" else emu.perp  # type: ignore[attr-defined]
    kw.setdefault("max_retries", 3)
    return fetch_data(symbol, "1h", int(src.ts_ms[0]), path, exchange_url=emu.base_url, **kw)


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = a.copy(), b.copy()
    a.attrs, b.attrs = {}, {}
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                  check_exact=True)


# -- pagination, round trip, closed bars ---------------------------------------------------------------
def test_pagination_uses_the_exchange_limit(small_emulator, tmp_path):
    df = _fetch(small_emulator, tmp_path / "btc.parquet")
    reqs = small_emulator.requests("/api/v3/klines")
    assert len(df) == 2500
    assert len(reqs) == 3  # 1000 + 1000 + 500 (+ the in-progress bar, dropped)
    ts = small_emulator.spot.ts_ms
    assert [int(r.query["startTime"]) for r in reqs] == [ts[0], ts[1000], ts[2000]]
    assert {r.query["limit"] for r in reqs} == {"1000"}


def test_round_trip_is_lossless_and_stores_metadata(small_emulator, tmp_path):
    path = tmp_path / "btc.parquet"
    df = _fetch(small_emulator, path)
    expected = _closed(small_emulator.spot)
    _assert_same(df, expected)
    loaded = load_data(path)
    _assert_same(loaded, expected)
    assert loaded.dtypes.to_dict() == expected.dtypes.to_dict()
    assert loaded.dtypes["ts_ms"] == np.int64
    assert {k: loaded.attrs[k] for k in ("symbol", "exchange", "timeframe")} == {
        "symbol": "BTC/USDT", "exchange": "binance", "timeframe": "1h"}
    assert not (tmp_path / "btc.parquet.parts").exists()


def test_only_closed_candles_are_stored(candle_factory, tmp_path):
    src = candle_factory(50)
    ts = src.ts_ms.to_numpy()
    clock = FixedClock(int(ts[30]))  # bar 30 opens exactly now: bars 0..29 closed
    with EmulatorServer({"BTC/USDT": src}, clock=clock) as emu:
        df = fetch_data("BTC/USDT", "1h", int(ts[0]), tmp_path / "a.parquet",
                        exchange_url=emu.base_url)
        assert df.ts_ms.iloc[-1] == ts[29]
        clock.set(int(ts[30]) + HOUR_MS - 1)  # 1 ms before bar 30 closes
        df = fetch_data("BTC/USDT", "1h", int(ts[0]), tmp_path / "b.parquet",
                        exchange_url=emu.base_url)
        assert df.ts_ms.iloc[-1] == ts[29]
        clock.set(int(ts[30]) + HOUR_MS)
        df = fetch_data("BTC/USDT", "1h", int(ts[0]), tmp_path / "c.parquet",
                        exchange_url=emu.base_url)
        assert df.ts_ms.iloc[-1] == ts[30]
        assert df.close.iloc[-1] == src.close[30]


def test_end_time_is_inclusive_and_stops_paging(small_emulator, tmp_path):
    ts = small_emulator.spot.ts_ms
    df = _fetch(small_emulator, tmp_path / "e.parquet", end_time=int(ts[999]))
    assert df.ts_ms.iloc[0] == ts[0]
    assert df.ts_ms.iloc[-1] == ts[999]
    assert len(df) == 1000
    assert small_emulator.request_count("/api/v3/klines") == 1


def test_start_time_forms_are_equivalent(small_emulator, tmp_path):
    ts0 = int(small_emulator.spot.ts_ms[5])
    iso = pd.Timestamp(ts0, unit="ms", tz="UTC").isoformat()
    a = fetch_data("BTC/USDT", "1h", ts0, tmp_path / "a.parquet",
                   exchange_url=small_emulator.base_url, end_time=ts0 + 9 * HOUR_MS)
    b = fetch_data("BTC/USDT", "1h", iso, tmp_path / "b.parquet",
                   exchange_url=small_emulator.base_url,
                   end_time=datetime.fromtimestamp((ts0 + 9 * HOUR_MS) / 1000, tz=UTC))
    _assert_same(a, b)
    assert len(a) == 10
    assert a.ts_ms.iloc[0] == ts0


def test_progress_reports_growing_counts(small_emulator, tmp_path):
    seen: list[tuple[int, int]] = []
    _fetch(small_emulator, tmp_path / "p.parquet", progress=lambda d, t: seen.append((d, t)))
    done = [d for d, _ in seen]
    assert done == sorted(done)
    assert done[-1] == 2500
    assert seen[-1] == (2500, 2500)
    assert len(seen) >= 3


@pytest.mark.slow
def test_perpetual_downloads_candles_and_funding(small_emulator, tmp_path):
    path = tmp_path / "perp.parquet"
    df = _fetch(small_emulator, path, symbol="BTC/USDT:USDT", exchange="binanceusdm")
    _assert_same(df, _closed(small_emulator.perp))
    fund = load_funding(path)
    src = small_emulator.data.funding["BTC/USDT:USDT"]
    end = int(df.ts_ms.iloc[-1]) + HOUR_MS
    keep = src.ts_ms < end
    assert fund.ts_ms.tolist() == src.ts_ms[keep].tolist()
    assert fund.funding_rate.tolist() == src.rate[keep].tolist()
    assert funding_path(path).name == "perp.funding.parquet"
    assert load_funding(funding_path(path)).attrs["symbol"] == "BTC/USDT:USDT"

    aligned = align_funding(df, fund)
    charged = aligned.set_index("ts_ms").funding_rate
    assert charged[fund.ts_ms].tolist() == fund.funding_rate.tolist()  # bar opening at funding
    assert (charged.drop(index=fund.ts_ms) == 0).all()


def test_align_funding_charges_the_bar_containing_the_funding_time():
    candles = pd.DataFrame({"ts_ms": [0, 4000, 8000, 12000]})  # 4 s bars
    funding = pd.DataFrame({"ts_ms": [-1, 3999, 4000, 5000, 15999, 16000],
                            "funding_rate": [9.0, 0.1, 0.2, 0.3, 0.4, 9.0]})
    out = align_funding(candles, funding, timeframe="4s")
    assert out.funding_rate.tolist() == pytest.approx([0.1, 0.5, 0.0, 0.4])
    hourly = pd.DataFrame({"ts_ms": np.arange(4) * HOUR_MS})
    f = pd.DataFrame({"ts_ms": [HOUR_MS - 1, HOUR_MS, 3 * HOUR_MS + 5, 9 * HOUR_MS],
                      "funding_rate": [0.1, 0.2, 0.3, 0.4]})
    out = align_funding(hourly, f, timeframe="1h")
    assert out.funding_rate.tolist() == [0.1, 0.2, 0.0, 0.3]  # the 9h event is outside
    assert "funding_rate" not in hourly  # input untouched


# -- resume ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_interrupted_download_resumes_to_the_identical_frame(small_emulator, tmp_path):
    emu = small_emulator
    ref = _fetch(emu, tmp_path / "ref.parquet")
    path = tmp_path / "btc.parquet"
    emu.reset_requests()
    emu.faults.garbage(count=1, after=2, path_prefix="/api/v3/klines")  # the 3rd page fails
    with pytest.raises(ExchangeError, match="not JSON"):
        _fetch(emu, path)
    assert not path.exists()  # nothing half-written under the final name
    assert len(list((tmp_path / "btc.parquet.parts").glob("*.parquet"))) == 2
    emu.reset_requests()
    df = _fetch(emu, path)
    _assert_same(df, ref)
    _assert_same(load_data(path), ref)
    reqs = emu.requests("/api/v3/klines")
    assert [int(r.query["startTime"]) for r in reqs] == [emu.spot.ts_ms[2000]]  # resumed
    assert not (tmp_path / "btc.parquet.parts").exists()


def test_parts_of_another_request_are_not_mixed_in(small_emulator, tmp_path):
    emu = small_emulator
    path = tmp_path / "btc.parquet"
    emu.faults.garbage(count=1, after=1, path_prefix="/api/v3/klines")
    with pytest.raises(ExchangeError):
        _fetch(emu, path)  # leaves parts of a download starting at bar 0
    start = int(emu.spot.ts_ms[500])
    df = fetch_data("BTC/USDT", "1h", start, path, exchange_url=emu.base_url)
    _assert_same(df, _closed(emu.spot).iloc[500:])


_CHILD = """
import sys
from coinrl.pipeline.fetch import fetch_data
url, path, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
fetch_data("BTC/USDT", "1h", start, path, exchange_url=url, page_limit=250)
"""


def _spawn(url: str, path: Path, start: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _CHILD, url, str(path), str(start)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_parts(parts: Path, n: int, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if parts.is_dir() and len(list(parts.glob("*.parquet"))) >= n:
            return
        assert proc.poll() is None, "the download finished before it could be killed"
        time.sleep(0.005)
    raise AssertionError(f"no {n} parts within {timeout_s} s")


@pytest.mark.slow
def test_kill_9_mid_download_then_rerun_gives_the_identical_frame(small_emulator, tmp_path):
    emu = small_emulator
    start = int(emu.spot.ts_ms[0])
    ref = fetch_data("BTC/USDT", "1h", start, tmp_path / "ref.parquet",
                     exchange_url=emu.base_url, page_limit=250)
    path = tmp_path / "btc.parquet"
    parts = tmp_path / "btc.parquet.parts"
    emu.faults.latency(60, path_prefix="/api/v3/klines")  # ~10 pages at >= 60 ms each
    proc = _spawn(emu.base_url, path, start)
    _wait_for_parts(parts, 3, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert not path.exists()
    n_parts = len(list(parts.glob("*.parquet")))
    assert 3 <= n_parts < 10
    emu.faults.clear()
    emu.reset_requests()
    df = fetch_data("BTC/USDT", "1h", start, path, exchange_url=emu.base_url, page_limit=250)
    _assert_same(df, ref)
    _assert_same(load_data(path), ref)
    first = int(emu.requests("/api/v3/klines")[0].query["startTime"])
    assert first > start  # it continued, it did not start over
    assert not parts.exists()


@pytest.mark.slow
def test_repeated_kill_9_at_random_points_still_gives_the_identical_frame(small_emulator,
                                                                          tmp_path):
    emu = small_emulator
    start = int(emu.spot.ts_ms[0])
    path = tmp_path / "btc.parquet"
    parts = tmp_path / "btc.parquet.parts"
    emu.faults.latency(40, path_prefix="/api/v3/klines")  # 10 pages of 250 bars
    rng = np.random.default_rng(2024)
    for target in sorted(rng.choice(np.arange(2, 9), size=3, replace=False)):
        proc = _spawn(emu.base_url, path, start)
        _wait_for_parts(parts, int(target), proc)
        time.sleep(float(rng.uniform(0.0, 0.04)))  # anywhere in a request or a part write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        assert not path.exists()
    emu.faults.clear()
    df = fetch_data("BTC/USDT", "1h", start, path, exchange_url=emu.base_url, page_limit=250)
    _assert_same(df, _closed(emu.spot))
    _assert_same(load_data(path), _closed(emu.spot))


# -- faults -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_rate_limit_429_is_retried_after_retry_after(small_emulator, tmp_path):
    emu = small_emulator
    emu.faults.rate_limit(retry_after_s=1, count=1, path_prefix="/api/v3/klines")
    df = _fetch(emu, tmp_path / "r.parquet")
    _assert_same(df, _closed(emu.spot))
    reqs = emu.requests("/api/v3/klines")
    assert [r.status for r in reqs] == [429, 200, 200, 200]
    assert reqs[1].t_s - reqs[0].t_s >= 1.0  # waited what Retry-After asked


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.slow
def test_server_errors_are_retried(small_emulator, tmp_path, status):
    emu = small_emulator
    emu.faults.server_error(status, count=2, path_prefix="/api/v3/klines")
    df = _fetch(emu, tmp_path / "s.parquet")
    _assert_same(df, _closed(emu.spot))
    assert [r.status for r in emu.requests("/api/v3/klines")] == [status, status, 200, 200, 200]


@pytest.mark.slow
def test_dropped_connections_are_retried(small_emulator, tmp_path):
    emu = small_emulator
    emu.faults.drop(count=2, path_prefix="/api/v3/klines")
    df = _fetch(emu, tmp_path / "d.parquet")
    _assert_same(df, _closed(emu.spot))
    assert [r.fault for r in emu.requests("/api/v3/klines")][:3] == ["drop", "drop", ""]


def test_persistent_temporary_failure_gives_up_after_max_retries(small_emulator, tmp_path):
    emu = small_emulator
    emu.faults.server_error(503, count=None, path_prefix="/api/v3/klines")
    path = tmp_path / "t.parquet"
    with pytest.raises(TemporaryExchangeError, match="503"):
        _fetch(emu, path, max_retries=2)
    assert emu.request_count("/api/v3/klines") == 3
    assert not path.exists()


@pytest.mark.slow
def test_rate_limiter_paces_requests(small_emulator, tmp_path):
    emu = small_emulator
    _fetch(emu, tmp_path / "rl.parquet", exchange_options={"rateLimit": 500})
    t = [r.t_s for r in emu.requests("/api/v3/klines")]
    assert len(t) == 3
    # ccxt charges spot klines 0.4 units: 200 ms between requests at rateLimit=500 ms
    # (without the limiter a page takes ~30 ms here)
    assert min(np.diff(t)) >= 0.19


def test_unknown_symbol_is_a_clear_error_and_not_retried(small_emulator, tmp_path):
    with pytest.raises(BadSymbol, match=r"BTC/USDX.*BTC/USDT"):
        fetch_data("BTC/USDX", "1h", 0, tmp_path / "x.parquet",
                   exchange_url=small_emulator.base_url)
    assert small_emulator.request_count("/api/v3/klines") == 0
    assert small_emulator.request_count("/api/v3/exchangeInfo") == 1


def test_unsupported_timeframe_lists_the_supported_ones(small_emulator, tmp_path):
    with pytest.raises(BadSymbol, match=r"'7m'.*'1h'"):
        fetch_data("BTC/USDT", "7m", 0, tmp_path / "x.parquet",
                   exchange_url=small_emulator.base_url)
    with pytest.raises(ConfigError, match="timeframe"):
        fetch_data("BTC/USDT", "hourly", 0, tmp_path / "x.parquet",
                   exchange_url=small_emulator.base_url)
    assert small_emulator.request_count("/api/v3/klines") == 0


def test_exchange_side_bad_symbol_is_not_retried(small_emulator):
    # the exchange itself says -1121 (a market ccxt lists but the server rejects)
    ex = create_exchange("binance", exchange_url=small_emulator.base_url)
    ex.load_markets()
    ex.markets["BTC/USDT"]["id"] = "NOPEUSDT"
    from coinrl.pipeline.exchange_client import call_exchange

    with pytest.raises(BadSymbol, match="Invalid symbol"):
        call_exchange(lambda: ex.fetch_ohlcv("BTC/USDT", "1h", since=0), "fetch_ohlcv",
                      client=ex, max_retries=3)
    assert small_emulator.request_count("/api/v3/klines") == 1


def test_garbage_json_is_an_exchange_error_and_nothing_is_written(small_emulator, tmp_path):
    emu = small_emulator
    emu.faults.garbage(count=None, path_prefix="/api/v3/klines")
    path = tmp_path / "g.parquet"
    with pytest.raises(ExchangeError, match="not JSON") as info:
        _fetch(emu, path)
    assert not isinstance(info.value, TemporaryExchangeError)
    assert emu.request_count("/api/v3/klines") == 1  # not retried
    assert not path.exists()


def test_failed_update_leaves_the_existing_file_untouched(small_emulator, tmp_path):
    emu = small_emulator
    path = tmp_path / "u.parquet"
    _fetch(emu, path)
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    emu.clock.advance(5 * HOUR_MS)
    emu.faults.garbage(count=None, path_prefix="/api/v3/klines")
    with pytest.raises(ExchangeError):
        update_data("BTC/USDT", "1h", path, exchange_url=emu.base_url)
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == mtime


def test_unknown_exchange_suggests_close_ids(tmp_path):
    with pytest.raises(ConfigError, match="binance"):
        fetch_data("BTC/USDT", "1h", 0, tmp_path / "x.parquet", exchange="binanse")


# -- updates and the scheduler --------------------------------------------------------------------------
@pytest.mark.slow
def test_update_appends_only_new_closed_candles_and_is_idempotent(candle_factory, tmp_path):
    src = candle_factory(1200)
    ts = src.ts_ms.to_numpy()
    clock = FixedClock(int(ts[1000]) + 1)
    path = tmp_path / "btc.parquet"
    with EmulatorServer({"BTC/USDT": src}, clock=clock) as emu:
        fetch_data("BTC/USDT", "1h", int(ts[0]), path, exchange_url=emu.base_url)
        assert len(load_data(path)) == 1000
        assert update_data("BTC/USDT", "1h", path, exchange_url=emu.base_url) == 0
        clock.advance(3 * HOUR_MS)  # bars 1000..1002 close
        mtime = path.stat().st_mtime_ns
        assert update_data("BTC/USDT", "1h", path, exchange_url=emu.base_url) == 3
        assert path.stat().st_mtime_ns != mtime
        mtime = path.stat().st_mtime_ns
        emu.reset_requests()
        assert update_data("BTC/USDT", "1h", path, exchange_url=emu.base_url) == 0
        assert path.stat().st_mtime_ns == mtime  # nothing new: not rewritten
        assert emu.request_count("/api/v3/klines") == 0  # knew no bar could have closed
    _assert_same(load_data(path), _closed(src.iloc[:1004]))
    assert read_metadata(path)["rows"] == 1003


def test_update_refuses_a_file_of_another_symbol_or_timeframe(small_emulator, tmp_path):
    path = tmp_path / "btc.parquet"
    _fetch(small_emulator, path, end_time=int(small_emulator.spot.ts_ms[10]))
    url = small_emulator.base_url
    with pytest.raises(DataError, match="timeframe"):
        update_data("BTC/USDT", "4h", path, exchange_url=url)
    with pytest.raises(DataError, match="BTC/USDT:USDT"):
        update_data("BTC/USDT:USDT", "1h", path, exchange_url=url)
    with pytest.raises(DataError, match="does not exist"):
        update_data("BTC/USDT", "1h", tmp_path / "missing.parquet", exchange_url=url)


@pytest.mark.slow
def test_update_also_extends_the_funding_file(small_emulator, tmp_path):
    emu = small_emulator
    path = tmp_path / "perp.parquet"
    ts = emu.perp.ts_ms
    _fetch(emu, path, symbol="BTC/USDT:USDT", end_time=int(ts[1000]))
    n_f = len(load_funding(path))
    assert update_data("BTC/USDT:USDT", "1h", path, exchange_url=emu.base_url) == 1499
    assert len(load_funding(path)) > n_f
    assert load_funding(path).ts_ms.is_monotonic_increasing


@pytest.mark.slow
def test_schedule_updates_runs_n_times(candle_factory, tmp_path):
    src = candle_factory(100)
    ts = src.ts_ms.to_numpy()
    clock = FixedClock(int(ts[50]))
    path = tmp_path / "btc.parquet"
    runs: list[tuple[int, dict[str, int]]] = []
    with EmulatorServer({"BTC/USDT": src}, clock=clock) as emu:
        fetch_data("BTC/USDT", "1h", int(ts[0]), path, exchange_url=emu.base_url)

        def after_run(n: int, results: dict[str, int]) -> None:
            runs.append((n, results))
            clock.advance(2 * HOUR_MS)  # two more bars close before the next run

        t0 = time.monotonic()
        schedule_updates(
            [UpdateJob(symbol="BTC/USDT", interval="1h", filename=path, exchange_url=emu.base_url)],
            every="1s", max_runs=3, on_run=after_run,
        )
        elapsed = time.monotonic() - t0
    assert [n for n, _ in runs] == [1, 2, 3]
    assert [r[str(path)] for _, r in runs] == [0, 2, 2]
    assert 1.8 < elapsed < 6  # immediately, then every second
    assert len(load_data(path)) == 54


@pytest.mark.slow
def test_schedule_updates_keeps_going_after_a_failing_job(tmp_path):
    runs: list[dict[str, int]] = []
    schedule_updates([{"symbol": "BTC/USDT", "interval": "1h",
                       "filename": str(tmp_path / "missing.parquet")}],
                     every="1s", max_runs=2, on_run=lambda n, r: runs.append(r))
    assert runs == [{str(tmp_path / "missing.parquet"): -1}] * 2


def test_schedule_updates_validates_jobs():
    with pytest.raises(ConfigError, match="symbol"):
        schedule_updates([{"interval": "1h", "filename": "x.parquet"}], every="1h", max_runs=1)


# -- small pieces -----------------------------------------------------------------------------------------
def test_to_ms_parses_times_and_rejects_ambiguous_ones():
    assert to_ms(1_704_067_200_000) == 1_704_067_200_000
    assert to_ms("2024-01-01") == 1_704_067_200_000
    assert to_ms("2024-01-01T01:00+01:00") == 1_704_067_200_000
    assert to_ms(datetime(2024, 1, 1, tzinfo=UTC)) == 1_704_067_200_000
    with pytest.raises(ConfigError, match="SECONDS"):
        to_ms(1_704_067_200)
    with pytest.raises(ConfigError, match="naive"):
        to_ms(datetime(2024, 1, 1))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ConfigError, match="ISO"):
        to_ms("yesterday-ish")


def test_override_api_urls_keeps_paths():
    api = {"public": "https://api.binance.com/api/v3",
           "nested": {"fapi": "https://fapi.binance.com/fapi/v1"}}
    out = override_api_urls(api, "http://127.0.0.1:9/prefix/")
    assert out == {"public": "http://127.0.0.1:9/prefix/api/v3",
                   "nested": {"fapi": "http://127.0.0.1:9/prefix/fapi/v1"}}
    with pytest.raises(ConfigError):
        override_api_urls(api, "localhost:9")
