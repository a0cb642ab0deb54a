"""Markets and bundles of the retraining tests: a planted signal whose sign can flip part-way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coinrl.envs.config import EnvConfig
from coinrl.pipeline.synthetic import planted_pattern

SPEC: dict[str, Any] = {"features": [{"kind": "column", "name": "signal"}]}
ENV = EnvConfig(window=1, action="discrete", positions=(-1.0, 0.0, 1.0), allow_short=True,
                episode_length_bars=256)


def train_config(steps: int, seed: int = 0) -> dict[str, Any]:
    """A small PPO (one 16-unit layer), no evaluations or checkpoints."""
    return {
        "total_timesteps": steps, "n_envs": 4, "seed": seed, "net_arch": [16], "torch_threads": 1,
        "ppo": {"n_steps": 128, "batch_size": 256, "n_epochs": 4},
        "eval_every_steps": 0, "checkpoint_every_steps": 0, "early_stopping_patience": None,
        "progress_bar": False,
    }


def market(n_before: int, n_after: int = 0, *, seed: int = 0, strength: float = 0.5) -> pd.DataFrame:
    """``n_before`` bars where ``signal`` predicts the next return, then ``n_after`` bars where
    the observable ``signal`` column is NEGATED (the planted relation flips sign), prices and
    clock continuous."""
    a = planted_pattern(n_before, seed=seed, strength=strength)
    if n_after == 0:
        return a
    tf = int(a["ts_ms"].iloc[1] - a["ts_ms"].iloc[0])
    b = planted_pattern(n_after, seed=seed + 1, strength=strength, s0=float(a["close"].iloc[-1]),
                        start_ts_ms=int(a["ts_ms"].iloc[-1]) + tf)
    b["signal"] = -b["signal"]
    out = pd.concat([a, b], ignore_index=True)
    out.attrs = dict(a.attrs)
    return out


def shuffle_signal(frame: pd.DataFrame, start: int, stop: int, seed: int = 0) -> pd.DataFrame:
    """``frame`` with the ``signal`` column permuted over rows ``[start, stop)`` (the relation
    between what the agent sees and the returns that follow is destroyed there)."""
    out = frame.copy()
    out.attrs = dict(frame.attrs)
    col = out["signal"].to_numpy().copy()
    col[start:stop] = np.random.default_rng(seed).permutation(col[start:stop])
    out["signal"] = col
    return out


def champion_bundle(dest: Path, frame: pd.DataFrame, steps: int, seed: int = 0) -> Path:
    """Train the champion on ``frame`` (85 % train, 15 % validation) and save its bundle."""
    from coinrl.agents.bundle import save_model
    from coinrl.agents.config import TrainConfig
    from coinrl.agents.train import train_model
    from coinrl.pipeline.splits import prepare_data_for_model

    prepared = prepare_data_for_model(frame, spec=SPEC, split={"train": 0.85, "validation": 0.15, "test": 0.0})
    cfg = TrainConfig.model_validate(train_config(steps, seed))
    return save_model(train_model(prepared, cfg, ENV), dest)


def head(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first ``n`` rows, attrs kept."""
    out = frame.iloc[:n].reset_index(drop=True)
    out.attrs = dict(frame.attrs)
    return out


def oracle_bundle(dest: Path, frame: pd.DataFrame, sign: float, train: dict[str, Any] | None = None) -> Path:
    """A bundle whose policy is set by hand: long when ``sign * signal > 0``, short otherwise
    (the best policy of a market whose planted relation has that sign). Its normaliser is
    fitted on ``frame`` like any training run's; only the weights are planted. ``train``: the
    training config it records (a retrain trains that config again), default
    :func:`train_config`."""
    import torch

    from coinrl.agents.bundle import save_model
    from coinrl.agents.config import TrainConfig
    from coinrl.agents.train import train_model, weights_hash
    from coinrl.pipeline.splits import prepare_data_for_model

    prepared = prepare_data_for_model(frame, spec=SPEC, split={"train": 0.85, "validation": 0.15, "test": 0.0})
    cfg = TrainConfig.model_validate(train or train_config(512))
    agent = train_model(prepared, cfg.model_copy(update={"total_timesteps": 512}), ENV)
    policy = agent.model.policy
    with torch.no_grad():
        for p in policy.parameters():
            p.zero_()
        layers = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
        layers[0].weight[0, 0] = 3.0 * sign  # obs[0] is the signal; unit 0 carries its sign
        for layer in layers[1:]:
            layer.weight[0, 0] = 3.0
        policy.action_net.weight[0, 0] = -10.0  # positions (-1, 0, 1): short
        policy.action_net.weight[2, 0] = 10.0  # long
    agent.info["weights_sha256"] = weights_hash(agent.model)
    return save_model(agent, dest)
