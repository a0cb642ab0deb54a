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
    # a decision's second leg (its first was taken off the book unfilled) is not a duplicate
    per_bar = Counter(o.client_order_id.rsplit("-", 2)[1] for o in orders if o.executed_base > 0)
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


KILL_CHILD = """
import json, random, sys, urllib.request
bench_dir, url, journal_path, seed = sys.argv[1:5]
sys.path.insert(0, bench_dir)
import bench_live as b
import coinrl.pipeline.exchange_client as exchange_client
from coinrl.live.exchange import connect_to_exchange
from coinrl.live.journal import Journal
from coinrl.live.risk import RiskConfig
from coinrl.live.runner import RunnerConfig, build_runner
from coinrl.pipeline.splits import prepare_data_for_model
from coinrl.pipeline.synthetic import gbm

exchange_client.RETRY_INITIAL_S = 0.001
exchange_client.RETRY_MAX_S = 0.01
rng = random.Random(int(seed))

class AdminClock:
    # moves the emulator's FixedClock over its admin endpoint; each wait lands somewhere INSIDE
    # the bar (market orders then rest on the book until the next open)
    def __init__(self):
        self.stopped = False
    def _post(self, body):
        req = urllib.request.Request(url + "/_emulator/clock", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(json.loads(r.read())["now_ms"])
    def now_ms(self):
        return self._post({"advance_ms": 0})
    def sleep_until(self, ts_ms):
        if self.stopped:
            return False
        target = int(ts_ms) + rng.randrange(0, b.HOUR_MS // 2)
        if self.now_ms() < target:
            self._post({"set_ms": target})
        return True
    def stop(self):
        self.stopped = True

prepared = prepare_data_for_model(gbm(600, s0=40.0, sigma=0.8, seed=2), spec=b.SPEC)
client = connect_to_exchange(b.KEY, b.SECRET, exchange_url=url, symbols=[b.SYMBOL],
                             max_clock_skew_ms=None, config={"enableRateLimit": False})
runner = build_runner(b.SignPolicy((b.ENV.window - 1) * 4), env_config=b.ENV, spec=prepared.spec,
                      normaliser=prepared.normaliser, client=client, symbol=b.SYMBOL,
                      timeframe="1h", mode="live", journal=Journal(journal_path, run_id="kill"),
                      risk_config=RiskConfig.permissive(),
                      config=RunnerConfig(reload_every_bars=0, max_consecutive_errors=10,
                                          max_consecutive_halts=50),
                      clock=AdminClock(), history_bars=b.K0, max_buffer_bars=400,
                      check_clock_skew=False)
print("running", flush=True)
runner.run()
"""

_EXCHANGE_STATUS = {"NEW": "open", "PARTIALLY_FILLED": "open", "FILLED": "closed",
                    "CANCELED": "canceled", "EXPIRED": "expired"}


