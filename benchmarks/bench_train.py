"""Training speed: PPO ``learn()`` FPS on coinrl's batched env beside SB3's CartPole defaults.

Usage: python benchmarks/bench_train.py [--quick]

Measured in one process, on the packaged BTC/USD sample (default features and EnvConfig):

* ``cartpole``: SB3's PPO with all defaults on gymnasium's CartPole-v1 (1 env), the reference.
* ``ppo_fps[n]``: SB3's PPO defaults on coinrl's batched env with ``n_envs`` = 1, 8, 64 and
  ``n_steps = 2048 / n_envs`` (the same 2,048-step rollout, 10 epochs of 64-sample minibatches
  as the reference, so only the env and the batching differ).
* ``default_config``: the shipped ``TrainConfig()`` (64 envs, rollouts of 8,192 steps,
  minibatches of 2,048, 4 epochs, ``torch_threads`` set), learn() only (no validation runs).
* ``--threads N`` sets torch's threads for the SB3-defaults rows (default: torch's own choice,
  one per core); on a shared machine 1 thread gives steadier figures.
* ``env_time_fraction``: share of learn()'s wall time spent inside the VecEnv's reset/step
  calls (a timing wrapper around the SB3 adapter).

Targets: env <= 5 % of PPO wall time at n_envs = 8; default config >= 5x the CartPole FPS.
Prints a table, then ONE line of JSON with ``ppo_fps``, ``default_config_ppo_fps``,
``cartpole_ppo_fps``, ``speedup_vs_cartpole_defaults``, ``env_time_fraction`` (and
``default_config_env_time_fraction``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit_json, machine, print_table  # noqa: E402
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper  # noqa: E402

from coinrl.agents.algos import make_algorithm  # noqa: E402
from coinrl.agents.config import TrainConfig  # noqa: E402
from coinrl.agents.train import make_vec_env, torch_settings  # noqa: E402
from coinrl.envs.config import EnvConfig  # noqa: E402
from coinrl.pipeline.source import load_dataset  # noqa: E402


class TimedVecEnv(VecEnvWrapper):
    """Adds up the wall time spent in the wrapped VecEnv's reset/step calls."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self.seconds = 0.0

    def reset(self) -> Any:
        t0 = time.perf_counter()
        out = self.venv.reset()
        self.seconds += time.perf_counter() - t0
        return out

    def step_async(self, actions: Any) -> None:
        t0 = time.perf_counter()
        self.venv.step_async(actions)
        self.seconds += time.perf_counter() - t0

    def step_wait(self) -> Any:
        t0 = time.perf_counter()
        out = self.venv.step_wait()
        self.seconds += time.perf_counter() - t0
        return out


def _learn(model: Any, steps: int) -> float:
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps, progress_bar=False)
    return time.perf_counter() - t0


def bench_cartpole(steps: int) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env

    env = sb3_make_vec_env("CartPole-v1", n_envs=1, seed=0)
    model = PPO("MlpPolicy", env, seed=0, device="cpu")
    secs = _learn(model, steps)
    return model.num_timesteps / secs


def bench_coinrl_defaults(prepared: Any, n_envs: int, iterations: int) -> tuple[float, float]:
    """SB3 PPO defaults (2,048-step rollouts) on the batched env; (fps, env fraction)."""
    from stable_baselines3 import PPO

    venv = TimedVecEnv(make_vec_env(prepared.train, EnvConfig(), n_envs))
    model = PPO("MlpPolicy", venv, n_steps=2048 // n_envs, seed=0, device="cpu")
    secs = _learn(model, 2048 * iterations)
    return model.num_timesteps / secs, venv.seconds / secs


def bench_default_config(prepared: Any, iterations: int) -> tuple[float, float, TrainConfig]:
    cfg = TrainConfig(seed=0)
    rollout = cfg.ppo.n_steps * cfg.n_envs
    with torch_settings(cfg.torch_threads, cfg.deterministic_torch):
        venv = TimedVecEnv(make_vec_env(prepared.train, EnvConfig(), cfg.n_envs))
        model = make_algorithm(cfg, venv, 0)
        secs = _learn(model, rollout * iterations)
    return model.num_timesteps / secs, venv.seconds / secs, cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run, noisier)")
    ap.add_argument(
        "--threads", type=int, default=0,
        help="torch threads for the SB3-defaults rows (0: torch's default, as SB3 users get it)",
    )
    args = ap.parse_args()
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    iters = 1 if args.quick else 3
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {machine()}, load average {load:.2f}, "
        f"torch threads {torch.get_num_threads()} (SB3-defaults rows)"
    )
    prepared = load_dataset()

    # the reference is measured three times (start, middle, end; the machine may be shared)
    # and the BEST is kept, so the speed-up below is a conservative figure
    cart_steps = 2048 * (1 if args.quick else 2)
    bench_cartpole(256)  # warm-up: torch and SB3 first-call costs
    cart_runs = [bench_cartpole(cart_steps)]
    rows: list[list[Any]] = []
    ppo_fps: dict[str, float] = {}
    env_frac: dict[str, float] = {}
    for n in (1, 8, 64):
        fps, frac = bench_coinrl_defaults(prepared, n, iters)
        ppo_fps[str(n)] = round(fps)
        env_frac[str(n)] = round(frac, 4)
        rows.append(["coinrl env, SB3 PPO defaults", n, f"{2048 // n}x{n}", f"{fps:,.0f}", f"{frac:.1%}", ""])
    cart_runs.append(bench_cartpole(cart_steps))
    dfps, dfrac, cfg = bench_default_config(prepared, 2 if args.quick else 6)
    cart_runs.append(bench_cartpole(cart_steps))
    cart_fps = max(cart_runs)
    rows.insert(0, [
        "CartPole-v1, SB3 PPO defaults", 1, "2048x1",
        f"{cart_fps:,.0f} (best of {'/'.join(f'{c:,.0f}' for c in cart_runs)})", "-", "1.0x",
    ])
    rows.append([
        "coinrl env, default TrainConfig", cfg.n_envs, f"{cfg.ppo.n_steps}x{cfg.n_envs}",
        f"{dfps:,.0f}", f"{dfrac:.1%}", "",
    ])
    for r in rows[1:]:
        r[5] = f"{float(r[3].replace(',', '')) / cart_fps:.1f}x"
    print_table(
        "PPO learn() throughput (env steps per second, end to end)",
        ["setup", "n_envs", "rollout", "fps", "env time", "vs CartPole"],
        rows,
    )
    print(
        f"targets: env time <= 5% at n_envs=8 (got {env_frac['8']:.1%}); "
        f"default config >= 5x CartPole (got {dfps / cart_fps:.1f}x). default config: "
        f"batch {cfg.ppo.batch_size}, {cfg.ppo.n_epochs} epochs, torch_threads {cfg.torch_threads}"
    )
    emit_json({
        "cartpole_ppo_fps_runs": [round(c) for c in cart_runs],
        "ppo_fps": ppo_fps,
        "default_config_ppo_fps": round(dfps),
        "cartpole_ppo_fps": round(cart_fps),
        "speedup_vs_cartpole_defaults": round(dfps / cart_fps, 2),
        "env_time_fraction": env_frac,
        "default_config_env_time_fraction": round(dfrac, 4),
    })


if __name__ == "__main__":
    main()
