"""Env figures: TradingEnv steps/s beside gym-anytrading, gym-trading-env and a bare numpy loop;
batched env-steps/s at N = 1 .. 1024; bytes per env at N = 1024.

Usage: python benchmarks/bench_env.py [--quick] [--baseline REF]

Every figure is taken in the same run on the same data (only same-run ratios mean anything on a
shared machine): the packaged hourly BTC/USD sample with the default features when available,
else the Bitstamp CSV parsed minimally, else a synthetic random walk. Actions are drawn in advance
(uniform over each env's actions); an env is reset when its episode ends (whole-data episodes).

The peers need ``pip install gym-anytrading`` and ``pip install --no-deps gym-trading-env`` plus
``flask pyecharts nest_asyncio`` (gym-trading-env pins an old ccxt that must not replace ours);
a peer that cannot be imported is reported and skipped.

``--baseline REF`` (e.g. the commit before a kernel change) also measures TradingEnv steps/s (and
TradingVectorEnv env-steps/s at N = 256 and 1024) of the envs at git ``REF`` (checked out into
a temporary ``git worktree`` and imported beside this tree's in the same process) on the same
data and actions (discrete and continuous), in interleaved runs timed in process CPU time: the
JSON gains ``baseline``, ``vs_baseline`` and ``batched_vs_baseline`` (this tree / REF).

Also the latency of a fresh process's first step (the compiled kernel is loaded from numba's
cache, or compiled when the cache is empty: ``cold``, full run only), after ``import coinrl.envs``.

Prints tables, then one line of JSON with keys ``steps_per_s``, ``peer_steps_per_s``,
``numpy_limit_steps_per_s``, ``speedup_vs_best_peer``, ``fraction_of_limit``,
``batched_env_steps_per_s`` (N -> env-steps/s), ``bytes_per_env_n1024``,
``first_step_latency_s`` and the extras ``batched_env_steps_per_s_nocopy``,
``python_floats_limit_steps_per_s``, ``data``.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED_DATA, emit_json, machine, print_table  # noqa: E402

from coinrl.envs import TradingEnv  # noqa: E402
from coinrl.envs.vector import TradingVectorEnv  # noqa: E402
from coinrl.pipeline.dataset import MarketData  # noqa: E402

WINDOW = 24


# ---------------------------------------------------------------------- data
def load_market() -> tuple[MarketData, str]:
    """The hourly BTC data for every contender, and where it came from."""
    try:
        from coinrl.envs.data import default_market_data

        return default_market_data("full"), "packaged sample (default_market_data('full'))"
    except Exception as e:  # noqa: BLE001 - any failure falls back, and is printed
        print(f"default_market_data unavailable ({type(e).__name__}: {e}); falling back")
    path = SHARED_DATA / "btc_usd_1h_bitstamp.csv"
    if path.is_file():
        with path.open() as f:
            rows = [r for r in csv.reader(f) if r and r[0].isdigit()]
        rows.reverse()  # the export is newest first
        a = np.array([[float(x) for x in (r[0], r[3], r[4], r[5], r[6], r[7])] for r in rows])
        ts = (a[:, 0] * 1000).astype(np.int64)
        keep = np.r_[True, np.diff(ts) > 0]
        a, ts = a[keep], ts[keep]
        close = a[:, 4]
        logret = np.r_[0.0, np.diff(np.log(close))]
        feats = np.stack([logret, (a[:, 2] - a[:, 3]) / close], axis=1).astype(np.float32)
        md = MarketData(ts_ms=ts, open=a[:, 1], high=a[:, 2], low=a[:, 3], close=close, volume=a[:, 5],
                        features=feats, feature_names=("ret_log_1", "range"))
        return md, f"{path.name} (parsed minimally, 2 features)"
    rng = np.random.default_rng(0)
    n = 17_500
    close = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.006, n)))
    open_ = np.r_[40_000.0, close[:-1]]
    md = MarketData(ts_ms=np.arange(n, dtype=np.int64) * 3_600_000, open=open_,
                    high=np.maximum(open_, close) * 1.002, low=np.minimum(open_, close) * 0.998,
                    close=close, volume=rng.lognormal(3, 0.5, n),
                    features=rng.normal(size=(n, 16)).astype(np.float32),
                    feature_names=tuple(f"f{i}" for i in range(16)))
    return md, "synthetic random walk (16 features)"


def candles_frame(md: MarketData, capitalised: bool) -> Any:
    import pandas as pd

    cols = {"open": md.open, "high": md.high, "low": md.low, "close": md.close, "volume": md.volume}
    if capitalised:
        cols = {k.capitalize(): v for k, v in cols.items()}
    # the peers want a DatetimeIndex; tz-naive (UTC) because gym-trading-env reads
    # ``index.values``, which pandas 3 deprecates for tz-aware indexes (an error under its filters)
    return pd.DataFrame(cols, index=pd.DatetimeIndex(md.ts_ms.astype("datetime64[ms]")))


# ---------------------------------------------------------------------- timing
def timed_steps(step: Callable[[Any], Any], reset: Callable[[], Any], actions: list[Any], repeats: int) -> float:
    """Best steps/s over ``repeats`` runs of ``len(actions)`` steps (resets excluded from nothing:
    an episode end inside a run is reset and that time counts)."""
    best = 0.0
    for _ in range(repeats):
        reset()
        gc.collect()
        t0 = time.perf_counter()
        for a in actions:
            if step(a):
                reset()
        best = max(best, len(actions) / (time.perf_counter() - t0))
    return best


def bench_coinrl(md: MarketData, n: int, repeats: int) -> float:
    env = TradingEnv(md, window=WINDOW, episode_length_bars=None)
    actions = np.random.default_rng(1).integers(0, 3, n).tolist()
    step = env.step

    def one(a: int) -> bool:
        _, _, term, trunc, _ = step(a)
        return term or trunc

    return timed_steps(one, lambda: env.reset(seed=0), actions, repeats)


def bench_anytrading(md: MarketData, n: int, repeats: int) -> float:
    from gym_anytrading.envs import StocksEnv

    df = candles_frame(md, capitalised=True)
    env = StocksEnv(df=df, window_size=WINDOW, frame_bound=(WINDOW, len(df)))
    actions = np.random.default_rng(1).integers(0, 2, n).tolist()
    step = env.step

    def one(a: int) -> bool:
        _, _, term, trunc, _ = step(a)
        return term or trunc

    return timed_steps(one, lambda: env.reset(seed=0), actions, repeats)


def bench_trading_env(md: MarketData, n: int, repeats: int) -> float:
    from gym_trading_env.environments import TradingEnv as GTE

    df = candles_frame(md, capitalised=False)
    for j, name in enumerate(md.feature_names):  # the same features, as its "feature_" columns
        df[f"feature_{name}"] = md.features[:, j]
    env = GTE(df=df, positions=[-1, 0, 1], windows=WINDOW, verbose=0)
    actions = np.random.default_rng(1).integers(0, 3, n).tolist()
    step = env.step

    def one(a: int) -> bool:
        _, _, term, trunc, _ = step(a)
        return term or trunc

    return timed_steps(one, lambda: env.reset(seed=0), actions, repeats)


def bare_numpy_loop(close: np.ndarray, ohlcv: np.ndarray, actions: list[int], fee: float = 0.001) -> float:
    """The minimum bookkeeping: position in {-1, 0, 1}, cash, fee on change, equity, log-return
    reward, a 24 x 5 observation view; prices read from numpy arrays."""
    cash, units, pos, eq_prev, total = 10_000.0, 0.0, 0, 10_000.0, 0.0
    t = WINDOW - 1
    last = len(close) - 1
    for a in actions:
        target = a - 1
        p = close[t]
        if target != pos:
            eq = cash + units * p
            cash = eq - fee * abs(target - pos) * eq
            units = target * cash / p
            cash -= units * p
            pos = target
        t += 1
        eq = cash + units * close[t]
        total += math.log(eq / eq_prev)
        eq_prev = eq
        _obs = ohlcv[t - WINDOW + 1 : t + 1]
        if t == last:
            t, cash, units, pos, eq_prev = WINDOW - 1, 10_000.0, 0.0, 0, 10_000.0
    return total


def bench_bare(md: MarketData, n: int, repeats: int, python_floats: bool) -> float:
    ohlcv = np.stack([md.open, md.high, md.low, md.close, md.volume], axis=1)
    close: Any = md.close.tolist() if python_floats else md.close
    actions = np.random.default_rng(1).integers(0, 3, n).tolist()
    best = 0.0
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        bare_numpy_loop(close, ohlcv, actions)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def bench_batched(md: MarketData, n_envs: int, steps: int, repeats: int, copy: bool) -> float:
    venv = TradingVectorEnv(n_envs, md, window=WINDOW, episode_length_bars=720, copy=copy)
    actions = np.random.default_rng(1).integers(0, 3, (steps, n_envs))
    best = 0.0
    for _ in range(repeats):
        venv.reset(seed=0)
        gc.collect()
        t0 = time.perf_counter()
        for a in actions:
            venv.step(a)
        best = max(best, steps * n_envs / (time.perf_counter() - t0))
    return best


def bytes_per_env(md: MarketData, n_envs: int, copy: bool = True) -> tuple[float, int]:
    """Memory the batched env allocates per env (tracemalloc), and the shared feature bytes."""
    gc.collect()
    tracemalloc.start()
    venv = TradingVectorEnv(n_envs, md, window=WINDOW, episode_length_bars=720, copy=copy)
    venv.reset(seed=0)
    venv.step(np.zeros(n_envs, dtype=np.int64))
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return current / n_envs, int(md.features.nbytes)


_FIRST_STEP = """
import json, time
t0 = time.perf_counter()
import coinrl.envs
t1 = time.perf_counter()
import numpy as np
from coinrl.pipeline.dataset import MarketData
n = 300
close = 100.0 * np.exp(np.cumsum(np.random.default_rng(0).normal(0.0, 0.01, n)))
md = MarketData(ts_ms=np.arange(n, dtype=np.int64) * 3_600_000, open=close, high=close * 1.01,
                low=close * 0.99, close=close, volume=np.ones(n),
                features=np.zeros((n, 4), dtype=np.float32), feature_names=("a", "b", "c", "d"))