def bench_kill_soak(kills: int, tmp: Path, seed: int = 11) -> dict[str, Any]:
    """A live runner in its own process, SIGKILLed ``kills`` times at seeded random points and
    restarted on the same journal; its clock lands inside bars, and a ``clock_jump`` fault can
    move the exchange's clock a bar on between two requests of one sync. Counted: duplicates,
    lost fills, decisions dropped (a decision bar whose orders all left the book unfilled with
    no replacement), journal order statuses that differ from the exchange's, decisions sized on
    a candle that was not the bar's real close (a bar taken as closed too early)."""
    import os
    import random
    import signal
    import subprocess

    clock = FixedClock(0)
    server, frame = make_server(K0 + 40 * kills + 200, clock)
    clock.set(int(frame.ts_ms.iloc[K0]) + HOUR_MS // 3)
    f = server.faults
    f.reseed(seed)
    f.clock_jump(HOUR_MS, probability=0.05, path_prefix="/api/v3/klines")  # passes a boundary
    f.partial_fill(0.5, probability=0.1)
    f.drop_after(probability=0.03)
    f.server_error(503, count=None, probability=0.01, path_prefix="/api/v3")
    rng = random.Random(seed)
    path = tmp / "kill.sqlite"
    bench_dir = str(Path(__file__).resolve().parent)
    done = 0
    t0 = time.perf_counter()
    try:
        for k in range(kills):
            child = subprocess.Popen(
                [sys.executable, "-c", KILL_CHILD, bench_dir, server.base_url, str(path),
                 str(seed * 1000 + k)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
            try:
                assert child.stdout is not None
                if child.stdout.readline().strip() == "running":
                    if k % 2:  # right after a decision: the restart lands in its bar
                        before = _decisions(path)
                        deadline = time.monotonic() + 30.0
                        while _decisions(path) == before and time.monotonic() < deadline:
                            time.sleep(0.005)
                        time.sleep(rng.uniform(0.0, 0.05))
                    else:  # anywhere: recovery, a sync, a send, a journal write
                        time.sleep(rng.uniform(0.0, 1.5))
                    os.kill(child.pid, signal.SIGKILL)
                    if child.wait(timeout=60) == -signal.SIGKILL:
                        done += 1
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        # the last restart runs to a clean end, in-process, on the same journal
        f.clear()
        runner = session_on(server, clock, path, bars=5)
        code = runner.run()
        orders = server.orders()
        trades = server.trades()
    finally:
        server.stop()
    soak_s = time.perf_counter() - t0
    closes = dict(zip(frame.ts_ms.astype(int).tolist(), frame.close.astype(float).tolist(), strict=True))
    with Journal(path) as j:
        journal_orders = j.orders()
        journal_fills = {x.fill_id for x in j.fills()}
        events = j.events()
    # restarts whose first decision was in the bar of the last decision before the kill
    same_bar = 0
    last_bar: int | None = None
    pending_restart = False
    for e in events:
        if e.kind == "start" and e.payload.get("restarted"):
            pending_restart = True
        elif e.kind == "decision":
            if pending_restart and e.bar_ts_ms == last_bar:
                same_bar += 1
            pending_restart = False
            last_bar = e.bar_ts_ms
    tick = MARKET.tick_size  # the emulator serves prices at its tick
    fake = sum(1 for info in journal_orders.values()
               if info.get("ref_price_quote") and info.get("bar_ts_ms") in closes
               and abs(float(info["ref_price_quote"]) - closes[int(info["bar_ts_ms"])]) > tick)
    revisions = sum(1 for e in events if e.kind == "reconciliation"
                    and e.payload.get("what") == "candle_revised")
    exchange = {o.client_order_id: _EXCHANGE_STATUS[o.status] for o in orders}
    mismatches = sum(1 for cid, st in exchange.items()
                     if journal_orders.get(cid, {}).get("status") != st)
    mismatches += sum(1 for cid, info in journal_orders.items()
                      if cid not in exchange and info.get("status") in ("open", "closed", "canceled"))
    by_bar: dict[str, list[Any]] = {}
    for o in orders:
        by_bar.setdefault(o.client_order_id.rsplit("-", 2)[1], []).append(o)
    dropped = sum(1 for legs in by_bar.values()
                  if all(o.status in ("CANCELED", "EXPIRED") and o.executed_base == 0 for o in legs))
    cids = Counter(o.client_order_id for o in orders)
    filled_legs = Counter(b for b, legs in by_bar.items() for o in legs if o.executed_base > 0)
    dup = sum(n - 1 for n in cids.values() if n > 1) + sum(n - 1 for n in filled_legs.values() if n > 1)
    exchange_fills = {str(t.trade_id) for t in trades}
    return {
        "soak_kills": done,
        "soak_same_bar_restarts": same_bar,
        "soak_kill_s": soak_s,
        "soak_kill_exit": code.name,
        "soak_kill_orders": len(orders),
        "soak_kill_duplicates": dup,
        "soak_kill_lost_fills": len(exchange_fills ^ journal_fills),
        "soak_dropped_decisions": dropped,
        "journal_status_mismatches": mismatches,
        "fake_closed_bars": fake,
        "candle_revisions": revisions,
        "soak_kill_faults": f.fired(),
    }


def _decisions(path: Path) -> int:
    """Decisions journalled so far (0 before the journal exists)."""
    import sqlite3

    if not path.exists():
        return 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(con.execute("SELECT COUNT(*) FROM events WHERE kind = 'decision'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def session_on(server: EmulatorServer, clock: FixedClock, path: Path, bars: int) -> Any:
    """A runner continuing the journal at ``path`` (run id ``kill``) in this process."""
    prepared = prepare_data_for_model(gbm(600, s0=40.0, sigma=0.8, seed=2), spec=SPEC)
    client = connect_to_exchange(KEY, SECRET, exchange_url=server.base_url, symbols=[SYMBOL],
                                 max_clock_skew_ms=None, config={"enableRateLimit": False})
    return build_runner(
        SignPolicy((ENV.window - 1) * 4), env_config=ENV, spec=prepared.spec,
        normaliser=prepared.normaliser, client=client, symbol=SYMBOL, timeframe="1h",
        mode="live", journal=Journal(path, run_id="kill"), risk_config=RiskConfig.permissive(),
        config=RunnerConfig(max_bars=bars, reload_every_bars=0, max_consecutive_errors=10),
        clock=SteppedClock(clock, offset_ms=HOUR_MS // 3), history_bars=K0, max_buffer_bars=400,
        check_clock_skew=False,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 latency bars, a 500-bar soak")
    ap.add_argument("--latency-bars", type=int, default=None)
    ap.add_argument("--soak-bars", type=int, default=None)
    ap.add_argument("--kills", type=int, default=None, help="SIGKILLs of the kill soak (default 24)")
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
        kill = bench_kill_soak(args.kills or (20 if args.quick else 24), Path(d))
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
    print_table("kill soak (SIGKILLs, restarts in the same bar, clock jumps mid-sync)",
                ["kills", "same-bar restarts", "s", "exit", "orders", "duplicates", "lost fills",
                 "dropped decisions", "status mismatches", "fake closed bars", "candle revisions"],
                [[kill["soak_kills"], kill["soak_same_bar_restarts"], f"{kill['soak_kill_s']:.0f}",
                  kill["soak_kill_exit"], kill["soak_kill_orders"], kill["soak_kill_duplicates"],
                  kill["soak_kill_lost_fills"], kill["soak_dropped_decisions"],
                  kill["journal_status_mismatches"], kill["fake_closed_bars"],
                  kill["candle_revisions"]]])
    print(f"kill-soak faults met: {kill['soak_kill_faults']}")
    emit_json({**lat, **soak, **kill, "machine": machine()})


if __name__ == "__main__":
    main()
