"""Portfolio env figures: PortfolioEnv steps/s and asset-steps/s at A = 1, 4, 16, 64; batched
env-steps/s at N = 256 for A = 4 and 16; a bare numpy rebalancing loop (the practical limit);
A = 1 against TradingEnv on the same data; memory per env; the peers' portfolio envs.

Usage: python benchmarks/bench_portfolio.py [--quick] [--peers-dir DIR]

Data: the seeded synthetic correlated assets (:func:`coinrl.pipeline.synthetic_assets.correlated_assets`,
hourly, default features, per-asset normalisers), window 24, continuous actions drawn in
advance (standard normal per asset, projected by the ActionMap), whole-data episodes. Every
figure is taken in the same run (only same-run ratios mean anything on a shared machine).

The bare numpy loop keeps cash + A positions, charges the fee on traded notional at the open and
marks at the close, with no observation, no margin, no funding: the practical floor of a
Python-level rebalancing loop.

Peers, on the same synthetic data at A = 4 and 16: rlportfolio 0.3.0 ``PortfolioOptimizationEnv``
and FinRL 0.3.7 ``StockPortfolioEnv``, installed with ``pip install --no-deps --target DIR``
and their env modules loaded by path (``--peers-dir DIR``); both fill at the close of the bar
they just observed. A peer that cannot run prints ``skipped: <reason>`` and is absent from
``peer_steps_per_s`` (TensorTrade 1.0.4 needs Python 3.12).

Prints tables, then one line of JSON with keys ``steps_per_s`` (A -> steps/s),
``asset_steps_per_s``, ``batched_asset_steps_per_s`` (A -> at N = 256),
``batched_env_steps_per_s`` (one reused observation buffer, the SB3 adapter's path),
``batched_asset_steps_per_s_copy`` (fresh observation arrays per step), ``peer_steps_per_s`` (peer -> A -> steps/s),
``numpy_limit_steps_per_s`` (A -> steps/s), ``a1_vs_trading_env`` (PortfolioEnv A = 1 steps/s /
TradingEnv steps/s; TradingEnv itself steps A = 1 of the same kernel since the kernels became one,
so this is the cost of the portfolio env's interface: the weights, the portfolio account features
and the per-asset info arrays; TradingEnv against its pre-switch self is ``bench_env.py
--baseline REF``), ``bytes_per_env``, ``obs_copy_share_batched_a16`` (share of the batched
A = 16 step spent on the window: window 24 against window 1), ``obs_window_mb_per_step_batched_a16``
and ``obs_window_write_gb_per_s_batched_a16`` (the extra bytes written per step and the rate
that time implies: memory bandwidth bounds it) and ``machine``.
"""

from __future__ import annotations

import argparse
import gc
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


def _load_by_path(name: str, path: Path) -> Any:
    """A peer's env module loaded from its file (its package ``__init__`` imports its whole
    trading stack)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _long_frame(data: PortfolioData) -> Any:
    """The portfolio as a long (date, tic) frame, the peers' input format."""
    import pandas as pd

    t, a = len(data), data.n_assets
    return pd.DataFrame({
        "date": np.repeat(pd.to_datetime(data.ts_ms, unit="ms", utc=True).tz_localize(None), a),
        "tic": np.tile(np.array(data.symbols), t),
        "close": data.close.reshape(-1), "high": data.high.reshape(-1), "low": data.low.reshape(-1),
        "open": data.open.reshape(-1), "volume": data.volume.reshape(-1),
    })


def _time_peer(env: Any, actions: np.ndarray, min_s: float) -> float:
    import contextlib
    import io

    env.reset()
    steps = 0
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        while True:
            for a in actions:
                out = env.step(a)
                if out[2] or out[3]:
                    env.reset()
            steps += len(actions)
            dt = time.perf_counter() - t0
            if dt >= min_s:
                return steps / dt


