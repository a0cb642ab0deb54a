"""Backtest speed: a trained MLP policy over 100,000+ bars, and a signal backtest beside vectorbt.

Usage: python benchmarks/bench_backtest.py [--quick] [--threads N]

Measured in one process:

* **Policy rollout** (``rollout_bars_per_s``): a PPO MLP policy (64x64 tanh, trained briefly on
  a planted-signal market, default costs) backtested over ``--bars`` (default 100,000) bars:

  - ``sb3_predict``: the per-step SB3 ``model.predict`` loop (:func:`rollout_policy` with the
    SB3 model), the overhead to beat, timed on the first 20,000 bars;
  - ``single``: :func:`simulate_trading_strategy` on one account: the network called
    directly (no_grad, same operations as predict, same actions), bar by bar;
  - ``walk-forward batch``: :func:`simulate_many` over ``folds x seeds`` accounts, the bars
    cut into ``folds`` consecutive test blocks, each (fold, seed) with its own network
    (copies of the trained one with perturbed weights stand in for the fold x seed models):
    one batched env and one stacked network call per step for all accounts. Its aggregate
    bars/s (decisions over all accounts / wall time) is ``rollout_bars_per_s``.

* **Signal backtest** (``signal_backtest_s``): a 50/200-bar moving-average crossover (long /
  flat) over 1,000,000 hourly GBM bars: :func:`simulate_trading_strategy` with the signal
  (books kernel in one compiled loop, then fills and all metrics), beside
  ``vectorbt.Portfolio.from_signals`` (+ ``final_value``) on the same entries and exits with
  the same convention: decided at bar t's close, filled at bar t+1's open, 0.1 % taker fee
  on the fill notional, no slippage, all equity in, flat start with 10,000 cash. Final
  equities are compared (``equity_rel_diff_vs_vectorbt``). Both are timed after a warm-up
  (numba compilation excluded), best of 5.

Targets: rollout >= 20,000 bars/s; signal backtest within 2x of vectorbt's time and the same
final equity to 1e-9 relative. Prints a table, then ONE line of JSON with
``rollout_bars_per_s``, ``signal_backtest_s``, ``vectorbt_s``, ``ratio_vs_vectorbt``,
``equity_rel_diff_vs_vectorbt`` (and the other rows' figures).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import best_of, emit_json, machine, print_table  # noqa: E402

from coinrl.agents.backtest import simulate_many, simulate_trading_strategy  # noqa: E402
from coinrl.agents.baselines import ma_crossover_signal  # noqa: E402
from coinrl.agents.config import TrainConfig  # noqa: E402
from coinrl.agents.rollout import rollout_policy  # noqa: E402
from coinrl.agents.train import train_model  # noqa: E402
from coinrl.envs.config import EnvConfig  # noqa: E402
from coinrl.pipeline.dataset import MarketData  # noqa: E402
from coinrl.pipeline.splits import prepare_data_for_model  # noqa: E402
from coinrl.pipeline.synthetic import planted_pattern  # noqa: E402

SPEC = {"features": [{"kind": "column", "name": "signal"}, {"kind": "returns", "horizons": [1, 4, 24]}]}
HOUR_MS = 3_600_000


def _perturbed(agent: Any, seed: int) -> Any:
    import torch

    other = copy.deepcopy(agent)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.model.policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return other


def bench_rollout(bars: int, folds: int, seeds: int, repeats: int, single_bars: int) -> dict[str, Any]:
    prepared = prepare_data_for_model(
        planted_pattern(bars + 200, seed=3), spec=SPEC, split={"train": 0.2, "validation": 0.0, "test": 0.8}
    )
    env = EnvConfig()  # default costs, window 24, discrete short/flat/long
    cfg = TrainConfig(total_timesteps=8192, n_envs=16, seed=0, eval_every_steps=0,
                      checkpoint_every_steps=0, early_stopping_patience=None,
                      ppo={"n_steps": 128, "batch_size": 512, "n_epochs": 2})
    t0 = time.perf_counter()
    agent = train_model(prepared, cfg, env)
    train_s = time.perf_counter() - t0
    full = prepared.full.slice(len(prepared.full) - bars - env.window, len(prepared.full))
    n_dec = len(full) - env.window
    sub = full.slice(0, 20_000 + env.window)
    t_sb3, _ = best_of(lambda: rollout_policy(agent.model, sub, env), 1)
    sb3_bps = 20_000 / t_sb3
    one = full if single_bars >= n_dec else full.slice(0, single_bars + env.window)
    t_single, single = best_of(lambda: simulate_trading_strategy(agent, one, baselines=False), 1)
    single_bps = (len(one) - env.window) / t_single
    # walk-forward: folds consecutive test blocks x seeds, each run with its own network
    block = len(full) // folds
    datas = [full.slice(i * block, (i + 1) * block) for i in range(folds)]
    models = [_perturbed(agent, 100 + k) for k in range(folds * seeds)]
    pairs_data = [datas[k // seeds] for k in range(folds * seeds)]
    decisions = sum(len(d) - env.window for d in pairs_data)
    simulate_many(models[:2], pairs_data[:2], baselines=False)  # warm-up
    t_batch, batch = best_of(lambda: simulate_many(models, pairs_data, baselines=False), repeats)
    batch_bps = decisions / t_batch
    return {
        "train_s": train_s,
        "bars": n_dec,
        "sb3_predict_bars_per_s": sb3_bps,
        "single_bars_per_s": single_bps,
        "single_s": t_single,
        "single_decisions": len(one) - env.window,
        "batch_accounts": folds * seeds,
        "batch_decisions": decisions,
        "batch_s": t_batch,
        "rollout_bars_per_s": batch_bps,
        "single_fills": len(single.fills),
        "batch_fills": int(sum(len(r.fills) for r in batch)),
    }


def gbm_market(n: int, seed: int = 0) -> MarketData:
    rng = np.random.default_rng(seed)
    close = 20_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.006, n)))
    open_ = np.r_[20_000.0, close[:-1]] * np.exp(rng.normal(0.0, 0.001, n))
    return MarketData(
        ts_ms=1_577_836_800_000 + np.arange(n, dtype=np.int64) * HOUR_MS,
        open=open_, high=np.maximum(open_, close) * 1.002, low=np.minimum(open_, close) * 0.998,
        close=close, volume=np.full(n, 100.0), features=np.zeros((n, 1), dtype=np.float32),
        feature_names=("none",), symbol="GBM/USD", timeframe="1h",
    )


def bench_signal(n: int, repeats: int) -> dict[str, Any]:
    import pandas as pd

    md = gbm_market(n)
    t0 = time.perf_counter()
    signal = ma_crossover_signal(md.close, 50, 200)
    signal_s = time.perf_counter() - t0
    fee = 0.001
    cfg = EnvConfig(window=1, action="continuous", allow_short=False, taker_fee_rate=fee,
                    slippage_bps=0.0, episode_length_bars=None)
    simulate_trading_strategy(signal[:1000], md.slice(0, 1000), env_config=cfg, baselines=False)  # warm-up
    t_coin, res = best_of(lambda: simulate_trading_strategy(signal, md, env_config=cfg, baselines=False), repeats)
    coin_final = float(res.equity_quote[-1])
    out: dict[str, Any] = {
        "bars": n, "signal_compute_s": signal_s, "signal_backtest_s": t_coin,
        "fills": len(res.fills), "coinrl_final_equity": coin_final,
    }
    try:
        import vectorbt as vbt
    except ImportError as e:  # pragma: no cover
        out["vectorbt_error"] = f"vectorbt not installed ({e}); pip install vectorbt"
        return out
    # the decision after bar t's close fills at bar t+1's open
    held = np.r_[0.0, signal[:-1]]
    prev = np.r_[0.0, held[:-1]]
    entries = (held > 0) & (prev == 0)
    exits = (held == 0) & (prev > 0)
    # a tz-naive index of the UTC times: with pandas 3, vectorbt turns a tz-aware index into
    # an array of Timestamp objects on every wrap (~6 s per 1M bars), which is not its engine
    idx = pd.DatetimeIndex(md.ts_ms.astype("datetime64[ms]"))
    close = pd.Series(md.close, index=idx)
    price = pd.Series(md.open, index=idx)
    ent = pd.Series(entries, index=idx)
    ext = pd.Series(exits, index=idx)

    def run_vbt(c: Any = close, p: Any = price, e: Any = ent, x: Any = ext) -> float:
        pf = vbt.Portfolio.from_signals(c, e, x, price=p, fees=fee, slippage=0.0, init_cash=10_000.0,
                                        size=np.inf, freq="1h")
        return float(pf.final_value())

    run_vbt(close.iloc[:1000], price.iloc[:1000], ent.iloc[:1000], ext.iloc[:1000])  # compile
    t_vbt, vbt_final = best_of(run_vbt, repeats)
    out.update({
        "vectorbt_s": t_vbt,
        "vectorbt_final_equity": vbt_final,
        "ratio_vs_vectorbt": t_coin / t_vbt,
        "equity_rel_diff_vs_vectorbt": abs(coin_final - vbt_final) / abs(vbt_final),
        "vectorbt_version": vbt.__version__,
    })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one repeat; the single-account row over 20,000 bars")
    ap.add_argument("--bars", type=int, default=100_000, help="bars of the policy rollout (>= 100,000)")
    ap.add_argument("--signal-bars", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steady on a shared machine)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 3
    folds, seeds = 8, 4  # the same batch in both modes: rollout_bars_per_s stays comparable
    ro = bench_rollout(args.bars, folds, seeds, repeats, 20_000 if args.quick else args.bars)
    sig = bench_signal(args.signal_bars, 5)  # both engines best of 5 (under a second each)
    print(f"machine: {machine()}, torch threads {args.threads}")
    print_table(
        f"Policy rollout: PPO MLP 64x64 over {ro['bars']:,} bars (default costs, window 24)",
        ["path", "accounts", "decisions", "seconds", "bars/s"],
        [
            ["SB3 model.predict per step (20k bars)", 1, "20,000", f"{20_000 / ro['sb3_predict_bars_per_s']:.2f}",
             f"{ro['sb3_predict_bars_per_s']:,.0f}"],
            ["simulate_trading_strategy, one account", 1, f"{ro['single_decisions']:,}", f"{ro['single_s']:.2f}",
             f"{ro['single_bars_per_s']:,.0f}"],
            [f"simulate_many, {folds} folds x {seeds} seeds (stacked nets)", ro["batch_accounts"],
             f"{ro['batch_decisions']:,}", f"{ro['batch_s']:.2f}", f"{ro['rollout_bars_per_s']:,.0f}"],
        ],
    )
    rows = [["coinrl simulate_trading_strategy (books kernel + fills + metrics)",
             f"{sig['signal_backtest_s']:.3f}", f"{sig['coinrl_final_equity']:.10g}"]]
    if "vectorbt_s" in sig:
        rows.append([f"vectorbt {sig['vectorbt_version']} from_signals + final_value",
                     f"{sig['vectorbt_s']:.3f}", f"{sig['vectorbt_final_equity']:.10g}"])
    print_table(
        f"Signal backtest: MA(50/200) crossover over {sig['bars']:,} bars, {sig['fills']:,} fills "
        f"(signal computed once in {sig['signal_compute_s']:.3f} s)",
        ["engine", "seconds", "final equity"], rows,
    )
    if "vectorbt_s" in sig:
        print(f"ratio coinrl/vectorbt = {sig['ratio_vs_vectorbt']:.2f}, final equity rel diff = "
              f"{sig['equity_rel_diff_vs_vectorbt']:.2e}")
    result = {
        "rollout_bars_per_s": round(ro["rollout_bars_per_s"], 1),
        "rollout_single_bars_per_s": round(ro["single_bars_per_s"], 1),
        "sb3_predict_bars_per_s": round(ro["sb3_predict_bars_per_s"], 1),
        "rollout_batch_accounts": ro["batch_accounts"],
        "rollout_bars": ro["bars"],
        "signal_backtest_s": round(sig["signal_backtest_s"], 4),
        "signal_bars": sig["bars"],
        "vectorbt_s": round(sig["vectorbt_s"], 4) if "vectorbt_s" in sig else None,
        "ratio_vs_vectorbt": round(sig["ratio_vs_vectorbt"], 3) if "ratio_vs_vectorbt" in sig else None,
        "equity_rel_diff_vs_vectorbt": sig.get("equity_rel_diff_vs_vectorbt"),
        "quick": args.quick,
    }
    emit_json(result)


if __name__ == "__main__":
    main()