t2 = time.perf_counter()
env = coinrl.envs.TradingEnv(md, window=8, episode_length_bars=50)
env.reset(seed=0)
env.step(1)
t3 = time.perf_counter()
venv = coinrl.envs.TradingVectorEnv(4, md, window=8, episode_length_bars=50)
venv.reset(seed=0)
venv.step(np.ones(4, dtype=np.int64))
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_step": t3 - t2, "first_vector_step": t4 - t3}))
"""


def first_step_latency(cold: bool) -> dict[str, float]:
    """Seconds in a fresh interpreter: ``import coinrl.envs``; building a TradingEnv, its reset
    and first step (numba imported, the kernel loaded from its cache, or compiled into an empty
    cache when ``cold``); then the same for a TradingVectorEnv."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        if cold:
            env["NUMBA_CACHE_DIR"] = cache
        out = subprocess.run([sys.executable, "-c", _FIRST_STEP], env=env, check=True,
                             capture_output=True, text=True).stdout
    return {k: round(v, 3) for k, v in json.loads(out.splitlines()[-1]).items()}


def bench_baseline(ref: str, md: MarketData, n: int, rounds: int) -> dict[str, Any]:
    """TradingEnv steps/s of git ``ref`` beside this tree's, in this process, interleaved.

    ``ref`` is checked out into a temporary ``git worktree`` and its ``envs`` package imported
    as ``coinrl_baseline.envs`` (its modules import each other relatively and the pipeline as
    ``coinrl.pipeline``), so both TradingEnvs step the same data and actions in alternating runs
    of ``n`` steps (discrete and continuous), timed in process CPU time (``time.process_time``:
    on a shared machine the time spent waiting for a core is not the env's); each keeps its best.
    """
    import importlib

    repo = Path(__file__).resolve().parent.parent
    rng = np.random.default_rng(1)
    acts: dict[str, list[Any]] = {
        "discrete": rng.integers(0, 3, n).tolist(),
        "continuous": list(rng.uniform(-1.5, 1.5, (n, 1)).astype(np.float32)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), ref],
                       check=True, capture_output=True)
        try:
            pkg = Path(tmp) / "pkgs" / "coinrl_baseline"
            pkg.mkdir(parents=True)
            (pkg / "__init__.py").write_text("")
            (pkg / "envs").symlink_to(tree / "envs")
            sys.path.insert(0, str(pkg.parent))
            old_cls = importlib.import_module("coinrl_baseline.envs.trading_env").TradingEnv
            envs = {(who, mode): cls(md, window=WINDOW, episode_length_bars=None, action=mode)
                    for who, cls in (("baseline", old_cls), ("this_tree", TradingEnv)) for mode in acts}
            best: dict[str, dict[str, float]] = {"baseline": {}, "this_tree": {}}
            for _ in range(rounds):
                for (who, mode), env in envs.items():
                    env.reset(seed=0)
                    step = env.step
                    gc.collect()
                    t0 = time.process_time()
                    for a in acts[mode]:
                        step(a)
                    best[who][mode] = max(best[who].get(mode, 0.0), n / (time.process_time() - t0))
            old_vec = importlib.import_module("coinrl_baseline.envs.vector").TradingVectorEnv
            batched = batched_baseline(old_vec, md, rounds)
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)
    return {"ref": ref, **best, "batched": batched}


