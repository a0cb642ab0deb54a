"""Live-trading figures against the exchange emulator (real ccxt, signed HTTP on 127.0.0.1).

Usage: python benchmarks/bench_live.py [--quick] [--soak-bars N] [--latency-bars N]

* **latency**: decision-to-order-acknowledged, per decision that sends an order: from the
  moment the policy is asked (the observation of the newly closed bar is ready) to the moment
  the exchange's answer to the order is parsed (risk, sizing, rounding, journalling the intent,
  signing, HTTP, parsing, journalling the ack). A policy that flips between flat and long makes
  every bar send an order. ``own_share_of_latency`` is the part spent outside the HTTP
  exchanges (``ccxt.fetch``: network stack and the emulator's own handling excluded): coinrl,
  ccxt's request building and parsing and the journal's fsyncs.
* **soak**: ``N`` bars (10,000 by default) replayed as fast as the runner goes (a FixedClock the
  runner steps: the accelerated replay of a ReplayClock without its wall-clock pacing, so the
  runner never skips bars on a busy machine) with faults injected at a steady seeded rate (5xx,
  429, latency, dropped requests, orders accepted but unanswered, partial fills, rejections);
  retry back-off is scaled down like the clock. Counted: orders sent (on the exchange), faults
  met, duplicates (client order ids sent twice + decision bars with more than one order: must
  be 0), lost fills (exchange trades missing from the journal + journal fills the exchange does
  not have: must be 0), resident memory at start and end.

Prints tables, then one line of JSON with keys ``latency_ms_p50``, ``latency_ms_p99``,
``own_share_of_latency``, ``soak_orders``, ``soak_faults``, ``soak_duplicates``,
``soak_lost_fills``, ``rss_mb_start``, ``rss_mb_end`` and the extras ``latency_orders``,
``soak_bars``, ``soak_s``, ``soak_bars_per_s`` (and over its first and last tenth),
``soak_exit``, ``soak_fault_counts``,
``machine``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit_json, machine, print_table  # noqa: E402

import coinrl.pipeline.exchange_client as exchange_client  # noqa: E402
from coinrl.envs.config import EnvConfig  # noqa: E402
from coinrl.live.emulator import EmulatorServer, FixedClock, MarketSpec  # noqa: E402
from coinrl.live.exchange import connect_to_exchange  # noqa: E402
from coinrl.live.journal import Journal  # noqa: E402
from coinrl.live.live_env import SteppedClock  # noqa: E402
from coinrl.live.risk import RiskConfig  # noqa: E402
from coinrl.live.runner import RunnerConfig, build_runner  # noqa: E402
from coinrl.pipeline.splits import prepare_data_for_model  # noqa: E402
from coinrl.pipeline.synthetic import gbm  # noqa: E402

SYMBOL = "SOL/USDT"
KEY = "BenchKey0123456789"
SECRET = "BenchSecret-not-a-real-one"  # noqa: S105 - an emulator account
HOUR_MS = 3_600_000
K0 = 160
MARKET = MarketSpec(
    symbol=SYMBOL, kind="spot", base="SOL", quote="USDT", tick_size=0.001, step_size=0.25,
    min_qty=0.25, max_qty=9_000_000.0, min_notional=5.0, min_price=0.001, max_price=100_000.0,
)
SPEC: dict[str, Any] = {"features": [
    {"kind": "returns", "horizons": [1, 4]}, {"kind": "rsi", "window": 14},
    {"kind": "sma_ratio", "windows": [12]},
]}
ENV = EnvConfig(
    window=8, action="discrete", positions=(0.0, 0.5, 1.0), allow_short=False, max_leverage=1.0,
    taker_fee_rate=0.001, slippage_bps=2.0, lot_size_base=0.25, min_notional_quote=5.0,
    rebalance_threshold=0.01, episode_length_bars=256,
)


def rss_mb() -> float:
    """Resident set size of this process, MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class FlipPolicy:
    """Flat, long, flat, long...: every decision sends an order."""

    def __init__(self) -> None:
        self.n = 0

    def predict(self, observation: Any, deterministic: bool = True) -> np.ndarray:
        self.n += 1
        return np.full(len(observation), 2 * (self.n % 2), dtype=np.int64)


