"""Portfolio env figures: PortfolioEnv steps/s and asset-steps/s at A = 1, 4, 16, 64; batched
env-steps/s at N = 256 for A = 4 and 16; a bare numpy rebalancing loop (the practical limit);
A = 1 against TradingEnv on the same data; memory per env; the peers' portfolio envs.

Usage: python benchmarks/bench_portfolio.py [--quick]

Data: the seeded synthetic correlated assets (:func:`coinrl.pipeline.synthetic_assets.correlated_assets`,
hourly, default features, per-asset normalisers), window 24, continuous actions drawn in
advance (standard normal per asset, projected by the ActionMap), whole-data episodes. Every
figure is taken in the same run (only same-run ratios mean anything on a shared machine).

The bare numpy loop keeps cash + A positions, charges the fee on traded notional at the open and
marks at the close, with no observation, no margin, no funding: the practical floor of a
Python-level rebalancing loop.

Peers (rlportfolio 0.3.0, FinRL 0.3.7, TensorTrade 1.0.4) are timed when importable; otherwise a
line ``skipped: <reason>`` is printed and their entry is absent from ``peer_steps_per_s``.

Prints tables, then one line of JSON with keys ``steps_per_s`` (A -> steps/s),
``asset_steps_per_s``, ``batched_asset_steps_per_s`` (A -> at N = 256),
``batched_env_steps_per_s`` (one reused observation buffer, the SB3 adapter's path),
``batched_asset_steps_per_s_copy`` (fresh observation arrays per step), ``peer_steps_per_s`` (peer -> A -> steps/s),
``numpy_limit_steps_per_s`` (A -> steps/s), ``a1_vs_trading_env`` (PortfolioEnv A = 1 steps/s /
TradingEnv steps/s), ``bytes_per_env``, ``obs_copy_share_batched_a16`` and ``machine``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit_json, machine, print_table  # noqa: E402

from coinrl.envs import PortfolioEnv, PortfolioVectorEnv, TradingEnv  # noqa: E402
from coinrl.pipeline.dataset import MarketData, PortfolioData  # noqa: E402
from coinrl.pipeline.portfolio import prepare_portfolio  # noqa: E402
from coinrl.pipeline.synthetic_assets import correlated_assets  # noqa: E402

WINDOW = 24
N_BATCH = 256
PEERS = (("rlportfolio", "rlportfolio 0.3.0 PortfolioOptimizationEnv"),
         ("finrl", "FinRL 0.3.7 StockPortfolioEnv"), ("tensortrade", "TensorTrade 1.0.4"))


def portfolio(n_assets: int, n_bars: int) -> PortfolioData:
    """The synthetic portfolio of ``n_assets`` assets, all rows (normalised on train)."""
    return prepare_portfolio(correlated_assets(n_assets, n_bars, seed=0)).full


def time_single(env: Any, actions: np.ndarray, min_s: float) -> float:
    """Steps/s of one env over the pre-drawn actions (reset at episode end), >= min_s seconds."""
    env.reset(seed=0)
    steps = 0
    t0 = time.perf_counter()
    while True:
        for a in actions:
            _, _, te, tr, _ = env.step(a)
            if te or tr:
                env.reset()
        steps += len(actions)
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return steps / dt


def time_batched(venv: PortfolioVectorEnv, actions: np.ndarray, min_s: float) -> float:
    """Env-steps/s of the vector env."""
    venv.reset(seed=0)
    steps = 0
    t0 = time.perf_counter()
    while True:
        for a in actions:
            venv.step(a)
        steps += len(actions) * venv.num_envs
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return steps / dt


def numpy_loop(data: PortfolioData, actions: np.ndarray, min_s: float, fee: float = 0.001) -> float:
    """Steps/s of the bare numpy rebalancing loop (cash + A positions, fee, mark to close)."""
    o, c = data.open, data.close
    n = len(data)
    steps = 0
    t0 = time.perf_counter()
    while True:
        cash, pos, t = 10_000.0, np.zeros(data.n_assets), 1
        for a in actions:
            w = a / max(1.0, float(np.abs(a).sum()))
            px = o[t]
            eq = cash + float(pos @ px)
            tgt = w * eq / px
            dq = tgt - pos
            cash -= float(dq @ px) + fee * float(np.abs(dq) @ px)
            pos = tgt
            _ = cash + float(pos @ c[t])
            t = t + 1 if t + 1 < n else 1
        steps += len(actions)
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return steps / dt


def bytes_of(make: Any) -> int:
    """Bytes allocated (and kept) by ``make()``, by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    obj = make()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del obj
    return int(used)


