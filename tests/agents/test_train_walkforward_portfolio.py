"""walk_forward_portfolio: a fresh agent per fold and seed, backtested on its fold's test rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from coinrl.agents.config import TrainConfig
from coinrl.agents.walkforward_portfolio import walk_forward_portfolio
from coinrl.envs.config import PortfolioEnvConfig
from coinrl.pipeline.errors import ConfigError


@pytest.mark.slow
def test_every_fold_and_seed_trains_and_is_judged_on_its_own_test_rows(shared_data: Path) -> None:
    data = {
        "sources": [str(shared_data / f"{s}_BTC-5m.feather") for s in ("ADA", "ETH")],
        "features": {"features": [{"kind": "returns", "horizons": [1, 6]}]},
        "split": {"train": 0.6, "validation": 0.2, "test": 0.2, "embargo_bars": 8, "walk_forward_folds": 2},
    }
    train = TrainConfig.model_validate({
        "total_timesteps": 512, "n_envs": 4, "ppo": {"n_steps": 64, "batch_size": 128, "n_epochs": 1},
        "eval_every_steps": 256, "checkpoint_every_steps": 0, "progress_bar": False,
    })
    seen = []
    res = walk_forward_portfolio(data, train, PortfolioEnvConfig(window=6, episode_length_bars=128),
                                 seeds=(0, 1), n_random=2, progress=lambda *a: seen.append(a))
    assert len(res.results) == 2
    assert all(len(row) == 2 for row in res.results)
    assert seen[-1] == ("train", 4, 4)
    folds = res.meta["folds"]
    assert folds[0]["test_end_ts_ms"] < folds[1]["test_start_ts_ms"]  # disjoint, in time order
    for f in folds:
        assert f["train_rows"][1] <= f["validation_rows"][0] <= f["test_rows"][0]
    assert res.metric_matrix("total_return").shape == (2, 2)
    s = res.summary["agent"]["total_return"]
    assert s["ci_low"] <= s["mean"] <= s["ci_high"]
    assert {"cash", "crp_daily"} <= set(res.summary)
    assert res.summary["cash"]["total_return"]["mean"] == 0.0
    assert all(0.0 <= v <= 1.0 for v in res.beats.values())
    assert np.isfinite(res.metric_matrix("fees_frac")).all()
    json.dumps(res.to_dict(), allow_nan=False)


def test_a_portfolio_walk_forward_needs_folds() -> None:
    with pytest.raises(ConfigError, match="walk_forward_folds"):
        walk_forward_portfolio({"sources": ["x.csv"]}, TrainConfig(), None)