BASELINE_NS = (256, 1024)
"""The batched env sizes timed against the baseline (``--baseline``)."""


def batched_baseline(old_vec: Any, md: MarketData, rounds: int) -> dict[str, dict[str, float]]:
    """TradingVectorEnv env-steps/s of the baseline class ``old_vec`` and of this tree, for each
    N of :data:`BASELINE_NS`, in alternating runs (~20k env-steps each, discrete actions, copy=True),
    timed in process CPU time; each keeps its best. Keys: ``baseline`` / ``this_tree`` -> N."""
    envs: dict[tuple[str, int], Any] = {}
    acts: dict[int, Any] = {}
    for n_envs in BASELINE_NS:
        acts[n_envs] = np.random.default_rng(1).integers(0, 3, (max(20_000 // n_envs, 10), n_envs))
        for who, cls in (("baseline", old_vec), ("this_tree", TradingVectorEnv)):
            envs[(who, n_envs)] = cls(n_envs, md, window=WINDOW, episode_length_bars=720)
    best: dict[str, dict[str, float]] = {"baseline": {}, "this_tree": {}}
    for _ in range(rounds):
        for (who, n_envs), venv in envs.items():
            venv.reset(seed=0)
            step = venv.step
            a = acts[n_envs]
            gc.collect()
            t0 = time.process_time()
            for row in a:
                step(row)
            key = str(n_envs)
            best[who][key] = max(best[who].get(key, 0.0), a.size / (time.process_time() - t0))
    return best


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test, noisier figures)")
    ap.add_argument("--baseline", metavar="REF", help="also time TradingEnv at git REF (same run)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    n, repeats, vec_steps, rounds = (5_000, 2, 30, 1) if args.quick else (30_000, 3, 200, 3)

    first_step_latency(cold=False)  # fills numba's cache if this is the first run after a change
    latency = {"warm_cache": first_step_latency(cold=False)}
    if not args.quick:
        latency["cold_cache"] = first_step_latency(cold=True)

    md, source = load_market()
    print(f"machine: {machine()}")
    print(f"data: {source}: {len(md):,} bars x {md.n_features} features, window {WINDOW}")

    # rounds interleave the contenders, so a burst of load from a neighbour on this shared machine
    # does not fall on one of them only; each keeps its best round
    ours, limit, limit_py = 0.0, 0.0, 0.0
    peers: dict[str, float] = {}
    notes: dict[str, str] = {}
    contenders: list[tuple[str, Callable[[MarketData, int, int], float], int]] = [
        ("gym-anytrading", bench_anytrading, n),
        ("gym-trading-env", bench_trading_env, max(n // 5, 1_000)),
    ]
    for rnd in range(rounds):
        ours = max(ours, bench_coinrl(md, n, repeats))
        for name, fn, steps in contenders:
            if name in notes or (rnd > 0 and name == "gym-trading-env"):  # slow: one round
                continue
            try:
                peers[name] = max(peers.get(name, 0.0), fn(md, steps, repeats))
            except Exception as e:  # noqa: BLE001 - a missing or broken peer is reported, not fatal
                notes[name] = f"skipped: {type(e).__name__}: {e}"
                print(f"{name}: {notes[name]}")
        limit = max(limit, bench_bare(md, n, repeats, python_floats=False))
        limit_py = max(limit_py, bench_bare(md, n, repeats, python_floats=True))

    best_peer = max(peers.values()) if peers else float("nan")
    rows = [["coinrl TradingEnv (discrete {-1,0,1}, Box obs, fees+slippage+liquidation)", f"{ours:,.0f}", "1.00"]]
    for name, v in peers.items():
        rows.append([name, f"{v:,.0f}", f"{v / ours:.2f}"])
    rows.append(["bare numpy loop (practical limit)", f"{limit:,.0f}", f"{limit / ours:.2f}"])
    rows.append(["bare loop on Python floats (for reference)", f"{limit_py:,.0f}", f"{limit_py / ours:.2f}"])
    print_table(f"single env, steps/s (best of {rounds} x {repeats} runs of {n:,} steps)", ["env", "steps/s", "x coinrl"], rows)
    print(f"speedup vs best peer: {ours / best_peer:.2f}x   fraction of bare numpy loop: {ours / limit:.2f}")

    batched: dict[str, int] = {}
    batched_nocopy: dict[str, int] = {}
    brows = []
    for n_envs in (1, 16, 64, 256, 1024):
        steps = max(vec_steps * (1 if n_envs >= 64 else 4), 20)
        batched[str(n_envs)] = round(bench_batched(md, n_envs, steps, repeats, copy=True))
        batched_nocopy[str(n_envs)] = round(bench_batched(md, n_envs, steps, repeats, copy=False))
        brows.append([str(n_envs), f"{batched[str(n_envs)]:,}", f"{batched_nocopy[str(n_envs)]:,}"])
    print_table("batched env (TradingVectorEnv), env-steps/s", ["N", "copy=True (default)", "copy=False"], brows)
    per_env, shared = bytes_per_env(md, 1024)
    per_env_nocopy, _ = bytes_per_env(md, 1024, copy=False)
    print(f"bytes per env at N=1024: {per_env:,.0f} (copy=False: {per_env_nocopy:,.0f}; the shared "
          f"float32 feature matrix, {shared:,} bytes, is held once and not counted)")

    base: dict[str, Any] | None = None
    if args.baseline:
        b_rounds = 10 if args.quick else 40
        base = bench_baseline(args.baseline, md, 4_000, b_rounds)
        print_table(f"TradingEnv steps/s: this tree vs {args.baseline} (one process, interleaved, "
                    f"CPU time, best of {b_rounds} runs of 4,000 steps each)",
                    ["action", args.baseline, "this tree", "ratio"],
                    [[m, f"{base['baseline'][m]:,.0f}", f"{base['this_tree'][m]:,.0f}",
                      f"{base['this_tree'][m] / base['baseline'][m]:.3f}"] for m in ("discrete", "continuous")])
        bb = base["batched"]
        print_table(f"TradingVectorEnv env-steps/s: this tree vs {args.baseline} (one process, interleaved, "
                    f"CPU time, best of {b_rounds} runs of ~20,000 env-steps each)",
                    ["N", args.baseline, "this tree", "ratio"],
                    [[k, f"{bb['baseline'][k]:,.0f}", f"{bb['this_tree'][k]:,.0f}",
                      f"{bb['this_tree'][k] / bb['baseline'][k]:.3f}"] for k in bb["baseline"]])

    for kind, v in latency.items():
        print(f"first step, {kind.replace('_', ' ')}: import coinrl.envs {v['import']:.2f} s, then TradingEnv "
              f"built + reset + step {v['first_step']:.2f} s, TradingVectorEnv {v['first_vector_step']:.2f} s")

    emit_json({
        "steps_per_s": round(ours),
        "peer_steps_per_s": {k: round(v) for k, v in peers.items()},
        "peer_notes": notes,
        "numpy_limit_steps_per_s": round(limit),
        "python_floats_limit_steps_per_s": round(limit_py),
        "speedup_vs_best_peer": round(ours / best_peer, 3) if peers else None,
        "fraction_of_limit": round(ours / limit, 3),
        "batched_env_steps_per_s": batched,
        "batched_env_steps_per_s_nocopy": batched_nocopy,
        "bytes_per_env_n1024": round(per_env),
        "bytes_per_env_n1024_nocopy": round(per_env_nocopy),
        "first_step_latency_s": latency,
        "data": source,
        "quick": args.quick,
        **({} if base is None else {
            "baseline": {"ref": base["ref"], "steps_per_s": {m: round(v) for m, v in base["baseline"].items()},
                         "this_tree_steps_per_s": {m: round(v) for m, v in base["this_tree"].items()}},
            "vs_baseline": {m: round(base["this_tree"][m] / base["baseline"][m], 3) for m in ("discrete", "continuous")},
            "batched_vs_baseline": {k: round(base["batched"]["this_tree"][k] / v, 3)
                                    for k, v in base["batched"]["baseline"].items()},
        }),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