def peers() -> dict[str, dict[str, float]]:
    """The peers' portfolio envs where importable; a ``skipped:`` line otherwise."""
    out: dict[str, dict[str, float]] = {}
    for mod, label in PEERS:
        try:
            importlib.import_module(mod)
        except Exception as e:  # noqa: BLE001 - any import failure means the peer is absent
            print(f"skipped: {label}: not importable here ({type(e).__name__}: {e}); install it "
                  "into a separate venv (pip install --no-deps) to time it")
            continue
        print(f"skipped: {label}: importable, but its driver is not written yet in this benchmark")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    args = ap.parse_args(argv)
    logging.disable(logging.INFO)
    min_s = 0.3 if args.quick else 2.0
    n_bars = 800 if args.quick else 3_000
    sizes = (1, 4, 16) if args.quick else (1, 4, 16, 64)
    rng = np.random.default_rng(0)
    steps, asset_steps, limit, mem = {}, {}, {}, {}
    datas = {a: portfolio(a, n_bars) for a in sizes}
    for a in sizes:
        data = datas[a]
        acts = rng.normal(size=(500, a)).astype(np.float32)
        env = PortfolioEnv(data, window=WINDOW, episode_length_bars=None)
        steps[a] = time_single(env, acts, min_s)
        asset_steps[a] = steps[a] * a
        limit[a] = numpy_loop(data, acts.astype(np.float64), min_s)
        mem[a] = bytes_of(lambda d=data: PortfolioEnv(d, window=WINDOW, episode_length_bars=None))
    # A = 1 against TradingEnv on the same bars and features
    d1 = datas[1]
    md = MarketData(ts_ms=d1.ts_ms, open=d1.open[:, 0], high=d1.high[:, 0], low=d1.low[:, 0],
                    close=d1.close[:, 0], volume=d1.volume[:, 0],
                    features=np.ascontiguousarray(d1.features[:, 0]), feature_names=d1.feature_names,
                    funding_rate=d1.funding_rate[:, 0], symbol=d1.symbols[0], timeframe=d1.timeframe)
    acts1 = rng.normal(size=(500, 1)).astype(np.float32)
    te_env = TradingEnv(md, window=WINDOW, episode_length_bars=None, action="continuous")
    pf_env = PortfolioEnv(d1, window=WINDOW, episode_length_bars=None)
    te_sps = pf_sps = 0.0
    for _ in range(3):  # interleaved rounds, best of each: a shared machine's load moves
        te_sps = max(te_sps, time_single(te_env, acts1, min_s))
        pf_sps = max(pf_sps, time_single(pf_env, acts1, min_s))
    # batched N = 256: fresh observation arrays per step (copy=True, Gymnasium's contract) and
    # one reused buffer (copy=False, what the SB3 adapter steps)
    batched, batched_asset, batched_copy = {}, {}, {}
    bsizes = tuple(a for a in (4, 16) if a in datas)
    for a in bsizes:
        bacts = rng.normal(size=(20, N_BATCH, a)).astype(np.float32)
        venv = PortfolioVectorEnv(N_BATCH, datas[a], window=WINDOW, episode_length_bars=None, copy=False)
        batched[a] = time_batched(venv, bacts, min_s)
        batched_asset[a] = batched[a] * a
        vcopy = PortfolioVectorEnv(N_BATCH, datas[a], window=WINDOW, episode_length_bars=None)
        batched_copy[a] = time_batched(vcopy, bacts, min_s) * a
    # where the batched time goes: the same run with a one-row window (no window copy)
    share = None
    if 16 in datas:
        v1 = PortfolioVectorEnv(N_BATCH, datas[16], window=1, episode_length_bars=None, copy=False)
        fast = time_batched(v1, rng.normal(size=(20, N_BATCH, 16)).astype(np.float32), min_s)
        share = max(0.0, 1.0 - batched[16] / fast)
    bytes_batched = bytes_of(lambda: PortfolioVectorEnv(N_BATCH, datas[bsizes[-1]], window=WINDOW,
                                                        episode_length_bars=None, copy=False)) // N_BATCH
    peer = peers()
    rows = [[a, f"{steps[a]:,.0f}", f"{asset_steps[a]:,.0f}", f"{limit[a]:,.0f}",
             f"{steps[a] / limit[a]:.2f}", f"{mem[a] / 1e6:.2f}"] for a in sizes]
    print(f"\nmachine: {machine()}; window {WINDOW}, {n_bars} hourly bars, default features")
    print_table("PortfolioEnv (single env)", ["A", "steps/s", "asset-steps/s", "numpy loop steps/s",
                                              "env/loop", "MB per env (incl. its data)"], rows)
    print_table(f"PortfolioVectorEnv, N = {N_BATCH}",
                ["A", "env-steps/s", "asset-steps/s", "asset-steps/s, fresh obs arrays (copy=True)"],
                [[a, f"{batched[a]:,.0f}", f"{batched_asset[a]:,.0f}", f"{batched_copy[a]:,.0f}"]
                 for a in bsizes])
    print_table("A = 1 against TradingEnv (same data, same run)", ["env", "steps/s"],
                [["TradingEnv", f"{te_sps:,.0f}"], ["PortfolioEnv A=1", f"{pf_sps:,.0f}"]])
    if share is not None:
        print(f"\nbatched A=16: window 24 runs at {1 - share:.0%} of the speed of window 1: the "
              f"observation copy takes ~{share:.0%} of the step")
    print(f"batched bytes per env (N={N_BATCH}, A={bsizes[-1]}, data shared): {bytes_batched:,}")
    emit_json({
        "steps_per_s": {str(a): round(v) for a, v in steps.items()},
        "asset_steps_per_s": {str(a): round(v) for a, v in asset_steps.items()},
        "batched_env_steps_per_s": {str(a): round(v) for a, v in batched.items()},
        "batched_asset_steps_per_s": {str(a): round(v) for a, v in batched_asset.items()},
        "batched_asset_steps_per_s_copy": {str(a): round(v) for a, v in batched_copy.items()},
        "peer_steps_per_s": peer,
        "numpy_limit_steps_per_s": {str(a): round(v) for a, v in limit.items()},
        "a1_vs_trading_env": round(pf_sps / te_sps, 3),
        "trading_env_steps_per_s": round(te_sps),
        "bytes_per_env": {str(a): v for a, v in mem.items()},
        "bytes_per_env_batched": bytes_batched,
        "obs_copy_share_batched_a16": None if share is None else round(share, 3),
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