class SignPolicy:
    """Position by the sign of the newest one-bar return (a realistic order rate)."""

    def __init__(self, col: int) -> None:
        self.col = col

    def predict(self, observation: Any, deterministic: bool = True) -> np.ndarray:
        x = np.asarray(observation)[:, self.col]
        return np.where(x > 0, 2, np.where(x < 0, 1, 0)).astype(np.int64)


def make_server(n_bars: int, clock: FixedClock) -> tuple[EmulatorServer, Any]:
    frame = gbm(n_bars, s0=40.0, sigma=0.8, seed=5)
    frame.attrs.update(symbol=SYMBOL, exchange="binance")
    ohlcv = frame[["ts_ms", "open", "high", "low", "close", "volume"]].copy()
    ohlcv.attrs["timeframe"] = "1h"
    clock.set(int(frame.ts_ms.iloc[K0]))
    server = EmulatorServer({SYMBOL: ohlcv}, clock=clock, markets={SYMBOL: MARKET}, execution=ENV,
                            accounts={KEY: (SECRET, {"USDT": 10_000.0})})
    server.start()
    return server, frame


def session(server: EmulatorServer, clock: FixedClock, policy: Any, journal_path: Path,
            bars: int) -> Any:
    prepared = prepare_data_for_model(gbm(600, s0=40.0, sigma=0.8, seed=2), spec=SPEC)
    client = connect_to_exchange(KEY, SECRET, exchange_url=server.base_url, symbols=[SYMBOL],
                                 max_clock_skew_ms=None, config={"enableRateLimit": False})
    return build_runner(
        policy, env_config=ENV, spec=prepared.spec, normaliser=prepared.normaliser, client=client,
        symbol=SYMBOL, timeframe="1h", mode="live", journal=Journal(journal_path, run_id="bench"),
        risk_config=RiskConfig.permissive(),
        config=RunnerConfig(max_bars=bars, reload_every_bars=0, max_consecutive_errors=10,
                            max_consecutive_halts=50),
        clock=SteppedClock(clock, offset_ms=1), history_bars=K0, max_buffer_bars=400,
        check_clock_skew=False,
    )