def peers(peers_dir: Path | None, datas: dict[int, PortfolioData], sizes: tuple[int, ...],
          min_s: float) -> dict[str, dict[str, float]]:
    """The peers' portfolio envs on the same synthetic data, where ``peers_dir`` holds them
    (``pip install --no-deps --target DIR rlportfolio==0.3.0 finrl==0.3.7``); ``skipped:``
    lines otherwise."""
    import os
    import tempfile

    out: dict[str, dict[str, float]] = {}
    print("skipped: TensorTrade 1.0.4: PyPI offers 1.0.3 at most for this Python (3.11); "
          "1.0.4 needs Python 3.12")
    if peers_dir is None or not peers_dir.is_dir():
        print("skipped: rlportfolio 0.3.0, FinRL 0.3.7: no --peers-dir (pip install --no-deps "
              "--target DIR rlportfolio==0.3.0 finrl==0.3.7)")
        return out
    rng = np.random.default_rng(1)
    path = peers_dir / "rlportfolio" / "environment" / "portfolio_optimization_env.py"
    try:
        mod = _load_by_path("peer_rlportfolio_env", path)
        res = {}
        for a in sizes:
            env = mod.PortfolioOptimizationEnv(
                _long_frame(datas[a]), initial_amount=10_000.0, comission_fee_pct=0.001,
                features=["close", "high", "low"], time_window=WINDOW, print_metrics=False,
                plot_graphs=False, cwd=tempfile.mkdtemp())
            w = rng.random((200, a + 1)).astype(np.float32)
            res[str(a)] = round(_time_peer(env, w / w.sum(axis=1, keepdims=True), min_s))
        out["rlportfolio"] = res
    except Exception as e:  # noqa: BLE001 - a peer that fails is reported, not fatal
        print(f"skipped: rlportfolio 0.3.0: {type(e).__name__}: {e}")
    path = peers_dir / "finrl" / "meta" / "env_portfolio_allocation" / "env_portfolio.py"
    try:
        mod = _load_by_path("peer_finrl_env", path)
        res = {}
        cwd = os.getcwd()
        scratch = tempfile.mkdtemp()
        os.makedirs(os.path.join(scratch, "results"), exist_ok=True)
        os.chdir(scratch)  # it saves plots to results/ at each episode end
        try:
            for a in sizes:
                df = _long_frame(datas[a])
                days = df["date"].factorize()[0]
                df.index = days
                cov = np.eye(a)  # the state's covariance block: its values do not change the timing
                df["cov_list"] = [cov] * len(df)
                df["macd"] = 0.0
                env = mod.StockPortfolioEnv(df, stock_dim=a, hmax=100, initial_amount=10_000,
                                            transaction_cost_pct=0.001, reward_scaling=1e-4,
                                            state_space=a, action_space=a, tech_indicator_list=["macd"])
                res[str(a)] = round(_time_peer(env, rng.normal(size=(200, a)), min_s))
        finally:
            os.chdir(cwd)
        out["finrl_stock_portfolio_env"] = res
    except Exception as e:  # noqa: BLE001
        print(f"skipped: FinRL 0.3.7 StockPortfolioEnv: {type(e).__name__}: {e}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    ap.add_argument("--peers-dir", type=Path, default=None,
                    help="folder where the peers were installed with pip --no-deps --target")
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
    share = obs_mb = obs_gbps = None
    if 16 in datas:
        v1 = PortfolioVectorEnv(N_BATCH, datas[16], window=1, episode_length_bars=None, copy=False)
        fast = time_batched(v1, rng.normal(size=(20, N_BATCH, 16)).astype(np.float32), min_s)
        share = max(0.0, 1.0 - batched[16] / fast)
        # the extra bytes a window-24 step writes over a window-1 step, and the rate that implies
        v24 = PortfolioVectorEnv(N_BATCH, datas[16], window=WINDOW, episode_length_bars=None, copy=False)
        extra = (v24.single_observation_space.shape[0] - v1.single_observation_space.shape[0]) * 4 * N_BATCH
        obs_mb = extra / 1e6
        dt = N_BATCH / batched[16] - N_BATCH / fast  # seconds per step spent on the window
        obs_gbps = extra / dt / 1e9 if dt > 0 else None
    bytes_batched = bytes_of(lambda: PortfolioVectorEnv(N_BATCH, datas[bsizes[-1]], window=WINDOW,
                                                        episode_length_bars=None, copy=False)) // N_BATCH
    peer = peers(args.peers_dir, datas, tuple(a for a in (4, 16) if a in datas), min_s)
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
              f"observation copy takes ~{share:.0%} of the step ({obs_mb:.1f} MB more written per "
              f"step" + ("" if obs_gbps is None else f", ~{obs_gbps:.1f} GB/s") + ")")
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
        "obs_window_mb_per_step_batched_a16": None if obs_mb is None else round(obs_mb, 2),
        "obs_window_write_gb_per_s_batched_a16": None if obs_gbps is None else round(obs_gbps, 2),
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
