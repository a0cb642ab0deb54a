"""Tuning throughput and pruning: trials/hour with 1 and 2 worker processes on one PostgreSQL
study, and the share of compute the median pruner saves.

Usage: python benchmarks/bench_tune.py [--quick] [--storage postgresql://...]

Setup: the shipped ``experiments/configs/tune_ppo_btc_1h.yaml`` (packaged hourly BTC/USD sample,
its features, env and PPO settings) with a small per-trial budget (``--quick``: 4,096 env steps
per trial, full: 16,384), 8 envs, rollouts of 512 steps, a validation every quarter of the
budget, one fold, and a bench space (learning rate, gamma, entropy coefficient, window, reward)
whose every combination is feasible. W&B off.

* ``trials_per_hour[k]``: a fresh study on a REAL PostgreSQL server on 127.0.0.1 (the URL in
  ``--storage`` or ``$COINRL_TEST_POSTGRES_URL``, else the script starts one with
  ``.ci/postgres``), no pruning, ``k`` = 1 and 2 worker processes (``n_jobs``), wall time from
  the call to the last trial's end (process start-up included). On a machine with fewer free
  cores than workers the 2-worker figure cannot double.
* ``pruned_fraction``, ``compute_saved_fraction``: a study with the median pruner
  (``pruner_startup_trials=2``, ``pruner_warmup_evals=1``), one worker; compute saved = env steps
  the pruned trials did not train / env steps all complete and pruned trials would have trained
  without pruning.

Prints a table, then ONE line of JSON with ``trials_per_hour`` (per worker count),
``pruned_fraction``, ``compute_saved_fraction`` (and the settings behind them).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402
from _common import emit_json, machine, print_table  # noqa: E402

from coinrl.agents.tune import StudySummary, optimize_parameters, redact_url  # noqa: E402
from coinrl.experiments.config import ExperimentConfig, experiment_config_from  # noqa: E402
from coinrl.pipeline.source import load_candles  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "experiments" / "configs" / "tune_ppo_btc_1h.yaml"

BENCH_SPACE: dict[str, Any] = {
    "train.ppo.learning_rate": {"type": "float", "low": 1.0e-5, "high": 1.0e-2, "log": True},
    "train.ppo.gamma": {"type": "float", "low": 0.8, "high": 0.999},
    "train.ppo.ent_coef": {"type": "float", "low": 1.0e-4, "high": 0.05, "log": True},
    "env.window": {"type": "int", "low": 12, "high": 48, "step": 12},
    "env.reward": {"type": "categorical", "choices": ["log_return", "drawdown_penalised"]},
}


def bench_config(steps: int, **tune: Any) -> ExperimentConfig:
    """The shipped tune config with a bench-sized budget and space."""
    data = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    data["train"].update(
        total_timesteps=steps,
        n_envs=8,
        eval_every_steps=steps // 4,
        early_stopping_patience=None,
        torch_threads=1,
        ppo={"learning_rate": 3e-4, "n_steps": 64, "batch_size": 256, "n_epochs": 2, "gamma": 0.9},
    )
    data["tracking"] = {"mode": "disabled"}
    data["tune"] = {
        "space": BENCH_SPACE,
        "folds": 1,
        "pruner": "none",
        "startup_trials": 4,
        "heartbeat_interval_s": 5,
        "grace_period_s": 30,
        **tune,
    }
    return experiment_config_from(data, source=f"{CONFIG} (bench)")


def postgres_url(cli_url: str | None) -> str:
    """``--storage``, else ``$COINRL_TEST_POSTGRES_URL``, else a server started by .ci/postgres."""
    url = cli_url or os.environ.get("COINRL_TEST_POSTGRES_URL")
    if url:
        return url
    out = subprocess.run(  # noqa: S603
        ["bash", str(REPO / ".ci" / "postgres")], check=True, capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("export COINRL_TEST_POSTGRES_URL="):
            return line.split("=", 1)[1].strip()
    raise SystemExit(f".ci/postgres printed no URL: {out!r}")


def run_study(
    cfg: ExperimentConfig, candles: Any, url: str, n_trials: int, n_jobs: int
) -> tuple[StudySummary, float, float, float]:
    """One fresh study: ``(summary, wall s, mean trial s, s until the first trial started)``."""
    import optuna

    name = f"bench-{uuid.uuid4().hex[:10]}"
    t_start = time.time()
    t0 = time.perf_counter()
    summary = optimize_parameters(
        cfg, candles, storage=url, study_name=name, n_trials=n_trials, n_jobs=n_jobs
    )
    wall = time.perf_counter() - t0
    trials = optuna.load_study(study_name=name, storage=url).trials
    secs = [float(t.user_attrs.get("seconds", 0.0)) for t in trials]
    starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start is not None]
    optuna.delete_study(study_name=name, storage=url)
    first = min(starts) - t_start if starts else float("nan")
    return summary, wall, sum(secs) / max(len(secs), 1), first


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small budgets (a smoke run, noisier)")
    ap.add_argument("--storage", help="PostgreSQL URL (default: $COINRL_TEST_POSTGRES_URL or .ci/postgres)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    steps = 4096 if args.quick else 16_384
    n_tp = 4 if args.quick else 8  # trials per throughput study
    n_prune = 8 if args.quick else 20
    url = postgres_url(args.storage)
    cfg = bench_config(steps)
    candles = load_candles(cfg.data)
    print(f"machine: {machine()}; storage {redact_url(url)}; {len(candles)} candles; "
          f"{steps} env steps per trial")

    rows: list[list[Any]] = []
    trials_per_hour: dict[str, float] = {}
    trial_seconds: dict[str, float] = {}
    startup: dict[str, float] = {}
    for k in (1, 2):
        summary, wall, per_trial, first = run_study(cfg, candles, url, n_tp, k)
        assert summary.n_trials == n_tp, summary  # noqa: S101  (no lost or extra trials)
        tph = n_tp / wall * 3600.0
        trials_per_hour[str(k)] = round(tph, 1)
        trial_seconds[str(k)] = round(per_trial, 2)
        startup[str(k)] = round(first, 2)
        rows.append([f"{k} worker process(es), no pruning", n_tp, f"{wall:.1f}", f"{tph:.0f}",
                     f"{per_trial:.1f}", f"{first:.1f}", summary.workers, "-", "-"])

    pcfg = bench_config(steps, pruner="median", pruner_startup_trials=2, pruner_warmup_evals=1)
    psum, pwall, pper, pfirst = run_study(pcfg, candles, url, n_prune, 1)
    rows.append(["1 worker, median pruner", n_prune, f"{pwall:.1f}",
                 f"{n_prune / pwall * 3600:.0f}", f"{pper:.1f}", f"{pfirst:.1f}", psum.workers,
                 f"{psum.pruned_fraction:.2f}", f"{psum.compute_saved_fraction:.2f}"])
    print_table(
        "Optuna studies on PostgreSQL (PPO, BTC/USD 1h sample, validation split only)",
        ["study", "trials", "wall s", "trials/hour", "s/trial", "s to 1st trial", "workers",
         "pruned", "compute saved"],
        rows,
    )
    print(f"load average (1, 5, 15 min): {os.getloadavg()}; cores: {os.cpu_count()}")
    emit_json({
        "benchmark": "tune",
        "quick": args.quick,
        "machine": machine(),
        "env_steps_per_trial": steps,
        "trials_per_study": n_tp,
        "trials_per_hour": trials_per_hour,
        "speedup_2_workers": round(trials_per_hour["2"] / trials_per_hour["1"], 3),
        "trial_seconds_mean": trial_seconds,
        "seconds_to_first_trial": startup,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "pruning_trials": n_prune,
        "pruned_fraction": round(psum.pruned_fraction, 4),
        "compute_saved_fraction": round(psum.compute_saved_fraction, 4),
        "pruning_states": psum.states,
    })


if __name__ == "__main__":
    main()
