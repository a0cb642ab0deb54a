"""Pipeline figures: ingest+clean speed of the real CSVs, features on 1M bars, fetch speed.

Usage: python benchmarks/bench_pipeline.py [--quick]

Prints tables, then one line of JSON with keys ``ingest_rows_per_s`` (per file),
``features_1m_bars_s`` and ``fetch_candles_per_s``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED_DATA, best_of, emit_json, machine, print_table  # noqa: E402

from coinrl.pipeline.features import default_feature_spec, feature_engineering  # noqa: E402
from coinrl.pipeline.fetch import fetch_data  # noqa: E402
from coinrl.pipeline.formats import read_ohlcv  # noqa: E402
from coinrl.pipeline.synthetic import gbm  # noqa: E402


def bench_ingest(repeats: int) -> dict[str, float]:
    out: dict[str, float] = {}
    rows = []
    for name in ("btc_usd_1h_bitstamp.csv", "btc_usd_1h_coinbase.csv", "btc_usd_1h_bitfinex.csv"):
        path = SHARED_DATA / name
        secs, df = best_of(lambda p=path: read_ohlcv(p), repeats)
        rps = len(df) / secs
        out[name] = round(rps)
        rows.append([name, f"{len(df):,}", f"{secs * 1000:.1f} ms", f"{rps:,.0f}"])
    print_table(f"ingest + clean (read_ohlcv, best of {repeats})", ["file", "rows", "time", "rows/s"], rows)
    return out


def bench_features(n_bars: int) -> float:
    candles = gbm(n_bars, timeframe="1m", seed=1)
    spec = default_feature_spec()
    secs, feats = best_of(lambda: feature_engineering(candles, spec), 2)
    print_table(
        "feature engineering, default spec",
        ["bars", "features", "time", "target"],
        [[f"{n_bars:,}", len(feats.columns) - 1, f"{secs:.2f} s", "<= 5 s at 1,000,000"]],
    )
    return secs


def bench_fetch(n_bars: int) -> tuple[float, bool]:
    """Fetch speed, and the resume check: a download that dies mid-way, rerun, equals a clean one."""
    from coinrl.live.emulator import EmulatorServer
    from coinrl.pipeline.errors import TemporaryExchangeError

    candles = gbm(n_bars, timeframe="1h", seed=2)
    start = int(candles["ts_ms"].iloc[0])
    # the emulator's default clock sits inside the last bar: it is in progress, not fetched
    with EmulatorServer({"BTC/USDT": candles}) as server, tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        clean = fetch_data("BTC/USDT", "1h", start, Path(d) / "clean.parquet", exchange_url=server.base_url)
        secs = time.perf_counter() - t0
        # interrupted: every kline request from the 3rd page on fails until retries run out
        server.faults.server_error(503, count=None, path_prefix="/api/v3/klines", after=2)
        interrupted = False
        try:
            fetch_data("BTC/USDT", "1h", start, Path(d) / "r.parquet", exchange_url=server.base_url, max_retries=0)
        except TemporaryExchangeError:
            interrupted = True
        server.faults.clear()
        resumed = fetch_data("BTC/USDT", "1h", start, Path(d) / "r.parquet", exchange_url=server.base_url)
        identical = interrupted and resumed.equals(clean)
    cps = len(clean) / secs
    print_table(
        "fetch_data from the emulator (real ccxt over HTTP on 127.0.0.1)",
        ["candles", "time", "candles/s", "interrupted+resumed == clean"],
        [[f"{len(clean):,}", f"{secs:.2f} s", f"{cps:,.0f}", str(identical)]],
    )
    return cps, identical


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"bench_pipeline on {machine()}")
    ingest = bench_ingest(2 if args.quick else 5)
    n_feat = 200_000 if args.quick else 1_000_000
    feat_s = bench_features(n_feat)
    fetch_cps, resume_ok = bench_fetch(5_000 if args.quick else 20_000)
    emit_json(
        {
            "ingest_rows_per_s": ingest,
            "features_1m_bars_s": round(feat_s * (1_000_000 / n_feat), 3),
            "fetch_candles_per_s": round(fetch_cps),
            "fetch_resume_identical": resume_ok,
        }
    )


if __name__ == "__main__":
    main()
