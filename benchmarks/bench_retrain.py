"""Retraining beside a live session: decision latency idle vs while a challenger trains.

Usage: python benchmarks/bench_retrain.py [--quick] [--bars N] [--steps N]

* **decision latency**: bench_live's decision-to-order-acknowledged latency (the runner against
  the exchange emulator through the real ccxt client, every bar sends an order), measured twice
  on the same machine: idle, then while :func:`~coinrl.live.retrain.retrain_once` runs in a
  background thread of this process (the scheduler's way) with its training in a niced child
  process (``retrain.nice``, default +19; the job's thread is lowered as much). The second run starts once the child is training.
  ``missed_decisions``: bars of the two runs without a journalled decision.
* **retrain**: wall time of that retrain (PPO, the shipped TrainConfig, ``--steps`` env steps on
  a 4,000-bar window of a planted-signal market, 1,000-bar gate) and the gate's verdict;
  ``retrain_overlap``: share of the second latency run during which the training was running.

Target (issue 18): p99 while retraining <= 2x the idle p99, no missed decision.

NOT measured here (yet): the replayed month (retrain every day over the hourly sample with
promotions and rollbacks); ``promotions``/``rollbacks`` count the single retrain above.

Prints a table, then ONE line of JSON with ``decision_p99_ms_idle``,
``decision_p99_ms_retraining``, ``missed_decisions``, ``retrains``, ``promotions``,
``rollbacks`` and extras (p50s, retrain wall time, overlap, verdict, machine).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit_json, machine, print_table  # noqa: E402
from bench_live import _decisions, bench_latency  # noqa: E402

import coinrl.pipeline.exchange_client as exchange_client  # noqa: E402
from coinrl.live.journal import Journal  # noqa: E402
from coinrl.live.retrain_config import RetrainConfig, RetrainOutcome  # noqa: E402
from coinrl.live.retrain_schedule import retrain_job  # noqa: E402

SPEC = {"features": [{"kind": "column", "name": "signal"}]}


def champion(tmp: Path) -> Path:
    """A champion trained briefly (the shipped TrainConfig, 8,192 steps) on a planted market."""
    from coinrl.agents.bundle import save_model
    from coinrl.agents.config import TrainConfig
    from coinrl.agents.train import train_model
    from coinrl.envs.config import EnvConfig
    from coinrl.pipeline.splits import prepare_data_for_model
    from coinrl.pipeline.synthetic import planted_pattern

    frame = planted_pattern(2_000, seed=1, strength=0.5)
    prepared = prepare_data_for_model(frame, spec=SPEC, split={"train": 0.85, "validation": 0.15, "test": 0.0})
    env = EnvConfig(window=1, positions=(-1.0, 0.0, 1.0), allow_short=True, episode_length_bars=256)
    cfg = TrainConfig(seed=0, total_timesteps=8_192, progress_bar=False, torch_threads=1)
    return save_model(train_model(prepared, cfg, env), tmp / "champion")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 bars, 100k training steps")
    ap.add_argument("--bars", type=int, default=None, help="decisions per latency run (default 1000)")
    ap.add_argument("--steps", type=int, default=None, help="env steps of the retrain (default 300k)")
    ap.add_argument("--nice", type=int, default=RetrainConfig().nice, help="retrain.nice (default 19)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    exchange_client.RETRY_INITIAL_S = 0.001
    exchange_client.RETRY_MAX_S = 0.01
    bars = args.bars or (200 if args.quick else 1_000)
    steps = args.steps or (100_000 if args.quick else 300_000)
    from coinrl.pipeline.synthetic import planted_pattern

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "idle").mkdir()
        (tmp / "busy").mkdir()
        idle = bench_latency(bars, tmp / "idle")
        missed = bars - _decisions(tmp / "idle" / "latency.sqlite")
        champ = champion(tmp)
        frame = planted_pattern(6_000, seed=2, strength=0.5)
        cfg = RetrainConfig(window_bars=4_000, gate_bars=1_000, total_timesteps=steps, seed=0, nice=args.nice)
        result: dict[str, Any] = {}

        def retrain() -> None:  # the scheduler's job, in a thread of this process
            with Journal(tmp / "retrain.sqlite", run_id="bench") as j:
                t0 = time.perf_counter()
                result["outcome"] = retrain_job(champ, frame, cfg, tmp / "challengers", j)()
                result["end"] = time.perf_counter()
                result["wall_s"] = result["end"] - t0

        worker = threading.Thread(target=retrain, name="retrain", daemon=True)
        worker.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and worker.is_alive():  # until the child trains
            if any((p / "job.json").is_file() for p in (tmp / "challengers").glob(".staging-*")):
                break
            time.sleep(0.1)
        t_start = time.perf_counter()
        busy = bench_latency(bars, tmp / "busy")
        t_end = time.perf_counter()
        missed += bars - _decisions(tmp / "busy" / "latency.sqlite")
        worker.join()
        outcome: RetrainOutcome | None = result["outcome"]
        if outcome is None:
            raise SystemExit("the retrain failed (its journal row says why); no figures")
        overlap = (min(result["end"], t_end) - t_start) / max(t_end - t_start, 1e-9)
    print(f"machine: {machine()}")
    print_table("decision -> order acknowledged, emulator on 127.0.0.1",
                ["run", "orders", "p50 ms", "p99 ms"],
                [["idle", idle["latency_orders"], f"{idle['latency_ms_p50']:.2f}", f"{idle['latency_ms_p99']:.2f}"],
                 ["retraining", busy["latency_orders"], f"{busy['latency_ms_p50']:.2f}",
                  f"{busy['latency_ms_p99']:.2f}"]])
    print_table("the retrain beside it", ["steps", "wall s", "overlap", "verdict", "p_better"],
                [[steps, f"{result['wall_s']:.1f}", f"{max(0.0, overlap):.2f}", outcome.status,
                  f"{outcome.gate.get('p_better', float('nan')):.3f}"]])
    emit_json({
        "decision_p99_ms_idle": idle["latency_ms_p99"],
        "decision_p99_ms_retraining": busy["latency_ms_p99"],
        "decision_p50_ms_idle": idle["latency_ms_p50"],
        "decision_p50_ms_retraining": busy["latency_ms_p50"],
        "missed_decisions": int(missed),
        "retrains": 1,
        "promotions": int(outcome.promoted),
        "rollbacks": 0,
        "retrain_wall_s": result["wall_s"],
        "retrain_overlap": max(0.0, overlap),
        "retrain_verdict": outcome.status,
        "bars": bars,
        "nice": args.nice,
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