def bench_latency(bars: int, tmp: Path) -> dict[str, Any]:
    clock = FixedClock(0)
    server, _ = make_server(K0 + bars + 20, clock)
    try:
        runner = session(server, clock, FlipPolicy(), tmp / "latency.sqlite", bars)
        raw = runner.env.broker.client._client  # the ccxt exchange: time its HTTP exchanges
        http = {"s": 0.0}
        fetch = raw.fetch

        def timed_fetch(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fetch(*a, **kw)
            finally:
                http["s"] += time.perf_counter() - t0

        raw.fetch = timed_fetch
        samples: list[tuple[float, float]] = []
        mark: dict[str, float] = {}
        policy = runner.policy
        predict = policy.predict

        def timed_predict(obs: Any, deterministic: bool = True) -> Any:
            mark["t0"], mark["http0"] = time.perf_counter(), http["s"]
            return predict(obs, deterministic)

        policy.predict = timed_predict
        broker = runner.env.broker
        submit = broker.submit_target

        def timed_submit(*a: Any, **kw: Any) -> Any:
            reports = submit(*a, **kw)
            if any(r.status == "sent" for r in reports):
                samples.append((time.perf_counter() - mark["t0"], http["s"] - mark["http0"]))
            return reports

        broker.submit_target = timed_submit
        runner.run()
    finally:
        server.stop()
    total = np.array([s[0] for s in samples]) * 1000.0
    inside = np.array([s[1] for s in samples]) * 1000.0
    return {
        "latency_orders": len(samples),
        "latency_ms_p50": float(np.percentile(total, 50)),
        "latency_ms_p99": float(np.percentile(total, 99)),
        "http_ms_p50": float(np.percentile(inside, 50)),
        "own_share_of_latency": float(1.0 - inside.sum() / total.sum()),
    }


def bench_soak(bars: int, tmp: Path, seed: int = 7) -> dict[str, Any]:
    clock = FixedClock(0)
    server, _ = make_server(K0 + bars + 20, clock)
    f = server.faults
    f.reseed(seed)
    f.server_error(503, count=None, probability=0.01, path_prefix="/api/v3")
    f.rate_limit(retry_after_s=0, count=None, probability=0.01, path_prefix="/api/v3/order")
    f.latency(3.0, probability=0.02, path_prefix="/api/v3")
    f.drop(count=None, probability=0.005, path_prefix="/api/v3")
    f.drop_after(probability=0.02)
    f.partial_fill(0.5, probability=0.05)
    f.reject(probability=0.01)
    try:
        start = rss_mb()
        runner = session(server, clock, SignPolicy((ENV.window - 1) * 4), tmp / "soak.sqlite", bars)
        t0 = time.perf_counter()
        code = runner.run()
        soak_s = time.perf_counter() - t0
        end = rss_mb()
        fired = f.fired()
        f.clear()
        orders = server.orders()
        trades = server.trades()
    finally:
        server.stop()
    with Journal(tmp / "soak.sqlite") as j:
        journal_fills = {x.fill_id for x in j.fills()}
        walls = np.array([e.wall_ts_ms for e in j.events("decision")], dtype=np.float64)
        decisions = len(walls)
    tenth = max(2, decisions // 10)
    first_bps = (tenth - 1) / max(1e-9, (walls[tenth - 1] - walls[0]) / 1000.0)
    last_bps = (tenth - 1) / max(1e-9, (walls[-1] - walls[-tenth]) / 1000.0)
    cids = Counter(o.client_order_id for o in orders)
    per_bar = Counter(c.rsplit("-", 2)[1] for c in cids)
    dup = sum(n - 1 for n in cids.values() if n > 1) + sum(n - 1 for n in per_bar.values() if n > 1)
    exchange_fills = {str(t.trade_id) for t in trades}
    return {
        "soak_bars": decisions,
        "soak_s": soak_s,
        "soak_bars_per_s": decisions / soak_s,
        "soak_bars_per_s_first_tenth": first_bps,
        "soak_bars_per_s_last_tenth": last_bps,
        "soak_exit": code.name,
        "soak_orders": len(orders),
        "soak_faults": int(sum(fired.values())),
        "soak_fault_counts": fired,
        "soak_duplicates": dup,
        "soak_lost_fills": len(exchange_fills ^ journal_fills),
        "rss_mb_start": start,
        "rss_mb_end": end,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 latency bars, a 500-bar soak")
    ap.add_argument("--latency-bars", type=int, default=None)
    ap.add_argument("--soak-bars", type=int, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    # the replay is accelerated: so is the retry back-off (seconds would be hours of bars)
    exchange_client.RETRY_INITIAL_S = 0.001
    exchange_client.RETRY_MAX_S = 0.01
    lat_bars = args.latency_bars or (200 if args.quick else 1000)
    soak_bars = args.soak_bars or (500 if args.quick else 10_000)
    with tempfile.TemporaryDirectory() as d:
        lat = bench_latency(lat_bars, Path(d))
        soak = bench_soak(soak_bars, Path(d))
    print(f"machine: {machine()}")
    print_table("decision -> order acknowledged (emulator on 127.0.0.1)",
                ["orders", "p50 ms", "p99 ms", "HTTP p50 ms", "coinrl share"],
                [[lat["latency_orders"], f"{lat['latency_ms_p50']:.2f}", f"{lat['latency_ms_p99']:.2f}",
                  f"{lat['http_ms_p50']:.2f}", f"{lat['own_share_of_latency']:.2f}"]])
    print_table("soak (faults at a steady rate)",
                ["bars", "s", "bars/s", "first/last 10% bars/s", "exit", "orders", "faults", "duplicates", "lost fills",
                 "RSS MiB start", "RSS MiB end"],
                [[soak["soak_bars"], f"{soak['soak_s']:.0f}", f"{soak['soak_bars_per_s']:.1f}",
                  f"{soak['soak_bars_per_s_first_tenth']:.1f}/{soak['soak_bars_per_s_last_tenth']:.1f}",
                  soak["soak_exit"], soak["soak_orders"], soak["soak_faults"],
                  soak["soak_duplicates"], soak["soak_lost_fills"], f"{soak['rss_mb_start']:.0f}",
                  f"{soak['rss_mb_end']:.0f}"]])
    print(f"faults met: {soak['soak_fault_counts']}")
    emit_json({**lat, **soak, "machine": machine()})


if __name__ == "__main__":
    main()
