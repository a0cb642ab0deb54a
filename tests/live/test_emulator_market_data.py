"""The emulator answers like Binance's market-data API, never leaks the future, and injects faults.

Everything goes over real HTTP on 127.0.0.1: raw ``requests`` calls to check Binance's exact
semantics, and the real ccxt client to check that ccxt understands the answers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import ccxt
import numpy as np
import pandas as pd
import pytest
import requests

from coinrl.live.emulator import (
    EmulatorServer,
    FaultPlan,
    FixedClock,
    ReplayClock,
    parse_clock,
    serve,
)
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.exchange_client import override_api_urls
from coinrl.pipeline.store import store_data

HOUR_MS = 3_600_000


def _get(emu: EmulatorServer, path: str, **params: object) -> requests.Response:
    return requests.get(f"{emu.base_url}{path}", params=params, timeout=10)


def _klines(emu: EmulatorServer, path: str = "/api/v3/klines", **params: object) -> list[list]:
    r = _get(emu, path, **params)
    assert r.status_code == 200, r.text
    return r.json()


def _ohlcv(rows: list[list]) -> np.ndarray:
    return np.array([[float(x) for x in r[1:6]] for r in rows])


def _client(emu: EmulatorServer, exchange: str = "binance") -> ccxt.Exchange:
    ex = getattr(ccxt, exchange)({"enableRateLimit": False})
    ex.urls["api"] = override_api_urls(ex.urls["api"], emu.base_url)
    return ex


# -- klines semantics -------------------------------------------------------------------------
def test_klines_rows_are_binance_shaped_and_exact(emulator: EmulatorServer, hourly_candles):
    src = hourly_candles
    rows = _klines(emulator, symbol="BTCUSDT", interval="1h", startTime=int(src.ts_ms[0]), limit=3)
    assert len(rows) == 3
    for i, r in enumerate(rows):
        assert len(r) == 12
        assert r[0] == int(src.ts_ms[i])
        assert r[6] == int(src.ts_ms[i]) + HOUR_MS - 1  # close time
        assert all(isinstance(x, str) for x in r[1:6])  # decimals as strings, like Binance
        expected = src.loc[i, ["open", "high", "low", "close", "volume"]].to_numpy(float)
        np.testing.assert_array_equal(_ohlcv([r])[0], expected)  # bit-exact


def test_klines_default_limit_is_500_and_max_is_1000_spot_1500_futures(emulator, hourly_candles):
    start = int(hourly_candles.ts_ms[0])
    assert len(_klines(emulator, symbol="BTCUSDT", interval="1h", startTime=start)) == 500
    assert len(_klines(emulator, symbol="BTCUSDT", interval="1h", startTime=start,
                       limit=5000)) == 1000
    assert len(_klines(emulator, "/fapi/v1/klines", symbol="BTCUSDT", interval="1h",
                       startTime=start, limit=5000)) == 1500
    assert len(_klines(emulator, symbol="BTCUSDT", interval="1h", startTime=start,
                       limit=7)) == 7


def test_klines_start_and_end_are_inclusive_on_open_time(emulator, hourly_candles):
    ts = hourly_candles.ts_ms.to_numpy()
    rows = _klines(emulator, symbol="BTCUSDT", interval="1h", startTime=int(ts[10]),
                   endTime=int(ts[20]))
    assert [r[0] for r in rows] == ts[10:21].tolist()
    # a start inside a bar begins at the next bar's open
    rows = _klines(emulator, symbol="BTCUSDT", interval="1h", startTime=int(ts[10]) + 1,
                   endTime=int(ts[12]))
    assert [r[0] for r in rows] == ts[11:13].tolist()
    # only endTime: the last `limit` bars up to it
    rows = _klines(emulator, symbol="BTCUSDT", interval="1h", endTime=int(ts[100]), limit=5)
    assert [r[0] for r in rows] == ts[96:101].tolist()


def test_latest_bar_is_in_progress_and_does_not_leak_its_close(emulator, hourly_candles):
    src = hourly_candles
    now = emulator.clock.now_ms()
    assert int(src.ts_ms.iloc[-1]) < now < int(src.ts_ms.iloc[-1]) + HOUR_MS
    rows = _klines(emulator, symbol="BTCUSDT", interval="1h", limit=3)
    assert [r[0] for r in rows] == src.ts_ms.iloc[-3:].tolist()
    o, h, low, c, v = _ohlcv(rows)[-1]
    assert o == h == low == c == src.open.iloc[-1]
    assert v == 0.0
    assert c != src.close.iloc[-1]
    np.testing.assert_array_equal(
        _ohlcv(rows)[:2], src[["open", "high", "low", "close", "volume"]].iloc[-3:-1].to_numpy()
    )


def test_bars_opening_after_now_do_not_exist_until_the_clock_reaches_them(hourly_candles):
    ts = hourly_candles.ts_ms.to_numpy()
    clock = FixedClock(int(ts[99]) + 1)  # bar 99 just opened
    with EmulatorServer({"BTC/USDT": hourly_candles}, clock=clock) as emu:
        rows = _klines(emu, symbol="BTCUSDT", interval="1h", startTime=int(ts[0]), limit=1000)
        assert rows[-1][0] == ts[99]
        assert len(rows) == 100
        clock.advance(HOUR_MS)
        rows = _klines(emu, symbol="BTCUSDT", interval="1h", startTime=int(ts[0]), limit=1000)
        assert rows[-1][0] == ts[100]
        assert len(rows) == 101
        assert float(rows[-2][4]) == hourly_candles.close[99]  # bar 99 closed: real close now
        assert _get(emu, "/api/v3/time").json() == {"serverTime": int(ts[99]) + 1 + HOUR_MS}


@pytest.mark.parametrize("interval", ["1h", "4h", "1d"])
def test_answers_do_not_change_when_the_future_is_perturbed(candle_factory, interval):
    """No look-ahead: bars after "now" can be anything; every answer at "now" is the same."""
    a = candle_factory(600, seed=3)
    b = a.copy()
    now = int(a.ts_ms[400]) + 25 * 60_000  # 25 minutes into bar 400
    future = b.ts_ms >= a.ts_ms[400]
    rng = np.random.default_rng(0)
    for col in ("open", "high", "low", "close", "volume"):
        b.loc[future & (b.ts_ms > a.ts_ms[400]), col] *= rng.uniform(0.5, 2.0, int(future.sum()) - 1)
    b.loc[b.ts_ms == a.ts_ms[400], ["high", "low", "close", "volume"]] = [1e9, 1e-9, 123.0, 1e6]
    answers = []
    for frame in (a, b):
        with EmulatorServer({"BTC/USDT": frame}, clock=FixedClock(now)) as emu:
            answers.append(_get(emu, "/api/v3/klines", symbol="BTCUSDT", interval=interval,
                                limit=1000).text)
    assert answers[0] == answers[1]
    assert json.loads(answers[0])[-1][0] <= now


def test_coarser_interval_is_the_resampled_stored_bars(emulator, hourly_candles):
    src = hourly_candles.copy()
    rows = _klines(emulator, symbol="BTCUSDT", interval="4h", startTime=int(src.ts_ms[0]),
                   limit=1000)
    idx = pd.to_datetime(src.ts_ms, unit="ms", utc=True)
    res = src.set_index(idx).resample("4h").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    got = _ohlcv(rows)
    assert [r[0] for r in rows] == res.index.as_unit("ms").asi8.tolist()[: len(rows)]
    # every closed 4h bar matches pandas' resample
    np.testing.assert_allclose(got[:-1], res.to_numpy()[: len(rows) - 1], rtol=1e-12)


def test_weekly_bars_open_on_monday(emulator):
    rows = _klines(emulator, symbol="BTCUSDT", interval="1w", limit=5)
    weekdays = {pd.Timestamp(r[0], unit="ms", tz="UTC").day_name() for r in rows}
    assert weekdays == {"Monday"}


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "NOPEUSDT", "interval": "1h"}, -1121),
        ({"symbol": "BTCUSDT", "interval": "7m"}, -1120),
        ({"symbol": "BTCUSDT", "interval": "1m"}, -1120),  # finer than the stored 1h bars
        ({"interval": "1h"}, -1102),
        ({"symbol": "BTCUSDT"}, -1102),
        ({"symbol": "BTCUSDT", "interval": "1h", "startTime": "abc"}, -1100),
    ],
)
def test_bad_requests_get_binance_error_bodies(emulator, params, code):
    r = _get(emulator, "/api/v3/klines", **params)
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == code
    if code == -1121:
        assert body == {"code": -1121, "msg": "Invalid symbol."}


def test_spot_symbols_are_not_futures_symbols():
    with EmulatorServer({"ETH/USDT": emulator_frame()}) as emu:
        assert _get(emu, "/fapi/v1/klines", symbol="ETHUSDT", interval="1h").json()["code"] == -1121
        assert _get(emu, "/api/v3/klines", symbol="ETHUSDT", interval="1h").status_code == 200


def emulator_frame() -> pd.DataFrame:
    ts = 1_704_067_200_000 + np.arange(10, dtype=np.int64) * HOUR_MS
    return pd.DataFrame({"ts_ms": ts, "open": 2000.0, "high": 2010.0, "low": 1990.0,
                         "close": 2005.0, "volume": 1.5})


def test_bad_candles_are_rejected_with_a_clear_error(hourly_candles):
    with pytest.raises(DataError, match="not strictly ascending"):
        EmulatorServer({"BTC/USDT": hourly_candles.iloc[::-1]})
    bad = hourly_candles.copy()
    bad.loc[5, "close"] = np.nan
    with pytest.raises(DataError, match="NaN"):
        EmulatorServer({"BTC/USDT": bad})
    with pytest.raises(ConfigError, match="unified symbol"):
        EmulatorServer({"BTCUSDT": hourly_candles})
    with pytest.raises(ConfigError, match="linear"):
        EmulatorServer({"BTC/USD:BTC": hourly_candles})


# -- markets, time and ccxt -----------------------------------------------------------------------
def test_exchange_info_has_realistic_filters_that_ccxt_parses(emulator):
    info = _get(emulator, "/api/v3/exchangeInfo").json()
    (sym,) = info["symbols"]
    filters = {f["filterType"]: f for f in sym["filters"]}
    assert sym["symbol"] == "BTCUSDT"
    assert sym["status"] == "TRADING"
    assert float(filters["PRICE_FILTER"]["tickSize"]) == 0.01  # BTC at ~40k
    assert float(filters["LOT_SIZE"]["stepSize"]) == 0.00001
    assert float(filters["NOTIONAL"]["minNotional"]) == 5.0
    fapi = _get(emulator, "/fapi/v1/exchangeInfo").json()["symbols"][0]
    assert fapi["contractType"] == "PERPETUAL"
    assert {f["filterType"] for f in fapi["filters"]} >= {"PRICE_FILTER", "LOT_SIZE",
                                                          "MIN_NOTIONAL"}
    assert _get(emulator, "/api/v3/exchangeInfo", symbol="NOPE").json()["code"] == -1121

    markets = _client(emulator).load_markets()
    assert set(markets) == {"BTC/USDT", "BTC/USDT:USDT"}
    spot, perp = markets["BTC/USDT"], markets["BTC/USDT:USDT"]
    assert spot["spot"]
    assert perp["swap"]
    assert perp["linear"]
    assert spot["precision"]["price"] == 0.01
    assert spot["precision"]["amount"] == 0.00001
    assert spot["limits"]["cost"]["min"] == 5.0


@pytest.mark.slow
def test_ccxt_reads_time_candles_and_funding(emulator, hourly_candles):
    ex = _client(emulator)
    assert ex.fetch_time() == emulator.clock.now_ms()
    start = int(hourly_candles.ts_ms[0])
    got = ex.fetch_ohlcv("BTC/USDT", "1h", since=start, limit=1000)
    src = hourly_candles.iloc[:1000]
    np.testing.assert_array_equal(np.array(got), src.to_numpy(dtype=float))

    usdm = _client(emulator, "binanceusdm")
    perp_rows = usdm.fetch_ohlcv("BTC/USDT:USDT", "1h", since=start, limit=10)
    assert len(perp_rows) == 10
    fund = usdm.fetch_funding_rate_history("BTC/USDT:USDT", since=start, limit=1000)
    src_f = emulator.data.funding["BTC/USDT:USDT"]
    assert [f["timestamp"] for f in fund] == src_f.ts_ms.tolist()
    assert [f["fundingRate"] for f in fund] == src_f.rate.tolist()  # exact round trip


def test_funding_rate_never_shows_future_events_and_defaults_to_100(emulator):
    now = emulator.clock.now_ms()
    rows = _get(emulator, "/fapi/v1/fundingRate", symbol="BTCUSDT", limit=5000).json()
    assert len(rows) == 375  # 3,000 hours, one event per 8 h, all before now
    assert max(r["fundingTime"] for r in rows) <= now
    default = _get(emulator, "/fapi/v1/fundingRate", symbol="BTCUSDT").json()
    assert len(default) == 100  # Binance's default limit
    assert default[-1]["fundingTime"] == rows[-1]["fundingTime"]  # no start: the latest ones
    emulator.clock.set(rows[-1]["fundingTime"] - 1)
    earlier = _get(emulator, "/fapi/v1/fundingRate", symbol="BTCUSDT", limit=1000).json()
    assert earlier[-1]["fundingTime"] == rows[-2]["fundingTime"]


def test_replay_clock_reveals_bars_as_it_runs(hourly_candles):
    ts = hourly_candles.ts_ms.to_numpy()
    clock = ReplayClock.bars(start_ms=int(ts[10]), bar_ms=HOUR_MS, wall_ms_per_bar=40)
    with EmulatorServer({"BTC/USDT": hourly_candles}, clock=clock) as emu:
        t0 = time.monotonic()
        first = _klines(emu, symbol="BTCUSDT", interval="1h", limit=1)[0][0]
        time.sleep(0.2)
        later = _klines(emu, symbol="BTCUSDT", interval="1h", limit=1)[0][0]
        wall_s = time.monotonic() - t0
    assert first >= ts[10]
    bars = (later - first) // HOUR_MS
    assert 0.2 / 0.04 - 1 <= bars <= wall_s / 0.04 + 1  # one bar per 40 ms of wall time


def test_parse_clock_strings():
    assert parse_clock("end") is None
    fixed = parse_clock("fixed:2024-01-01T00:00Z")
    assert isinstance(fixed, FixedClock)
    assert fixed.now_ms() == 1_704_067_200_000
    replay = parse_clock("replay:1704067200000:1h/50")
    assert isinstance(replay, ReplayClock)
    assert replay.speed == HOUR_MS / 50
    replay_ms = parse_clock("replay:2024-01-01T00:00Z:1h/50ms")
    assert isinstance(replay_ms, ReplayClock)
    assert replay_ms.speed == HOUR_MS / 50
    with pytest.raises(ConfigError):
        parse_clock("tomorrow")
    for bad in ("replay:2024-01-01T00:00Z:1h/fast", "replay:2024-01-01T00:00Z:-3", "replay:0:1h/0"):
        with pytest.raises(ConfigError, match="not a positive number"):
            parse_clock(bad)


# -- faults -------------------------------------------------------------------------------------------
def test_rate_limit_fault_answers_429_with_retry_after_for_the_next_k_requests(emulator):
    emulator.faults.rate_limit(retry_after_s=7, count=2, path_prefix="/api/v3/klines")
    p = {"symbol": "BTCUSDT", "interval": "1h", "limit": 1}
    assert _get(emulator, "/api/v3/time").status_code == 200  # other paths unaffected
    for _ in range(2):
        r = _get(emulator, "/api/v3/klines", **p)
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "7"
        assert r.json()["code"] == -1003
    assert _get(emulator, "/api/v3/klines", **p).status_code == 200


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_error_fault_status(emulator, status):
    emulator.faults.server_error(status, count=1)
    assert _get(emulator, "/api/v3/ping").status_code == status
    assert _get(emulator, "/api/v3/ping").status_code == 200


def test_drop_fault_closes_the_connection_without_an_answer(emulator):
    emulator.faults.drop(count=1)
    with pytest.raises(requests.ConnectionError):
        _get(emulator, "/api/v3/ping")
    assert _get(emulator, "/api/v3/ping").status_code == 200
    assert [r.status for r in emulator.requests("/api/v3/ping")] == [0, 200]


def test_garbage_fault_is_not_json(emulator):
    emulator.faults.garbage(count=1)
    r = _get(emulator, "/api/v3/time")
    assert r.status_code == 200
    with pytest.raises(ValueError, match="."):
        r.json()


def test_latency_fault_delays_answers(emulator):
    emulator.faults.latency(150, count=1)
    t0 = time.perf_counter()
    _get(emulator, "/api/v3/ping")
    slow = time.perf_counter() - t0
    t0 = time.perf_counter()
    _get(emulator, "/api/v3/ping")
    fast = time.perf_counter() - t0
    assert slow >= 0.15 > fast


def test_probability_faults_are_seeded_and_about_the_right_rate():
    def sequence(seed: int) -> list[bool]:
        plan = FaultPlan(seed=seed)
        plan.server_error(503, count=None, probability=0.3)
        return [plan.decide("/x").action is not None for _ in range(2000)]

    a, b = sequence(1), sequence(1)
    assert a == b
    assert a != sequence(2)
    assert 0.25 < sum(a) / len(a) < 0.35


def test_count_faults_fire_exactly_k_times_under_concurrency():
    plan = FaultPlan()
    plan.drop(count=50)
    fired = []

    def worker() -> None:
        fired.extend(plan.decide("/x").action is not None for _ in range(100))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(fired) == 50


def test_fault_rules_validate():
    with pytest.raises(ConfigError, match="count"):
        FaultPlan().server_error(503, count=2, probability=0.5)
    with pytest.raises(ConfigError, match="status"):
        FaultPlan().server_error(418)
    with pytest.raises(ConfigError, match="latency_ms"):
        FaultPlan().latency(0)


def test_admin_endpoint_sets_faults_and_clock_from_another_process(emulator):
    body = {"clear": True, "seed": 3,
            "rules": [{"kind": "rate_limit", "count": 1, "retry_after_s": 2,
                       "path_prefix": "/api/v3/klines"}]}
    r = requests.post(f"{emulator.base_url}/_emulator/faults", json=body, timeout=5)
    assert r.status_code == 200
    assert r.json()["rules"][0]["remaining"] == 1
    assert _get(emulator, "/api/v3/klines", symbol="BTCUSDT", interval="1h").status_code == 429
    bad = requests.post(f"{emulator.base_url}/_emulator/faults",
                        json={"rules": [{"kind": "meteor"}]}, timeout=5)
    assert bad.status_code == 400
    assert "kind" in bad.json()["error"]

    now = emulator.clock.now_ms()
    r = requests.post(f"{emulator.base_url}/_emulator/clock", json={"advance_ms": HOUR_MS},
                      timeout=5)
    assert r.json() == {"now_ms": now + HOUR_MS}
    assert emulator.clock.now_ms() == now + HOUR_MS
    stats = requests.get(f"{emulator.base_url}/_emulator/stats", timeout=5).json()
    assert stats["requests"] == {"/api/v3/klines": 1}  # admin calls are not traffic
    assert stats["faults"] == {"rate_limit": 1}


def test_request_log_counts_per_path(emulator):
    for _ in range(3):
        _get(emulator, "/api/v3/time")
    _get(emulator, "/fapi/v1/time")
    assert emulator.request_count("/api/v3/time") == 3
    assert emulator.request_count("/fapi") == 1
    assert emulator.request_count() == 4
    emulator.reset_requests()
    assert emulator.request_count() == 0


# -- lifecycle and the CLI entry ------------------------------------------------------------------------
def test_stop_releases_the_port_and_context_manager_cleans_up(hourly_candles):
    with EmulatorServer({"BTC/USDT": hourly_candles}) as emu:
        url = emu.base_url
        assert requests.get(f"{url}/api/v3/ping", timeout=5).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/api/v3/ping", timeout=2)
    with pytest.raises(ConfigError, match="not running"):
        _ = emu.base_url


def test_serve_serves_stored_files_until_stopped(tmp_path: Path, hourly_candles):
    path = tmp_path / "btc.parquet"
    store_data(hourly_candles, path, symbol="BTC/USDT", exchange="binance", timeframe="1h")
    urls: list[str] = []
    stop = threading.Event()
    th = threading.Thread(
        target=serve, args=("127.0.0.1", 0, [str(path)]),
        kwargs={"on_ready": urls.append, "stop_event": stop, "clock": "fixed:1704070800000"},
    )
    th.start()
    try:
        for _ in range(100):
            if urls:
                break
            time.sleep(0.05)
        rows = requests.get(f"{urls[0]}/api/v3/klines",
                            params={"symbol": "BTCUSDT", "interval": "1h"}, timeout=5).json()
        assert [r[0] for r in rows] == hourly_candles.ts_ms[:2].tolist()  # clock: 01:00 UTC
    finally:
        stop.set()
        th.join(10)
    assert not th.is_alive()


def test_real_bitstamp_candles_round_trip_through_ccxt(shared_data: Path, candle_factory):
    raw = pd.read_csv(shared_data / "btc_usd_1h_bitstamp.csv")
    frame = pd.DataFrame({
        "ts_ms": raw["unix"].astype("int64") * 1000,
        "open": raw["open"], "high": raw["high"], "low": raw["low"], "close": raw["close"],
        "volume": raw["volume"],
    }).sort_values("ts_ms").drop_duplicates("ts_ms").reset_index(drop=True)
    frame.attrs["timeframe"] = "1h"
    frame = frame.tail(3000).reset_index(drop=True)
    with EmulatorServer({"BTC/USD": frame}) as emu:
        ex = _client(emu)
        got = ex.fetch_ohlcv("BTC/USD", "1h", since=int(frame.ts_ms[0]), limit=1000)
    np.testing.assert_array_equal(np.array(got), frame.iloc[:1000].to_numpy(dtype=float))


def test_candle_factory_is_seeded_and_consistent(candle_factory: Callable[..., pd.DataFrame]):
    a, b = candle_factory(500, seed=5), candle_factory(500, seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert (a.low <= a[["open", "close"]].min(axis=1)).all()
    assert (a.high >= a[["open", "close"]].max(axis=1)).all()
    assert (a.open.iloc[1:].to_numpy() == a.close.iloc[:-1].to_numpy()).all()
